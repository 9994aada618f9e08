"""Ray tests share one local Ray instance (2 CPUs), started once per session through ptsq's own Cluster.

Tests that must own their instance (shutdown on success, error and Ctrl-C; two nodes) run the CLI or a
script in a child process with its own ``RAY_TMPDIR``, so every process that instance starts can be
found afterwards by that variable in its environment, renamed Ray workers included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, write_photos
from tests.models import SmallNet, randomize_bn

CLASSES = 10  # SmallNet's default, so the CLI can build it from its spec


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    pytest.importorskip("ray")
    from ptsq.distributed.cluster import Cluster

    # the tests package travels to the workers: fan-out jobs defined in tests/ are imported there
    with Cluster("auto", num_cpus=2, ship=[ROOT / "tests"]) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos in CLASSES class folders (labels unrelated to content: non-trivial top-1) and one broken file."""
    root = tmp_path_factory.mktemp("labelled")
    for c in range(CLASSES):
        write_photos(root / f"class_{c}", 3, size=(40, 36), seed=c)
    (root / "class_1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.fixture(scope="session")
def small_files(tmp_path_factory: pytest.TempPathFactory, labelled: Path) -> dict[str, Path]:
    """SmallNet weights (random, non-trivial BatchNorm) and its int8 artifact quantized on the photos."""
    import ptsq
    from ptsq.data.images import CalibrationImages

    d = tmp_path_factory.mktemp("small")
    torch.manual_seed(0)
    model = randomize_bn(SmallNet(num_classes=CLASSES))
    weights = d / "small.pth"
    torch.save(model.state_dict(), weights)
    pre = ptsq.preset("unit", size=(32, 32))
    calib = CalibrationImages(labelled, pre, num=16, batch_size=8)
    qm = ptsq.quantize(model, calib, config=ptsq.QuantConfig(speed_guard=0), progress=False, preprocess=pre)
    return {"weights": weights, "artifact": qm.save(d / "small_int8.pt"), "model": model}


def spec(path: Path, name: str) -> str:
    return f"{path}:{name}"


def cli_env(ray_tmp: Path | None = None) -> dict[str, str]:
    """The environment for a ptsq child process: this checkout first, Ray's files under ``ray_tmp``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "PTSQ_DEBUG": ""}
    if ray_tmp is not None:
        env["RAY_TMPDIR"] = str(ray_tmp)
    return env


def short_tmp() -> Path:
    """Ray's socket paths must stay under ~107 bytes: a short folder in /tmp, not pytest's deep one."""
    return Path(tempfile.mkdtemp(prefix="ptsq-r", dir="/tmp"))


def processes_with_env(key: str, value: str) -> list[int]:
    """Live processes whose environment holds key=value (every process a Ray instance started inherits it)."""
    needle = f"{key}={value}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                status = (proc / "status").read_text()
                if "\nState:\tZ" not in status:  # zombies hold no resources and vanish with their parent
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def run_ptsq(*args: object, ray_tmp: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptsq.cli.main", *map(str, args)],
        capture_output=True, text=True, env=cli_env(ray_tmp), timeout=timeout, cwd=ROOT,
    )  # fmt: skip

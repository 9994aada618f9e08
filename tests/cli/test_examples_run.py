"""The help and README examples that can run on test assets do run, verbatim, in a folder laid out as they
expect (slow: real torchvision architectures at 224x224).

The folder holds test photos under every folder name the examples use, random-weight state_dicts for every
``torchvision:NAME --weights FILE`` pair, and a link to this repository's ``examples`` package (specs import
from the current folder first). Quantize examples run first, so the info/bench/eval examples find the
artifacts they name. An example is left out when it names something the folder cannot hold (a user's own
package such as ``mypkg``, a placeholder such as ``MODEL``, an artifact no example writes) or is too slow
for a test (``--engine auto``, accuracy budgets, per-layer ``analyze``); the test prints what it ran.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cli.example_lines import ROOT, Example, doc_examples, help_examples, positional_values
from tests.conftest import write_photos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]  # ~20 min on a loaded 2-core machine

INPUTS = ("--weights", "-w", "--calib", "-c", "--data", "-d", "--eval-data", "--train-data", "--config", "--class-map")
OUTPUTS = ("-o", "--output", "--plot", "--report", "--save-config")
TOO_SLOW = ("--max-drop", "--min-agreement", "--min-sqnr")
FOLDERS = ("images", "photos", "faces", "calib", "unlabelled")


def _runnable_spec(token: str, sandbox: Path) -> bool:
    if token.startswith("torchvision:"):
        return importlib.util.find_spec("torchvision") is not None
    if (sandbox / token).exists():
        return True
    module, sep, _ = token.rpartition(":")
    if not sep or "/" in module or module.endswith(".py"):
        return False
    top = module.split(".")[0]
    return (sandbox / top).exists() and importlib.util.find_spec(module) is not None


def _reads(option: str, value: str) -> bool:
    """Whether ``option value`` names an input file or folder (any option but an output that takes a path)."""
    looks_like_path = "/" in value or Path(value).suffix in (".pt", ".pth", ".json", ".yaml", ".yml", ".txt", ".npy")
    return option in INPUTS or (option.startswith("-") and option not in OUTPUTS and looks_like_path)


def _why_not(argv: list[str], sandbox: Path) -> str | None:
    """None when ``ptsq <argv>`` can run in ``sandbox``, else the reason it is left out."""
    if any(a in TOO_SLOW for a in argv) or "auto" in argv or argv[0] == "analyze":
        return "too slow for a test"
    missing = [s for s in positional_values(argv) if not _runnable_spec(s, sandbox)]
    missing += [v for a, v in itertools.pairwise(argv) if _reads(a, v) and not (sandbox / v).exists()]
    return f"needs {', '.join(missing)}" if missing else None


def _prepare(sandbox: Path, examples: list[Example]) -> None:
    for name in FOLDERS:
        write_photos(sandbox / name, 8)
    photo = next((sandbox / "images").iterdir())
    for label in range(1000):  # ImageNet's layout: one folder per class of a torchvision classifier
        (sandbox / "val" / f"n{label:08d}").mkdir(parents=True)
        (sandbox / "val" / f"n{label:08d}" / photo.name).symlink_to(photo)
    (sandbox / "examples").symlink_to(ROOT / "examples")
    import torchvision

    for ex in examples:
        for argv in ex.commands():
            arch = next((a.split(":", 1)[1] for a in argv if a.startswith("torchvision:")), None)
            weights = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--weights", "-w")), None)
            if arch and weights and not (sandbox / weights).exists():
                torch.manual_seed(0)
                torch.save(torchvision.models.get_model(arch).state_dict(), sandbox / weights)


def test_examples_that_can_run_here_do_run(tmp_path):
    pytest.importorskip("torchvision")
    script = Path(sys.executable).with_name("ptsq")
    if not script.exists():
        pytest.skip("the ptsq console script is not installed next to this Python")
    examples = help_examples() + doc_examples()
    _prepare(tmp_path, examples)
    commands = [(ex, argv) for ex in examples for argv in ex.commands()]
    commands.sort(key=lambda c: c[1][0] != "quantize")  # artifacts first
    env = {**os.environ, "PYTHONPATH": str(Path(__import__("ptsq").__file__).resolve().parents[1]),
           "TORCH_CPP_LOG_LEVEL": "ERROR"}  # fmt: skip
    ran, left_out, done = [], [], set()
    for ex, argv in commands:
        if tuple(argv) in done:
            continue
        done.add(tuple(argv))
        why = _why_not(argv, tmp_path)
        if why:
            left_out.append(f"{ex.source}: ptsq {' '.join(argv)} ({why})")
            continue
        for i, a in enumerate(argv[:-1]):  # several examples write one name (mnv2.pt): each runs as if first
            if a in ("-o", "--output") and (tmp_path / argv[i + 1]).is_file():
                (tmp_path / argv[i + 1]).unlink()
        res = subprocess.run([str(script), *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=1800)  # fmt: skip
        assert res.returncode == 0, f"{ex.source}: ptsq {' '.join(argv)}\n{res.stderr[-2000:]}"
        ran.append(f"{ex.source}: ptsq {' '.join(argv)}")
    print("ran:", *ran, "left out:", *left_out, sep="\n  ")
    assert len(ran) >= 6, ran  # quantize (fx, onnx, openvino), info, bench, eval at least

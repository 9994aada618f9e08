"""ptsq as a user installs it: build the wheel, pip-install it into a fresh virtualenv, use it from elsewhere.

The fresh venv gets torch from this environment instead of installing it again (torch 2.14.1 with its CUDA
libraries is ~5 GB and minutes to install): a ``.pth`` file puts a folder on its path that links only torch
and the packages torch itself requires. Everything else ptsq needs (numpy, pillow, rich, typer and their
dependencies) pip installs from the wheel's metadata, so a dependency missing from pyproject.toml fails here.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = {"vision", "engines", "plot", "nlp"}  # documented in the README's extras table

MODEL = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        return self.body(x)
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # build, venv, pip install


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _closure(name: str) -> list[metadata.Distribution]:
    """``name`` and every distribution it requires here (markers evaluated, extras not followed)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                try:
                    metadata.distribution(req.name)
                except metadata.PackageNotFoundError:
                    continue  # optional on this platform
                todo.append(req.name)
    return list(seen.values())


def _link_torch(folder: Path) -> None:
    """A folder holding links to torch and its requirements only (packages, modules and their metadata)."""
    folder.mkdir()
    for dist in _closure("torch"):
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (folder / top).exists() and top != "__pycache__":
                (folder / top).symlink_to(src)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources, so the checkout gets no build/ or egg-info folders."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src_copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(src)], work, dict(os.environ))
    (whl,) = (work / "dist").glob("ptsq-*.whl")
    return whl


def test_wheel_holds_every_file_the_package_needs_and_complete_metadata(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_string(zf.read(meta_name).decode())
        entry = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    package = ROOT / "src" / "ptsq"
    wanted = {f"ptsq/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip
    assert wanted - names == set(), "files of src/ptsq missing from the wheel (declare them as package data)"
    assert "ptsq/py.typed" in names
    assert "ptsq = ptsq.cli.main:main" in entry
    assert EXTRAS <= set(meta.get_all("Provides-Extra") or [])
    assert {"torch", "numpy", "pillow", "rich", "typer"} <= {Requirement(r).name.lower() for r in meta.get_all(
        "Requires-Dist") if "extra ==" not in r}  # fmt: skip
    assert meta.get_all("Classifier") and meta.get("Keywords") and meta.get_all("Project-URL")
    assert meta.get("License-Expression") == "Apache-2.0" and meta.get("Requires-Python")


def test_installed_wheel_quantizes_and_loads_outside_the_repository(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, dict(os.environ))
    py, bindir = venv / "bin" / "python", venv / "bin"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                     dict(os.environ)).stdout.strip())  # fmt: skip
    _link_torch(tmp_path / "torch_only")
    (site / "torch_only.pth").write_text(str(tmp_path / "torch_only") + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", TORCH_CPP_LOG_LEVEL="ERROR")
    _run([str(py), "-m", "pip", "install", "-q", str(wheel)], tmp_path, env)

    user = tmp_path / "elsewhere"  # a user's folder: no repository, no tests package
    (user / "photos").mkdir(parents=True)
    (user / "mynet.py").write_text(MODEL)
    _run([str(py), "-c", "import numpy as np; from PIL import Image\n"
          "for i in range(8): Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8))"
          ".save(f'photos/p{i}.png')"], user, env)  # fmt: skip
    assert "quantize" in _run([str(bindir / "ptsq"), "--help"], user, env).stdout
    # a tiny net without an input spec: --preset names its preprocessing, and installing is the point, not speed
    _run([str(bindir / "ptsq"), "quantize", "mynet.py:Net", "--calib", "photos", "--input-size", "32", "--num-calib",
          "8", "--batch-size", "4", "--preset", "imagenet", "--speed-guard", "0", "--allow-slower", "-o", "net.pt",
          "-q"], user, env)  # fmt: skip
    assert "fx" in _run([str(bindir / "ptsq"), "info", "net.pt"], user, env).stdout
    out = _run([str(py), "-c", "import torch, ptsq\n"
                "m = ptsq.load('net.pt')\n"
                "print(ptsq.__file__)\n"
                "print(tuple(m(torch.randn(2, 3, 32, 32)).shape))"], user, env).stdout.split("\n")  # fmt: skip
    assert Path(out[0]).resolve().is_relative_to(venv.resolve()), out[0]  # the installed copy, not the checkout
    assert out[1] == "(2, 5)"
    assert sysconfig.get_paths()["purelib"] != str(site)

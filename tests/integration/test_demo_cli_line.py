"""The CLI line ``make demo`` prints runs verbatim from the repository root, through the console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ptsq

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(ptsq.__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]


def test_the_demo_cli_line_runs_as_printed(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite_pytorch")
    from examples import demo
    from examples.reference import imagenet

    if not Path(sys.executable).with_name("ptsq").exists():
        pytest.skip("the ptsq console script is not installed next to this Python")
    calib = tmp_path / "calib_photos"
    imagenet.write_calibration_photos(calib, n=16, seed=0)
    art = tmp_path / "efficientnet_lite0_int8.pt"
    demo.print_cli_line(calib, art)  # what the demo prints at its end, for these folders
    printed = capsys.readouterr().out
    (line,) = [ln.strip() for ln in printed.splitlines() if ln.strip().startswith("ptsq ")]
    # as a user's shell runs it: the console script on PATH, the repository root as the working folder and
    # not on the import path (python -m would add it; the console script does not)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(SRC), "TORCH_CPP_LOG_LEVEL": "ERROR"}  # fmt: skip
    res = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
    assert res.returncode == 0, f"{line}\n{res.stderr[-3000:]}"
    assert ptsq.load(art).manifest["model"]["spec"] == demo.MODEL_SPEC
    assert "int8" in res.stdout and art.name in res.stdout  # the bench table names the artifact

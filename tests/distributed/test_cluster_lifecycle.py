"""--ray bad input is one line and exit 2; a local instance is shut down on success, error and Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import assert_clean_error, run_cli
from tests.distributed.conftest import ROOT, cli_env, processes_with_env, run_ptsq, short_tmp, spec

MODELS = ROOT / "tests" / "models.py"
PRE = ("--preset", "unit", "--input-size", "32")


def test_ray_missing_extra_is_one_line(monkeypatch, labelled):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed: import ray fails
    res = run_cli("eval", spec(MODELS, "SmallNet"), "--data", labelled, *PRE, "--ray", "auto")
    assert_clean_error(res, "needs Ray, which is not installed")
    assert "pip install 'ptsq[ray]'" in res.stderr


def test_unreachable_address_is_one_line(labelled):
    pytest.importorskip("ray")
    t0 = time.perf_counter()
    res = run_cli("eval", spec(MODELS, "SmallNet"), "--data", labelled, *PRE, "--ray", "127.0.0.1:1")
    assert_clean_error(res, "cannot reach a Ray cluster at 127.0.0.1:1")
    assert "ray start --head" in res.stderr
    assert time.perf_counter() - t0 < 120  # not Ray's own minutes of retries (a bound, not a timing)


def _assert_no_ray_left(ray_tmp: Path) -> None:
    deadline = time.monotonic() + 30  # processes get a moment to exit after the driver returns
    while processes_with_env("RAY_TMPDIR", str(ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_with_env("RAY_TMPDIR", str(ray_tmp)) == []


@pytest.mark.slow
def test_local_instance_shut_down_on_success_and_on_error(labelled, small_files):
    pytest.importorskip("ray")
    ray_tmp = short_tmp()
    ok = run_ptsq("eval", spec(MODELS, "SmallNet"), small_files["artifact"], "--weights", small_files["weights"],
                  "--data", labelled, *PRE, "--ray", "auto", "--json", ray_tmp=ray_tmp)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.strip() == ""  # Ray's own notices stay out of ptsq's output
    _assert_no_ray_left(ray_tmp)
    # the model rejects 1-channel input: the error is raised on a worker and reported as one line
    bad = run_ptsq("eval", spec(MODELS, "SmallNet"), "--data", labelled, *PRE, "--channels", "gray",
                   "--ray", "auto", ray_tmp=ray_tmp)  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    lines = bad.stderr.splitlines()  # exactly ptsq's two lines: nothing from Ray's C++ core or its loggers
    assert len(lines) == 2 and lines[1].startswith("hint: "), bad.stderr
    assert lines[0].startswith("error: ") and "rejects inputs of shape" in lines[0] and "1, 32, 32)" in lines[0]
    _assert_no_ray_left(ray_tmp)


SLOW_NET = """
import time
from tests.models import SmallNet


class Net(SmallNet):
    def forward(self, x):
        time.sleep(0.5)
        return super().forward(x)
"""


@pytest.mark.slow
@pytest.mark.parametrize("when", ["starting", "evaluating"])
def test_local_instance_shut_down_on_ctrl_c(labelled, tmp_path, when):
    pytest.importorskip("ray")
    (tmp_path / "slow_net.py").write_text(SLOW_NET)
    ray_tmp = short_tmp()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptsq.cli.main", "eval", spec(tmp_path / "slow_net.py", "Net"), "--data",
         str(labelled), *PRE, "--batch-size", "1", "--ray", "auto", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(ray_tmp), cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            # the driver, then gcs and raylet, then workers: interrupt while Ray starts, or once it runs
            if len(processes_with_env("RAY_TMPDIR", str(ray_tmp))) >= (2 if when == "starting" else 4):
                break
            time.sleep(0.2)
        if when == "evaluating":
            time.sleep(8)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err  # not a crash on exit
    assert err.splitlines() == [
        "error: interrupted; nothing was written",
        "hint: run the command again; no partial output was left behind",
    ]
    _assert_no_ray_left(ray_tmp)

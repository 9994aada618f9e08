"""Distributed evaluation gives exactly the single-process figures: API, CLI, a killed worker, two nodes."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.cli.conftest import assert_clean_error, run_cli
from tests.distributed.conftest import ROOT, short_tmp, spec

MODELS = ROOT / "tests" / "models.py"
PRE = ("--preset", "unit", "--input-size", "32")


def _evaluate(files: dict, data: Path, **kw: object) -> dict:
    import ptsq

    art = ptsq.load(files["artifact"])
    res = ptsq.evaluate([files["model"], art], data, names=["fp32", "int8"], batch_size=5, **kw)
    return res.to_dict()


def test_eval_on_ray_equals_single_process(ray_cluster, labelled, small_files):
    one = _evaluate(small_files, labelled)
    many = _evaluate(small_files, labelled, ray=ray_cluster, workers=2)
    assert many == one  # counts, skipped file, top-1/top-5, agreement, KL, SQNR, cosine: all exact
    assert one["data"]["images"] == 30 and one["data"]["skipped"] == 1
    fid = one["models"][1]["fidelity"]
    assert 0 < one["models"][0]["top1"] < 1 and fid["kl"] > 0 and fid["sqnr_db"] < 100  # figures that can move


@pytest.mark.slow
def test_cli_eval_on_ray_equals_single_process(ray_cluster, labelled, small_files):
    base = (spec(MODELS, "SmallNet"), small_files["artifact"], "--data", labelled, *PRE, "--json")
    args = (*base, "--weights", small_files["weights"], "--batch-size", "4")
    one = run_cli("eval", *args)
    address = ray_cluster.ray.get_runtime_context().gcs_address
    many = run_cli("eval", *args, "--ray", address, "--workers", "2")
    assert one.code == 0 and many.code == 0, many.stderr
    assert json.loads(many.stdout) == json.loads(one.stdout)


KILLER = """
import os, signal
from pathlib import Path
from tests.models import SmallNet

MARKER = Path({marker!r})


class Net(SmallNet):
    calls = 0

    def forward(self, x):
        type(self).calls += 1
        if type(self).calls == 3 and not MARKER.exists():  # once per run: the 3rd batch of one worker
            MARKER.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)
"""


@pytest.mark.slow
def test_killed_worker_is_retried_and_nothing_counted_twice(ray_cluster, labelled, small_files, tmp_path):
    import torch

    marker = tmp_path / "killed"
    (tmp_path / "killer.py").write_text(textwrap.dedent(KILLER.format(marker=str(marker))))
    from ptsq.models import load_model

    model = load_model(spec(tmp_path / "killer.py", "Net"), weights=str(small_files["weights"])).model
    files = {**small_files, "model": model}
    many = _evaluate(files, labelled, ray=ray_cluster, workers=2)
    pid = int(marker.read_text())  # a worker really died mid-run, SIGKILLed
    assert pid != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    torch.manual_seed(0)
    one = _evaluate(files, labelled)  # the marker exists now: nothing is killed in this process
    assert many == one
    assert many["data"]["images"] == 30


NEEDS_DEP = """
import driver_only_dep
from tests.models import SmallNet


class Net(SmallNet):
    def forward(self, x):
        return driver_only_dep.scale(super().forward(x))
"""


@pytest.mark.slow
def test_worker_that_cannot_import_model_code_is_one_line(ray_cluster, labelled, small_files, tmp_path, monkeypatch):
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "driver_only_dep.py").write_text("def scale(y):\n    return y * 2\n")
    (tmp_path / "needs_dep.py").write_text(NEEDS_DEP)
    monkeypatch.syspath_prepend(str(deps))  # importable here, on the driver only
    address = ray_cluster.ray.get_runtime_context().gcs_address
    res = run_cli("eval", spec(tmp_path / "needs_dep.py", "Net"), "--weights", small_files["weights"],
                  "--data", labelled, *PRE, "--ray", address, "--json")  # fmt: skip
    assert_clean_error(res, "Ray worker cannot load", "driver_only_dep")


TWO_NODES = """
import json, sys
import ray
from ray.cluster_utils import Cluster
import ptsq

# two raylets on this machine, one CPU each: the two evaluation actors must land on different nodes
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
try:
    art = ptsq.load(sys.argv[2])
    from ptsq.models import load_model
    fp32 = load_model(sys.argv[3] + ":SmallNet", weights=sys.argv[4]).model
    from ptsq.distributed.cluster import Cluster as PtsqCluster
    with PtsqCluster(cluster.address, workers=2) as c:
        nodes = (c.nodes(), c.cpus())
        res = ptsq.evaluate([fp32, art], sys.argv[1], names=["fp32", "int8"], batch_size=5, ray=c)
    print(json.dumps({"nodes": nodes, "result": res.to_dict()}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.slow
def test_two_node_cluster_on_this_machine(labelled, small_files, tmp_path):
    import subprocess
    import sys

    from tests.distributed.conftest import cli_env, processes_with_env

    script = tmp_path / "two_nodes.py"
    script.write_text(TWO_NODES)
    ray_tmp = short_tmp()
    out = subprocess.run(
        [sys.executable, str(script), str(labelled), str(small_files["artifact"]), str(MODELS),
         str(small_files["weights"])],
        capture_output=True, text=True, env=cli_env(ray_tmp), timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["nodes"] == [2, 2]
    assert got["result"] == _evaluate(small_files, labelled)
    assert processes_with_env("RAY_TMPDIR", str(ray_tmp)) == []


def test_cli_eval_ray_smoke_needs_nothing_running():
    """--workers without --ray, and --workers 0: refused before anything starts."""
    res = run_cli("eval", "torchvision:resnet18", "--data", ".", "--workers", "2")
    assert_clean_error(res, "--workers needs --ray")
    res = run_cli("eval", "torchvision:resnet18", "--data", ".", "--ray", "auto", "--workers", "0")
    assert_clean_error(res, "--workers 0")

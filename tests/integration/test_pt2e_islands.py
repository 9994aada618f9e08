"""PT2E fp32 islands: a submodule torch.export cannot capture runs as TorchScript inside the .pt2, the rest is int8.

Fast tier: the program runs eagerly (``pt2e.compile=False``; the fresh process sets ``PTSQ_PT2E_EAGER``).
The compiled load (AOTInductor calling the island's op) is in the slow tier.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import ptsq
from ptsq.config import Pt2eOptions, QuantConfig, SpeedOptions
from ptsq.errors import ArtifactError, TraceError
from ptsq.manifest_file import plain_loader
from tests.models import BranchNumpy, DataDependent, RepeatedConv, RootUntraceable, Sandwich

SRC = Path(__file__).resolve().parents[2] / "src"
# no speed check: it records the machine's load, and two runs must give the same bytes
CONFIG = QuantConfig(engine="pt2e", speed_guard=0, speed=SpeedOptions(check=False), pt2e=Pt2eOptions(compile=False))
BLOCKS = {"tensor control flow": (DataDependent, "x.mean() > 0"), "data-dependent loop": (RepeatedConv, "range(int(")}


def _signed_batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Batches shifted up or down: the block's input mean takes both signs (both branches are calibrated)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 12, 12, generator=g) + (1.5 if i % 2 else -1.5) for i in range(n)]


def _sandwich(block: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model = Sandwich(block).eval()
    model.relu = nn.Identity()  # the block sees conv1's raw output, of either sign
    return model


@pytest.fixture(scope="module")
def island_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = _sandwich(DataDependent())
    qm = ptsq.quantize(model, _signed_batches(6), config=CONFIG, progress=False)
    path = tmp_path_factory.mktemp("island") / "sandwich_int8.pt2"
    qm.save(path)
    return model, path


@pytest.mark.parametrize("case", list(BLOCKS))
def test_what_export_cannot_capture_stays_fp32_inside_the_program_and_the_rest_is_int8(case):
    block, line = BLOCKS[case]
    model = _sandwich(block())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qm = ptsq.quantize(model, _signed_batches(6), config=CONFIG, progress=False)
    prec = qm.precision
    assert prec["block"]["precision"] == "fp32" and prec["block"]["op"] == block.__name__, prec
    reason = prec["block"]["reason"]
    assert reason.startswith("torch.export cannot capture it:") and line in reason and "models.py:" in reason, reason
    for name in ("conv1", "conv2", "fc"):
        assert prec[name]["precision"] == "int8", (name, prec)
    assert any(line in n and "'block'" in n for n in qm.manifest["notes"]), qm.manifest["notes"]
    assert qm.fidelity["sqnr_db"] > 15
    assert isinstance(model.block, block)  # the user's model is never modified
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _run_fresh(code: str, cwd: Path, **env: str) -> dict:
    """``code`` in a new interpreter that can import ptsq but not the tests' model code."""
    environ = {**os.environ, "PYTHONPATH": str(SRC), **env}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


LOAD_AND_RUN = """
import json, sys, torch, ptsq
from ptsq.fidelity import sqnr_db
try:
    import tests.models
    sys.exit("the model's code is importable here")
except ImportError:
    pass
m = ptsq.load("sandwich_int8.pt2")
case = torch.load("case.pt")
with torch.inference_mode():
    ys = [m(x) for x in case["inputs"]]
print(json.dumps({
    "right": [sqnr_db(r, y) for r, y in zip(case["right"], ys)],
    "wrong": [sqnr_db(w, y) for w, y in zip(case["wrong"], ys)],
    "route": getattr(m.module, "route", None),
}))
"""


def _branch_case(model: nn.Module, folder: Path) -> None:
    """Inputs whose block input has a positive and a negative mean, their fp32 outputs and the outputs the
    other branch would give."""
    means: list[float] = []
    hook = model.block.register_forward_hook(lambda _m, a, _o: means.append(float(a[0].mean())))
    inputs = [x[:2] for x in _signed_batches(2, seed=7)]
    with torch.no_grad():
        right = [model(x) for x in inputs]
    hook.remove()
    assert means[0] * means[1] < 0, means  # one input per branch

    def other_branch(x: torch.Tensor) -> torch.Tensor:
        y = model.conv1(x)
        return model.fc(model.conv2(y if y.mean() > 0 else y * 0.5).mean((2, 3)))

    with torch.no_grad():
        wrong = [other_branch(x) for x in inputs]
    torch.save({"inputs": inputs, "right": right, "wrong": wrong}, folder / "case.pt")


def test_island_program_takes_both_branches_in_a_fresh_process_without_the_models_code(island_artifact):
    model, path = island_artifact
    _branch_case(model, path.parent)
    out = _run_fresh(LOAD_AND_RUN, path.parent, PTSQ_PT2E_EAGER="1")
    for right, wrong in zip(out["right"], out["wrong"]):
        assert right > 15 and right > wrong + 10, out  # each input took its own branch, not the other one


def test_saving_the_same_island_model_twice_gives_the_same_bytes(island_artifact, tmp_path):
    model, path = island_artifact
    qm = ptsq.quantize(model, _signed_batches(6), config=CONFIG, progress=False)
    again = tmp_path / "again.pt2"
    qm.save(again)
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(again) as b:
        islands = [n for n in a.namelist() if "/ptsq_islands/" in n]
        assert len(islands) == 1 and a.read(islands[0]) == b.read(islands[0])
        manifest = json.loads(a.read(next(n for n in a.namelist() if n.endswith("ptsq_manifest.json"))))
    (entry,) = manifest["fp32_islands"]
    assert entry["modules"] == ["block"] and entry["class"] == "DataDependent" and len(entry["sha256"]) == 64
    assert "ptsq.load" in plain_loader(manifest)  # its island ops are registered by ptsq
    assert path.read_bytes() == again.read_bytes()


def test_tampered_island_is_refused_in_one_line(island_artifact, tmp_path):
    _model, path = island_artifact
    bad = tmp_path / "tampered.pt2"
    out = io.BytesIO()
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if "/ptsq_islands/" in info.filename:
                data = data.replace(b"0.5", b"0.7") if b"0.5" in data else data + b"\0"
            zout.writestr(info, data)
    bad.write_bytes(out.getvalue())
    with pytest.raises(ArtifactError) as info:
        ptsq.load(bad)
    assert "fp32 islands" in str(info.value) and "modified" in str(info.value)
    assert "\n" not in info.value.message


def test_no_island_for_what_torchscript_cannot_script_or_the_top_level_forward():
    with pytest.raises(TraceError) as info:
        ptsq.quantize(Sandwich(BranchNumpy()).eval(), _signed_batches(2), config=CONFIG, progress=False)
    text = info.value.message
    assert "\n" not in text and "x.mean() > 0" in text and "models.py" in text, text  # the export reason
    assert "'block' (BranchNumpy)" in text and "TorchScript cannot script it" in text, text  # and the script one
    with pytest.raises(TraceError) as info:
        calib = [torch.randn(2, 3, 10, 10) for _ in range(2)]
        ptsq.quantize(RootUntraceable().eval(), calib, config=CONFIG, progress=False)
    assert "y.sum() > 0" in info.value.message and "\n" not in info.value.message


def _halve_if_positive(x: torch.Tensor) -> torch.Tensor:
    if x.mean() > 0:  # export cannot capture this branch; TorchScript scripts this helper with its caller
        return x * 0.5
    return x


class _Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _halve_if_positive(x) + 1


class _TwoGates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.first = _Gate()
        self.inner = nn.Sequential(nn.ReLU(), _Gate())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.first(self.conv(x))).mean((2, 3))


def test_every_instance_of_the_submodule_whose_forward_calls_the_failing_helper_becomes_an_island():
    from ptsq.engines.pt2e.islands import IslandCall, capture_with_islands

    model = _TwoGates().eval()
    work = copy.deepcopy(model)
    ep, _mode, islands = capture_with_islands(work, (torch.randn(2, 3, 8, 8),))
    assert sorted(n for i in islands for n in i.modules) == ["first", "inner.1"]
    assert all(i.cls == "_Gate" and "_halve_if_positive" not in i.reason for i in islands)
    assert all("x.mean() > 0" in i.reason for i in islands)
    assert isinstance(work.first, IslandCall) and isinstance(model.first, _Gate)
    for x in (torch.randn(3, 3, 10, 10) + 2, torch.randn(3, 3, 10, 10) - 2):  # another batch and image size
        assert torch.allclose(ep.module()(x), model(x), atol=1e-5)


@pytest.mark.slow
def test_compiled_island_program_loads_in_a_fresh_process(island_artifact, tmp_path):
    model, path = island_artifact
    _branch_case(model, path.parent)
    out = _run_fresh(LOAD_AND_RUN, path.parent, PTSQ_CACHE_DIR=str(tmp_path / "cache"), PTSQ_PT2E_EAGER="0")
    assert out["route"] and "Python wrapper" not in out["route"], out  # AOTInductor calls the island's op
    for right, wrong in zip(out["right"], out["wrong"]):
        assert right > 15 and right > wrong + 10, out

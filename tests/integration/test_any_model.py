"""Issue 15's reproductions: no ptsq step turns a model plain torch.ao FX quantizes into a failure.

Each test is one reproduction (R1-R7 and the PT2E precision map) and fails on the code before the fix.
The pattern corpus (tests/patterns) covers the same ground more broadly; these pin the exact cases.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ptsq
from ptsq.algorithms.keep_float import KeepFloat
from ptsq.artifact import state_hash
from ptsq.calibration import as_args, example_from_batch
from ptsq.config import Pt2eOptions, QuantConfig
from ptsq.fidelity import flatten_outputs, sqnr_db

pytestmark = pytest.mark.usefixtures("one_thread")
EXACT = QuantConfig(speed_guard=0, speed={"check": False})  # capture and fidelity here; speed has its own tests


def _quantize_save_reload(model: nn.Module, calib: list, tmp_path, config: QuantConfig = EXACT):  # type: ignore[no-untyped-def]
    before = state_hash(model)
    qm = ptsq.quantize(model, calib, config=config, progress=False)
    art = ptsq.load(qm.save(tmp_path / "m.pt"))
    args = as_args(calib[-1], model)
    with torch.inference_mode():
        got, loaded = qm(*args), art(*args)
    assert all(torch.equal(a, b) for a, b in zip(flatten_outputs(got), flatten_outputs(loaded)))
    assert state_hash(model) == before  # the input model is never modified
    return qm, got


def _sqnr(model: nn.Module, got, args) -> float:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        ref = model(*args)
    flat = [torch.cat([t.flatten() for t in flatten_outputs(o)]) for o in (ref, got)]
    return sqnr_db(*flat)


# ----------------------------------------------------------------------------------------------- R1
class _Lin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.randn(5, 5)
        self.b = torch.zeros(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w, self.b)


class _ConvAttr(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.randn(4, 3, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w)


class _Mods(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mods1 = _Lin()
        self.scale = torch.rand(5) + 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mods1(x) * self.mods1.b.add(self.scale)  # the holder's bias is read by another op too


@pytest.mark.parametrize(
    "build,shape",
    [(lambda: nn.Sequential(_Lin()), (8, 5)), (lambda: nn.Sequential(_ConvAttr()), (4, 3, 8, 8)), (_Mods, (8, 5))],
    ids=["linear", "conv", "holder-read-twice"],
)
def test_r1_functional_layers_on_tensor_attributes(build, shape, tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)  # the weights too: built here, not at collection
    model = build()
    calib = [torch.randn(*shape) for _ in range(8)]
    qm, got = _quantize_save_reload(model.eval(), calib, tmp_path)
    assert _sqnr(model, got, (calib[-1],)) > 20, _sqnr(model, got, (calib[-1],))
    assert "int8" in {r["precision"] for r in qm.manifest["precision"]}


# ----------------------------------------------------------------------------------------------- R2
class _ChunkBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(self.conv(x), 2)
        return a + b


@pytest.mark.torch_ao  # the FX engine's R1-R7 repairs
def test_r2_batches_are_taken_as_given(tmp_path) -> None:
    torch.manual_seed(0)
    model = _ChunkBatch().eval()
    calib = [torch.randn(4, 2, 8, 8) for _ in range(6)]
    qm, got = _quantize_save_reload(model, calib, tmp_path)
    assert qm.manifest["input"]["shapes"] == [[4, 2, 8, 8]]  # the whole first batch is the example
    assert any("whole first batch" in n for n in qm.manifest["notes"])
    assert _sqnr(model, got, (calib[-1],)) > 20, _sqnr(model, got, (calib[-1],))
    qm2 = ptsq.quantize(model, calib, example_inputs=(calib[0][:2],), config=EXACT, progress=False)
    assert qm2.manifest["input"]["shapes"] == [[2, 2, 8, 8]]  # explicit example inputs win


def test_a_model_that_accepts_one_sample_gets_a_one_sample_example() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    example, note = example_from_batch(model, (torch.randn(5, 3, 8, 8),))
    assert example[0].shape[0] == 1 and note is None


# ----------------------------------------------------------------------------------------------- R3
class _Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(10, 12, mode="sum")
        self.fc = nn.Linear(12, 4)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bag(indices, offsets))


def test_r3_two_integer_tensors_are_inputs_not_labels(tmp_path) -> None:
    torch.manual_seed(0)
    model = _Bag().eval()
    calib = [(torch.randint(0, 10, (12,)), torch.tensor([0, 3, 7, 9])) for _ in range(8)]
    _, got = _quantize_save_reload(model, calib, tmp_path)
    assert got.shape == (4, 4) and _sqnr(model, got, calib[-1]) > 20


def test_labels_are_dropped_only_for_labels() -> None:
    one_input = nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    assert as_args((x, y), one_input) == (x,)  # a labelled DataLoader fed to a one-input forward
    assert len(as_args((x, y), _Bag())) == 2  # two inputs, whatever their dtype
    assert len(as_args((x, y))) == 2  # no model, no guessing
    assert as_args(((x, x), y), _Bag(), labelled=True) == (x, x)  # said explicitly


def test_explicit_labelled_option_reaches_calibration(tmp_path) -> None:
    torch.manual_seed(0)
    model = _Bag().eval()
    inputs = (torch.randint(0, 10, (12,)), torch.tensor([0, 3, 7, 9]))
    calib = [(inputs, torch.tensor([1, 0, 1, 1])) for _ in range(6)]
    qm = ptsq.quantize(model, calib, config=EXACT, progress=False, labelled=True)
    assert qm(*inputs).shape == (4, 4)


# ----------------------------------------------------------------------------------------------- R4
class _MeanAfterPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.act = nn.Hardtanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean(self.act(self.pool(self.conv(x))))


@pytest.mark.torch_ao  # the FX engine's R1-R7 repairs
def test_r4_an_op_whose_int8_kernel_fails_stays_fp32_and_names_the_line(tmp_path) -> None:
    torch.manual_seed(0)
    model = _MeanAfterPool().eval()
    qm, _ = _quantize_save_reload(model, [torch.randn(4, 3, 8, 8) for _ in range(8)], tmp_path)
    row = qm.precision["mean"]
    assert row["precision"] == "fp32" and "channels_last" in row["reason"]
    assert "test_any_model.py" in row["reason"]  # the user's line
    assert qm.precision["conv"]["precision"] == "int8"


# ----------------------------------------------------------------------------------------------- R5
class _Elu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.conv(x), True)


@pytest.mark.torch_ao  # the FX engine's R1-R7 repairs
def test_r5_a_model_that_quantized_also_saves(tmp_path) -> None:
    torch.manual_seed(0)
    qm, _ = _quantize_save_reload(_Elu().eval(), [torch.randn(4, 3, 8, 8) for _ in range(6)], tmp_path)
    assert qm.result.details["torchscript"] == "script"  # tracing cannot match quantized::elu(bool alpha)
    assert ptsq.load(tmp_path / "m.pt").manifest["save"]["torchscript"] == "script"


# ----------------------------------------------------------------------------------------------- R6
class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        y = self.conv(x)
        return {"foo": [y]}, [{"foo": [[y]]}]


def test_r6_nested_outputs_keep_their_structure(tmp_path) -> None:
    torch.manual_seed(0)
    model = _Nested().eval()
    calib = [torch.randn(4, 3, 8, 8) for _ in range(6)]
    _quantize_save_reload(model, calib, tmp_path)
    out = ptsq.load(tmp_path / "m.pt")(calib[0])
    assert isinstance(out[0]["foo"][0], torch.Tensor) and isinstance(out[1][0]["foo"][0][0], torch.Tensor)


# ----------------------------------------------------------------------------------------------- R7
class _ViewArith(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x)
        return q.view(q.size()[:-1] + (4, 16))  # noqa: RUF005 (the construct under test)


@pytest.mark.torch_ao  # the FX engine's R1-R7 repairs
def test_r7_size_arithmetic_after_a_linear(tmp_path) -> None:
    torch.manual_seed(0)
    model = _ViewArith().eval()
    calib = [torch.randn(2, 5, 64) for _ in range(6)]
    qm, got = _quantize_save_reload(model, calib, tmp_path)
    assert got.shape == (2, 5, 4, 16) and qm.precision["q"]["precision"] == "int8"
    assert any("shape computation" in n for n in qm.manifest["notes"])


class _TwoFailures(nn.Module):
    """Two ops whose int8 kernels fail only when they run: found one rehearsal at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = _MeanAfterPool(), _MeanAfterPool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) - self.b(x) * 0.5


@pytest.mark.torch_ao  # the FX engine's R1-R7 repairs
def test_recovery_keeps_each_failing_op_fp32_in_turn(tmp_path) -> None:
    torch.manual_seed(0)
    qm, _ = _quantize_save_reload(_TwoFailures().eval(), [torch.randn(4, 3, 8, 8) for _ in range(6)], tmp_path)
    kept = [n for n, r in qm.precision.items() if "failed here" in r.get("reason", "")]
    assert len(kept) == 2 and qm.precision["a.conv"]["precision"] == qm.precision["b.conv"]["precision"] == "int8"


# ------------------------------------------------------------------------------------ ptsq's own steps
class _InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        out.mul_(0.5)  # result unused: FX's dead-code elimination drops it
        return out + x


def test_in_place_ops_with_unused_results_survive(tmp_path) -> None:
    torch.manual_seed(0)
    model = _InPlace().eval()
    calib = [torch.randn(4, 4, 8, 8) for _ in range(6)]
    _, got = _quantize_save_reload(model, calib, tmp_path)
    assert _sqnr(model, got, (calib[-1],)) > 20  # the plain recipe gives ~0 dB here


@pytest.mark.torch_ao  # the FX engine's R1-R7 repairs
def test_a_clean_up_step_that_breaks_the_model_is_left_out(monkeypatch) -> None:
    from ptsq.algorithms import cleanup as fx_cleanup

    def broken(gm):  # type: ignore[no-untyped-def]
        for node in gm.graph.nodes:
            if node.op == "call_module":
                node.target = "no_such_layer"
        return 1

    monkeypatch.setattr(fx_cleanup, "_fold_pads", broken)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    qm = ptsq.quantize(model, [torch.randn(4, 3, 8, 8) for _ in range(6)], config=EXACT, progress=False)
    assert any("'fold-pad' left out" in n for n in qm.manifest["notes"])
    assert any("BatchNorms folded" in n for n in qm.manifest["notes"])  # the other steps still ran
    assert qm.fidelity["sqnr_db"] > 20


def test_keep_float_copies_as_itself() -> None:
    from torch import fx

    g = fx.Graph()
    g.output(g.call_function(torch.relu, (g.placeholder("x"),)))
    wrapped = KeepFloat(fx.GraphModule(nn.Module(), g), "why")
    assert type(copy.deepcopy(wrapped)) is KeepFloat  # not the inner module's __deepcopy__


# ---------------------------------------------------------------------------------------- PT2E map
def test_pt2e_precision_map_lists_transposed_convs(monkeypatch) -> None:
    pytest.importorskip("torchao")
    monkeypatch.setenv("PTSQ_PT2E_EAGER", "1")
    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose1d(4, 8, 3), nn.BatchNorm1d(8), nn.ReLU()).eval()
    cfg = QuantConfig(engine="pt2e", speed_guard=0, pt2e=Pt2eOptions(compile=False))
    qm = ptsq.quantize(model, [torch.randn(4, 4, 16) for _ in range(6)], config=cfg, progress=False)
    assert qm.precision["0"]["op"] == "ConvTranspose1d"  # it was missing: only the ReLU was listed

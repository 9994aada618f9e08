"""Dynamic quantization and QAT through the Python API, on tiny real models."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import ptsq
import ptsq.qat
from ptsq.config import QuantConfig
from ptsq.errors import ConfigError, QuantizationError
from ptsq.modes.advice import advise, profile
from tests.models import SmallNet
from tests.models_seq import ConvOnly, DigitNet, SeqGRU, SeqLSTM, TokenMLP, digits


def _checks(example: tuple[torch.Tensor, ...], n: int = 3) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(example[0].shape, generator=g),) for _ in range(n)]


def _reload_in_fresh_process(path, x: torch.Tensor, tmp_path) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Load the artifact where the model code is not importable; return its output on ``x``."""
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch, ptsq; assert 'tests' not in sys.modules; "
        f"m = ptsq.load({str(path)!r}); "
        f"torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r}); print(m.manifest['mode'])"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return torch.load(tmp_path / "y.pt"), r.stdout.strip()


@pytest.mark.torch_ao  # inspects the FX path's FullRangeLinear modules (PT2E dynamic: test_pt2e.py)
def test_dynamic_linear_int8_weights_fidelity_and_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = TokenMLP().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex = model.example_inputs()
    qm = ptsq.quantize_dynamic(
        model, example_inputs=ex, check_inputs=_checks(ex), config=QuantConfig(dynamic={"min_cosine": 0.99})
    )
    packed = [m for m in qm.module.modules() if type(m).__name__ == "FullRangeLinear"]
    assert packed and all(m.weight().dtype == torch.qint8 for m in packed)
    assert qm.fidelity["cosine_mean"] >= 0.99 and qm.fidelity["passed"]
    assert {r["precision"] for r in qm.manifest["precision"]} <= {"int8", "fp32"}
    assert qm.precision["up"]["precision"] == "int8"
    assert qm.manifest["mode"] == "dynamic" and qm.manifest["config"]["mode"] == "dynamic"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input model untouched
    path = qm.save(tmp_path / "mlp.pt")
    x = torch.randn(3, 16, 32)
    y, mode = _reload_in_fresh_process(path, x, tmp_path)
    assert mode == "dynamic"
    torch.testing.assert_close(y, qm(x), rtol=1e-4, atol=1e-4)
    ref = model(x)
    assert nn.functional.cosine_similarity(y, ref, dim=1).min() > 0.95


@pytest.mark.torch_ao  # LSTM/GRU dynamic int8 is torch.ao's eager module swap (PT2E keeps them fp32)
@pytest.mark.parametrize("cls, qtype", [(SeqLSTM, "LSTM"), (SeqGRU, "GRU")])
def test_dynamic_rnn(cls, qtype, tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = cls().eval()
    ex = model.example_inputs()
    qm = ptsq.quantize_dynamic(
        model, example_inputs=ex, check_inputs=_checks(ex), config=QuantConfig(dynamic={"min_cosine": 0})
    )
    rnn = qm.module.lstm
    assert type(rnn).__module__.startswith("torch.ao.nn.quantized.dynamic") and type(rnn).__name__ == qtype
    assert qm.precision["lstm"]["precision"] == "int8"
    assert qm.fidelity["cosine_mean"] > 0.98
    path = qm.save(tmp_path / "rnn.pt")
    x = torch.randn(2, 20, 16)
    with torch.inference_mode():  # fresh-process reload: test_dynamic_linear_int8_weights_fidelity_and_reload
        y = ptsq.load(path)(x)
    torch.testing.assert_close(y, qm(x), rtol=1e-4, atol=1e-4)


@pytest.mark.torch_ao  # dynamic accuracy control re-swaps torch.ao modules
def test_dynamic_budget_puts_worst_layers_back_and_skip_rules() -> None:
    torch.manual_seed(0)
    model = TokenMLP().eval()
    ex = model.example_inputs()
    strict = ptsq.quantize_dynamic(
        model,
        example_inputs=ex,
        check_inputs=_checks(ex),
        config=QuantConfig(dynamic={"min_cosine": 1.0}),  # unreachable: layers must go back
    )
    fp32 = [n for n, r in strict.precision.items() if r["precision"] == "fp32" and r["op"] == "Linear"]
    assert fp32 and "sensitivity" in strict.manifest["details"]
    assert all("kept in fp32" in strict.precision[n]["reason"] for n in fp32)
    skipped = ptsq.quantize_dynamic(
        model, example_inputs=ex, config=QuantConfig(skip=("name:head",), dynamic={"min_cosine": 0})
    )
    assert skipped.precision["head"]["precision"] == "fp32"
    assert isinstance(skipped.module.head, nn.Linear)
    with pytest.raises(ConfigError, match="matches no layer"):
        ptsq.quantize_dynamic(model, example_inputs=ex, config=QuantConfig(skip=("name:nope",)))


def test_dynamic_refuses_models_without_supported_layers() -> None:
    with pytest.raises(QuantizationError, match="no supported layer") as info:
        ptsq.quantize_dynamic(ConvOnly(), example_inputs=(torch.randn(1, 3, 8, 8),))
    assert "--mode static" in info.value.hint


def test_advice_names_the_better_mode() -> None:
    mlp = TokenMLP()
    assert "--mode dynamic" in (advise(mlp, mlp.example_inputs(), "static") or "")
    assert advise(mlp, mlp.example_inputs(), "dynamic") is None
    conv = SmallNet()
    x = (torch.randn(1, 3, 32, 32),)
    assert "--mode static" in (advise(conv, x, "dynamic") or "")
    assert advise(conv, x, "static") is None
    lstm = SeqLSTM()
    prof = profile(lstm, lstm.example_inputs())
    assert prof.macs["rnn"] > prof.macs["linear"] > 0 and prof.macs["conv"] == 0


def _train_fp32(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 150) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.mark.slow  # the fast tier covers prepare -> fine-tune -> convert through the CLI (test_modes_cli)
def test_qat_prepare_train_convert_on_real_digits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ptsq.config import QatOptions
    from ptsq.modes.qat import finetune

    torch.manual_seed(0)
    x, y = digits(3, 40)
    model = _train_fp32(DigitNet(), x, y)
    with torch.inference_mode():
        acc_fp32 = float((model(x).argmax(1) == y).float().mean())
    assert acc_fp32 > 0.9
    prepared = ptsq.qat.prepare(model, (x[:1],))
    fq = [m for m in prepared.modules() if "FakeQuantize" in type(m).__name__]
    assert fq, "fake quantization inserted"
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    data = [(x[perm[p : p + 20]], y[perm[p : p + 20]]) for p in range(0, 120, 20)]
    hist = finetune(prepared, data, QatOptions(epochs=2, lr=0.01), progress=False)
    assert hist["steps"] == 12 and len(hist["epochs"]) == 2
    assert all(int(m.observer_enabled[0]) == 0 for m in fq if hasattr(m, "observer_enabled"))  # frozen at 60%
    qm = ptsq.qat.convert(prepared, check_inputs=[(x,)])
    assert qm.manifest["mode"] == "qat"
    assert any(r["precision"] == "int8" and "Conv" in r["op"] for r in qm.manifest["precision"])
    with torch.inference_mode():
        acc_int8 = float((qm(x).argmax(1) == y).float().mean())
    assert acc_int8 >= acc_fp32 - 0.1
    path = qm.save(tmp_path / "qat.pt")
    out, mode = _reload_in_fresh_process(path, x[:5], tmp_path)
    assert mode == "qat"
    torch.testing.assert_close(out, qm(x[:5]), rtol=1e-4, atol=1e-4)


def test_qat_freeze_helpers_stop_updates() -> None:
    torch.manual_seed(0)
    x, y = digits(3, 10)
    prepared = ptsq.qat.prepare(DigitNet(), (x[:1],))
    prepared(x)  # observers see data once, then freeze
    ptsq.qat.freeze_bn(prepared)
    ptsq.qat.freeze_observers(prepared)
    bn = {k: v.clone() for k, v in prepared.state_dict().items() if "running_mean" in k}
    scales = {k: v.clone() for k, v in prepared.state_dict().items() if k.endswith("scale")}
    assert bn and scales
    prepared.train()
    nn.functional.cross_entropy(prepared(x * 2), y).backward()  # wider inputs would move unfrozen ranges
    after = prepared.state_dict()
    assert all(torch.equal(after[k], v) for k, v in bn.items())
    assert all(torch.equal(after[k], v) for k, v in scales.items())
    with pytest.raises(ConfigError):
        ptsq.qat.Schedule(0)
    with pytest.raises(ConfigError, match="prepare"):
        ptsq.qat.convert(DigitNet())  # type: ignore[arg-type]


@pytest.mark.torch_ao  # inspects torch.ao's fake-quantize modules
def test_qat_calibrate_sets_ranges_in_eval_mode_without_touching_bn() -> None:
    torch.manual_seed(0)
    x, y = digits(3, 40)
    model = _train_fp32(DigitNet(), x, y)
    prepared = ptsq.qat.prepare(model, (x[:1],))
    bn = {k: v.clone() for k, v in prepared.state_dict().items() if "running_" in k}
    assert bn
    assert ptsq.qat.calibrate(prepared, [(x, y)]) == 1  # (inputs, labels) batches: labels ignored
    assert prepared.training  # mode restored for the training that follows
    after = prepared.state_dict()
    assert all(torch.equal(after[k], v) for k, v in bn.items())  # eval mode: BN used, not re-estimated
    first = next(m for m in prepared.modules() if hasattr(m, "activation_post_process"))
    obs = first.activation_post_process
    assert float(obs.min_val) == pytest.approx(float(x.min())) and float(obs.max_val) == pytest.approx(float(x.max()))
    ptsq.qat.freeze_observers(prepared)
    with torch.inference_mode():
        agree = float((prepared.eval()(x).argmax(1) == model(x).argmax(1)).float().mean())
    assert agree >= 0.9  # calibrated, untrained QAT model is already the PTQ model
    with pytest.raises(ConfigError, match="no batches"):
        ptsq.qat.calibrate(prepared, [])

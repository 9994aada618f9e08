"""The pt2e and onnx engines (and --engine auto) end to end through the API, against FX and fp32.

The fast tier runs PT2E without inductor (``pt2e.compile=False`` at quantize time, ``PTSQ_PT2E_EAGER=1``
when a fresh process loads the artifact); the compile-heavy paths are marked ``slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import ptsq
from ptsq.config import QuantConfig
from ptsq.errors import ConfigError, TraceError
from tests.models import FaceNet, RootUntraceable, SmallNet, randomize_bn

EAGER = {"compile": False}


def _batches(shape, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def _config(engine: str, **options) -> QuantConfig:
    """``onnx_format="qoperator"`` style keywords set ``onnx.format``."""
    dotted = {k.replace("_", ".", 1): v for k, v in options.items()}
    return QuantConfig(engine=engine, speed_guard=0, pt2e=EAGER).replace(**dotted)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)  # 128 samples: the self-check holds back the 32 a verdict needs
    return randomize_bn(SmallNet()), _batches((8, 3, 32, 32), n=16)


@pytest.fixture(scope="module")
def small_fx(small):
    """The FX engine's result to compare with; None where torch.ao.quantization is gone."""
    from ptsq import legacy

    model, calib = small
    return ptsq.quantize(model, calib, config=_config("fx"), progress=False) if legacy.available() else None


def _load_in_fresh_process(path: Path, x: torch.Tensor, tmp_path: Path) -> torch.Tensor:
    """Load the artifact in a new interpreter that never imports the model's code; return its output."""
    xin, yout = tmp_path / "x.pt", tmp_path / "y.pt"
    torch.save(x, xin)
    code = textwrap.dedent(f"""
        import sys, torch, ptsq
        m = ptsq.load({str(path)!r})
        assert "tests.models" not in sys.modules
        torch.save(m(torch.load({str(xin)!r})), {str(yout)!r})
        print(m.manifest["engine"])
    """)
    env = {**os.environ, "PTSQ_PT2E_EAGER": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return torch.load(yout)


@pytest.mark.parametrize("engine", ["pt2e", "onnx"])
def test_engine_quantizes_and_reloads_without_model_code(engine, small, small_fx, tmp_path):
    model, calib = small
    qm = ptsq.quantize(model, calib, config=_config(engine), progress=False)
    s = qm.summary()
    assert s["engine"] == engine
    assert s["layers"]["int8"] >= 4, qm.manifest["precision"]
    # every conv and the linear layer run in int8
    int8 = {n for n, p in qm.precision.items() if p["precision"] == "int8"}
    assert {"features.0", "features.3", "features.6", "fc"} <= {n.split("#")[0] for n in int8} or engine == "onnx"
    fx_db = small_fx.fidelity["sqnr_db"] if small_fx is not None else 35.0
    assert qm.fidelity["passed"] and qm.fidelity["sqnr_db"] > min(fx_db - 15.0, 20.0), (qm.fidelity["sqnr_db"], fx_db)

    path = qm.save(tmp_path / f"small.{engine}")
    art = ptsq.load(path)
    assert art.manifest["engine"] == engine and art.manifest["details"] == qm.manifest["details"]
    if engine == "onnx":  # the pt2e artifact compiles on its first call: see the slow tests
        x = calib[-1][:3]
        torch.testing.assert_close(art(x), qm(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["pt2e", "onnx"])
def test_artifact_runs_in_a_fresh_process_without_model_code(engine, small, tmp_path):
    model, calib = small
    qm = ptsq.quantize(model, calib, config=_config(engine), progress=False)
    path = qm.save(tmp_path / f"small.{engine}")
    x = calib[-1][:3]
    with torch.inference_mode():
        want = qm(x)
    got = _load_in_fresh_process(path, x, tmp_path)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_onnx_engine_records_its_recipe_and_runs_qoperator(small, tmp_path):
    model, calib = small
    qm = ptsq.quantize(
        model,
        calib,
        config=_config("onnx", onnx_format="qoperator", onnx_calibration="percentile", onnx_weights="int8"),
        progress=False,
    )
    d = qm.manifest["details"]
    assert d["format"] == "qoperator" and d["calibration_method"] == "percentile"
    assert d["activations"] == "uint8" and d["weights"] == "int8 per-channel"
    assert qm.summary()["layers"]["int8"] >= 4 and qm.fidelity["passed"]
    # threads follow torch at call time unless fixed on the module
    mod = ptsq.load(qm.save(tmp_path / "q.onnx")).module
    mod.threads = 1
    mod(calib[0])
    assert mod.session().get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("engine", ["pt2e", "onnx"])
def test_prelu_model_is_faithful(engine):
    model = randomize_bn(FaceNet())
    calib = _batches((8, 3, 24, 24), n=8)
    qm = ptsq.quantize(model, calib, config=_config(engine), progress=False)
    assert qm.fidelity["sqnr_db"] > 25.0, qm.fidelity
    prec = qm.precision
    weighted = [p for p in prec.values() if p["op"] in ("Conv2d", "Linear", "Conv", "Gemm", "MatMul")]
    assert len(weighted) == 4 and all(p["precision"] == "int8" for p in weighted), prec
    # neither engine has a PReLU int8 kernel to get wrong: PReLU stays fp32 with a reason
    prelus = [p for p in prec.values() if p["op"] in ("PReLU", "PRelu")]
    assert prelus and all(p["precision"] == "fp32" and p["reason"] for p in prelus)


def test_skip_rules_keep_layers_fp32_in_every_engine(small):
    model, calib = small
    for engine in ("pt2e", "onnx"):
        cfg = QuantConfig(engine=engine, speed_guard=0, skip=("name:fc",), pt2e=EAGER)
        prec = ptsq.quantize(model, calib, config=cfg, progress=False).precision
        fc = [p for n, p in prec.items() if n.split("#")[0] == "fc" or "linear" in n]
        assert fc and all(p["precision"] == "fp32" for p in fc), (engine, prec)
        with pytest.raises(ConfigError, match="matches no layer"):
            ptsq.quantize(model, calib, config=QuantConfig(engine=engine, skip=("name:nope",)), progress=False)


def test_auto_picks_a_faithful_engine_and_reports_the_table(small):
    model, calib = small
    cfg = QuantConfig(engine="auto", speed_guard=0, auto={"engines": ["fx", "onnx"], "runs": 5})
    qm = ptsq.quantize(model, calib, config=cfg, progress=False)
    table = qm.summary()["auto"]
    assert {r["engine"] for r in table["engines"]} == {"fx", "onnx"}
    chosen = [r for r in table["engines"] if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["engine"] == qm.manifest["engine"] == table["chosen"]
    assert chosen[0]["status"] == "passed"
    timed = [r for r in table["engines"] if r["status"] == "passed"]
    assert chosen[0]["median_ms"] == min(r["median_ms"] for r in timed)
    assert qm.manifest["auto"] == table


def test_torch_export_failure_names_the_problem_and_suggests_fx():
    calib = _batches((2, 3, 8, 8), n=3)
    with pytest.raises(TraceError) as ei:
        ptsq.quantize(RootUntraceable(), calib, config=QuantConfig(engine="pt2e"), progress=False)
    assert "torch.export cannot capture" in ei.value.message and "y.sum() > 0" in ei.value.message
    assert "strict and non-strict tried" in ei.value.message  # what ptsq did before giving up
    from ptsq import legacy

    assert ("--engine fx" if legacy.available() else "torch.cond") in ei.value.hint


@pytest.mark.torch_ao  # the FX engine's trace error
def test_fx_trace_failure_suggests_pt2e():
    calib = _batches((2, 3, 8, 8), n=3)
    with pytest.raises(TraceError) as ei:
        ptsq.quantize(RootUntraceable(), calib, config=QuantConfig(engine="fx", strict=True), progress=False)
    assert "--engine pt2e" in ei.value.hint


@torch.library.custom_op("ptsqtest::wobble", mutates_args=())
def _wobble(x: torch.Tensor) -> torch.Tensor:
    return x * 1.5


@_wobble.register_fake
def _(x):
    return torch.empty_like(x)


class CustomOpNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.ops.ptsqtest.wobble(self.conv(x))


def test_onnx_export_failure_names_the_operator():
    calib = _batches((2, 3, 8, 8), n=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TraceError) as ei:
            ptsq.quantize(CustomOpNet(), calib, config=QuantConfig(engine="onnx"), progress=False)
    assert "ptsqtest" in ei.value.message and "wobble" in ei.value.message, ei.value.message
    assert "\n" not in ei.value.message


def test_bad_engine_options_are_named(small):
    model, calib = small
    with pytest.raises(ConfigError, match=r"onnx\.calibration"):
        ptsq.quantize(model, calib, config=QuantConfig(engine="onnx", onnx={"calibration": "magic"}))
    with pytest.raises(ConfigError, match="engine 'tensorrt' is unknown"):
        QuantConfig(engine="tensorrt")


@pytest.mark.parametrize(("choice", "quant_max"), [("on", 127), ("off", 255)])
def test_pt2e_reduce_range_sets_the_activation_range(small, choice, quant_max):
    # without VNNI the compiled u8 x s8 kernels saturate on 8-bit activations (Lite0: 7.0 dB vs 16.0 dB)
    model, calib = small
    qm = ptsq.quantize(model, calib, config=_config("pt2e", pt2e_reduce_range=choice), progress=False)
    assert qm.manifest["details"]["reduce_range"] is (choice == "on")
    maxima = {
        n.args[4]
        for n in qm.module.graph.nodes
        if n.op == "call_function" and "quantize_per_tensor" in str(n.target) and len(n.args) > 4
    }
    assert maxima == {quant_max}, maxima


@pytest.mark.parametrize("weights", ["int8", "uint8"])
def test_onnx_weight_type_is_recorded_and_faithful(small, weights):
    import onnx

    model, calib = small
    qm = ptsq.quantize(model, calib, config=_config("onnx", onnx_weights=weights), progress=False)
    assert qm.manifest["details"]["weights"] == f"{weights} per-channel"
    graph = onnx.load_model_from_string(qm.module.model_bytes).graph
    zp_types = {i.data_type for i in graph.initializer if i.name.endswith("_zero_point") and len(i.dims) == 1}
    u8, s8 = onnx.TensorProto.UINT8, onnx.TensorProto.INT8  # per-channel weight zero points (biases: int32)
    assert zp_types & {u8, s8} == ({u8} if weights == "uint8" else {s8}), zp_types
    assert qm.fidelity["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["pt2e"])
def test_pt2e_compiled_with_inductor_is_faithful_and_timed(engine, small, small_fx, tmp_path):
    model, calib = small
    qm = ptsq.quantize(model, calib, config=QuantConfig(engine=engine, speed_guard=0), progress=False)
    assert qm.summary()["compile_seconds"] > 0
    assert small_fx is None or qm.fidelity["sqnr_db"] > small_fx.fidelity["sqnr_db"] - 10.0
    art = ptsq.load(qm.save(tmp_path / "small.pt2"))
    x = calib[-1][:1]
    with torch.inference_mode():
        ref = model(x)
        got = art(x)
    assert art.module.compile_seconds is not None
    assert ptsq.fidelity.sqnr_db(ref, got) > 20.0


def test_pt2e_bias_correction_removes_the_output_mean_shift_of_int8_weights():
    # one large tap per channel makes the int8 grid coarse for the others; with inputs of mean 3 their
    # rounding shifts each output channel's mean, which the corrected bias takes back
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3)
    with torch.no_grad():
        conv.weight.mul_(0.3).select(1, 0)[:, 0, 0] = 1.0
    model = torch.nn.Sequential(conv).eval()
    calib = [b + 3.0 for b in _batches((8, 16, 12, 12))]
    x = _batches((16, 16, 12, 12), n=1, seed=1)[0] + 3.0
    errors, notes = [], []
    for cleanup in (QuantConfig().cleanup, ("fold-bn",)):
        config = QuantConfig(engine="pt2e", speed_guard=0, cleanup=cleanup, pt2e=EAGER)
        qm = ptsq.quantize(model, calib, config=config, progress=False)
        with torch.no_grad():
            errors.append(float((qm(x) - model(x)).mean((0, 2, 3)).abs().max()))
        notes.append([n for n in qm.manifest["notes"] if n.startswith("bias correction")])
    assert notes == [["bias correction: 1 conv/linear biases corrected for int8 weight rounding"], []]
    assert errors[0] < errors[1] / 5, errors  # measured 0.003 vs 0.11


def test_onnx_pair_safe_weights_are_finer_than_7_bits_and_cannot_saturate(small):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model, calib = small

    def conv_weights(**extra):
        qm = ptsq.quantize(model, calib, config=_config("onnx", onnx_reduce_range="on", **extra), progress=False)
        graph = onnx.load_model_from_string(qm.module.model_bytes).graph
        ws = [numpy_helper.to_array(i).astype(int) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
        return [w.reshape(w.shape[0], -1) for w in ws if w.ndim == 4 and w.shape[1] > 1]  # not depthwise

    pairs, old = conv_weights(), conv_weights(onnx_saturation="reduce-range")
    assert pairs and max(int(np.abs(w).max()) for w in old) <= 64  # 7-bit reduce_range
    assert max(int(np.abs(w).max()) for w in pairs) > 64
    for w in pairs:  # two largest same-signed weights x 255 stay inside int16 (vpmaddubsw without VNNI)
        assert np.sort(np.clip(w, 0, None), axis=1)[:, -2:].sum(1).max() <= 128
        assert np.sort(np.clip(-w, 0, None), axis=1)[:, -2:].sum(1).max() <= 128

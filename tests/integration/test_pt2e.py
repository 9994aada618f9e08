"""PT2E engine: int8 data movement, conv1d, the precision map, the .pt2 artifact and its checks.

Fast-tier tests run the converted program eagerly (reference kernels, ``pt2e.compile=False`` and
``PTSQ_PT2E_EAGER=1``); the compiled path is in the slow tier and the engines benchmark.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

import ptsq
from ptsq import artifact
from ptsq.config import Pt2eOptions, QuantConfig
from ptsq.errors import ArtifactError
from tests.models import BranchNumpy, Sandwich, ShuffleBlocks, TransposedConv1d, randomize_bn

EAGER = Pt2eOptions(compile=False)


def _batches(shape, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def _config(**kw) -> QuantConfig:
    return QuantConfig(engine="pt2e", speed_guard=0, pt2e=EAGER, **kw)


def test_data_movement_runs_on_int8_values_bit_exactly():
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from ptsq.engines.pt2e.capture import capture
    from ptsq.engines.pt2e.passes import sink_dequantize
    from ptsq.engines.pt2e.precision import op_name, precision_map
    from ptsq.engines.pt2e.quantizer import MOVEMENT, SPLITS, make_quantizer

    torch.manual_seed(0)
    model = ShuffleBlocks().eval()
    calib = _batches((2, 3, 12, 12))
    ep, _ = capture(model, (calib[0],))
    prepared = prepare_pt2e(ep.module(), make_quantizer(_config(), {})[0])
    for x in calib:
        prepared(x)
    converted = convert_pt2e(prepared)
    before = copy.deepcopy(converted)
    moved = sink_dequantize(converted)
    assert moved >= 8  # view, transpose, contiguous, view and chunk in each of the two blocks
    x = _batches((3, 3, 12, 12), n=1, seed=1)[0]
    assert torch.equal(converted(x), before(x))  # moving uint8 values commutes with dequantize
    for node in converted.graph.nodes:  # nothing is dequantized just to be moved
        if node.op == "call_function" and node.target in MOVEMENT | SPLITS:
            assert not op_name(node.args[0]).startswith("dequantize"), node.format_node()
    cats = [r for r in precision_map(converted, {}) if r.op == "cat"]
    assert len(cats) == 2 and all(r.precision == "int8" for r in cats), cats  # torchao alone: both fp32


def test_conv1d_is_int8_and_conv_transpose_says_why_it_is_not():
    torch.manual_seed(0)
    model = randomize_bn(TransposedConv1d())
    # 96 samples, 32 held back: enough for the self-check to give a verdict
    qm = ptsq.quantize(model, _batches((4, 8, 24), n=24), config=_config(check_samples=32), progress=False)
    rows = {r["name"]: r for r in qm.manifest["precision"]}
    assert rows["conv"]["precision"] == rows["out"]["precision"] == "int8", rows
    assert rows["up"]["precision"] == "fp32" and "no int8 kernel for conv_transpose1d" in rows["up"]["reason"], rows
    assert "act2" not in rows  # a ReLU fused into the int8 conv before it has no row of its own
    assert qm.fidelity["passed"], qm.fidelity


def _rewrite(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename, zin.read(info)))
    return dst


@pytest.fixture(scope="module")
def conv_artifact(tmp_path_factory):
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU()]
    for _ in range(3):  # 110k weights: the graph's JSON and the scales do not dominate the file
        layers += [torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    qm = ptsq.quantize(model.eval(), _batches((2, 3, 16, 16)), config=_config(), progress=False)
    path = qm.save(tmp_path_factory.mktemp("pt2e") / "convs.pt2")
    return model, qm, path


def test_artifact_is_int8_sized_and_runs_without_the_model_code(conv_artifact, monkeypatch):
    model, qm, path = conv_artifact
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    assert path.stat().st_size <= 0.3 * len(buf.getvalue()), (path.stat().st_size, len(buf.getvalue()))
    with zipfile.ZipFile(path) as zf:  # no example inputs, no fp32 copies of the int8 weights
        assert not [n for n in zf.namelist() if "sample_inputs/" in n and zf.read(n)]
        weights = [zf.getinfo(n).file_size for n in zf.namelist() if "/data/weights/" in n]
    assert max(weights) < 64 * 64 * 9 * 2, weights  # the largest conv's weight is stored as int8
    monkeypatch.setenv("PTSQ_PT2E_EAGER", "1")
    art = ptsq.load(path)
    assert len(art.manifest["program_sha256"]) == 64 and art.manifest["precision"] == qm.manifest["precision"]
    x = _batches((2, 3, 16, 16), n=1, seed=3)[0]
    with torch.inference_mode():
        torch.testing.assert_close(art(x), qm(x), atol=1e-5, rtol=1e-5)


def test_loaded_program_compiles_at_static_shapes_with_the_cpp_wrapper_and_falls_back(
    conv_artifact, monkeypatch, tmp_path
):
    """The fast route (export again at the call's shapes, inductor's C++ wrapper) runs the same int8 kernels
    as the reference program; when it cannot be taken, the Python-wrapper route runs and says why. (With
    ``PTSQ_PT2E_AOTI=0``: no AOTInductor package is kept, tests/integration/test_pt2e_aoti.py covers those.)"""
    from ptsq.engines.pt2e.runtime import PYTHON_WRAPPER_ENV

    monkeypatch.delenv("PTSQ_PT2E_EAGER", raising=False)  # make test-no-ao sets it: this test is about compiling
    monkeypatch.setenv("PTSQ_PT2E_AOTI", "0")
    monkeypatch.setenv("PTSQ_CACHE_DIR", str(tmp_path))
    _, qm, path = conv_artifact
    x1, x3 = (_batches((b, 3, 16, 16), n=1, seed=5)[0] for b in (1, 3))
    with torch.inference_mode():
        ref1, ref3 = qm(x1), qm(x3)  # the converted program on reference kernels (compile off)
        fast = ptsq.load(path)
        got1, got3 = fast(x1), fast(x3)
        monkeypatch.setenv(PYTHON_WRAPPER_ENV, "1")
        plain = ptsq.load(path)
        plain1 = plain(x1)
    assert fast.module.route == "static shapes, C++ wrapper" and len(fast.module._compiled) == 2
    assert not list(tmp_path.glob("aoti/*.pt2"))
    assert plain.module.route.startswith("Python wrapper (") and PYTHON_WRAPPER_ENV in plain.module.route
    step = ref1.abs().max().item() / 64  # int8 kernels vs the reference's fp32 rounding: within an output step
    for got, ref in ((got1, ref1), (got3, ref3), (plain1, ref1)):
        assert got.shape == ref.shape and (got - ref).abs().max().item() <= step
    torch.testing.assert_close(got1, plain1, atol=1e-6, rtol=0)  # both routes call the same oneDNN kernels


def test_edited_program_and_other_torch_version_are_refused(conv_artifact, tmp_path):
    _, _, path = conv_artifact

    def flip_weights(name: str, data: bytes) -> bytes:
        if "/data/weights/" in name and len(data) > 64:
            return data[:32] + bytes([data[32] ^ 1]) + data[33:]
        return data

    with pytest.raises(ArtifactError, match=r"program in .* was modified"):
        ptsq.load(_rewrite(path, tmp_path / "edited.pt2", flip_weights))

    def other_torch(name: str, data: bytes) -> bytes:
        if name.endswith("ptsq_manifest.json"):
            m = json.loads(data)
            return artifact.seal({**m, "torch_version": "2.99.0"}).encode()
        return data

    with pytest.raises(ArtifactError, match=r"exported with torch 2\.99\.0") as ei:
        ptsq.load(_rewrite(path, tmp_path / "old.pt2", other_torch))
    assert "re-create it" in ei.value.hint


@pytest.mark.slow  # prepare_qat_pt2e's conv+BN pattern matching takes ~1 min here; the fast tier runs PT2E QAT
# through the CLI in the torch.ao-free run (tests/cli/test_modes_cli.py)
def test_qat_on_pt2e_trains_freezes_and_converts(tmp_path, monkeypatch):
    import ptsq.qat

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 4),
    )  # fmt: skip
    x = _batches((8, 3, 12, 12), n=1)[0]
    prepared = ptsq.qat.prepare(model, (x[:1],), config=_config())
    assert ptsq.qat.calibrate(prepared, [x]) == 1 and prepared.training
    ptsq.qat.freeze_bn(prepared)
    ptsq.qat.freeze_observers(prepared)
    frozen = {k: v.clone() for k, v in prepared.state_dict().items() if "running_mean" in k or k.endswith("scale")}
    assert any("running_mean" in k for k in frozen) and any(k.endswith("scale") for k in frozen)
    opt = torch.optim.SGD(prepared.parameters(), lr=0.05)
    torch.nn.functional.cross_entropy(prepared(x * 3), torch.arange(8) % 4).backward()  # would move unfrozen stats
    opt.step()
    after = prepared.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    qm = ptsq.qat.convert(prepared, check_inputs=[(x,)])
    assert qm.manifest["engine"] == "pt2e" and qm.manifest["mode"] == "qat"
    assert {r["name"]: r["precision"] for r in qm.manifest["precision"]} == {"0": "int8", "3": "int8", "5": "int8"}
    assert qm.fidelity["passed"], qm.fidelity
    monkeypatch.setenv("PTSQ_PT2E_EAGER", "1")
    art = ptsq.load(qm.save(tmp_path / "qat.pt2"))
    torch.testing.assert_close(art(x), qm(x), atol=1e-5, rtol=1e-5)


def test_dynamic_mode_on_pt2e_quantizes_linears_and_says_why_rnns_stay_fp32():
    from tests.models_seq import SeqLSTM, TokenMLP

    torch.manual_seed(0)
    mlp = TokenMLP().eval()
    ex = mlp.example_inputs()
    qm = ptsq.quantize_dynamic(mlp, example_inputs=ex, config=_config(mode="dynamic"), check_inputs=[ex])
    linears = [r for r in qm.manifest["precision"] if r["op"] == "Linear"]
    assert qm.manifest["engine"] == "pt2e" and len(linears) == 3 and {r["precision"] for r in linears} == {"int8"}
    assert qm.fidelity["cosine_mean"] >= 0.99, qm.fidelity
    lstm = SeqLSTM().eval()
    ex = lstm.example_inputs()
    rows = ptsq.quantize_dynamic(lstm, example_inputs=ex, config=_config(mode="dynamic")).precision
    assert rows["fc"]["precision"] == "int8"
    assert rows["lstm"]["precision"] == "fp32" and "no dynamic int8 kernel for LSTM" in rows["lstm"]["reason"]


class _Mix(torch.nn.Module):
    """A matmul of two activations inside a named module, after the Linears that feed it."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.q(y) @ self.k(y).transpose(1, 2)


class _Tokens(torch.nn.Module):
    """conv+BN+ReLU, a conv called twice, int8 data movement (flatten, transpose) into Linears and a matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.again = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.mix = _Mix()
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.again(torch.relu(self.again(self.stem(x)))))
        return self.head(self.mix(y.flatten(2).transpose(1, 2)))


def test_analyze_puts_pt2e_layers_back_to_fp32_without_recalibrating():
    from ptsq.analysis.sensitivity import analyze, float_layers
    from ptsq.fidelity import sqnr_db

    torch.manual_seed(0)
    model = randomize_bn(_Tokens()).eval()
    calib = _batches((4, 3, 4, 4))
    qm = ptsq.quantize(model, calib, config=_config(), progress=False)
    layers = float_layers(qm.result)
    # the matmul of two activations stays fp32 (torchao quantizes only one of its inputs): not a layer
    assert layers is not None and layers.names() == ["stem.0", "again", "mix.q", "mix.k", "head"]
    x = _batches((4, 3, 4, 4), n=1, seed=1)[0]
    with torch.inference_mode():
        ref, int8 = model(x), qm.result.module(x)
        every = layers.with_float([*layers.names(), "mix"])(x)
        one = layers.with_float(["mix"])(x)  # mix.q, mix.k and the int8-rounded input of their matmul
        after = qm.result.module(x)
    # every layer back in fp32 (and the matmul's rounded input): the fp32 model itself (BN folded, biases
    # before bias correction), where int8 is far from it; a swap works on a copy and leaves the program as it was
    assert sqnr_db(ref, every) > 80 > sqnr_db(ref, int8) + 20, (sqnr_db(ref, every), sqnr_db(ref, int8))
    assert torch.equal(after, int8) and not torch.equal(one, int8) and not torch.equal(one, every)
    fp32_out, int8_out = layers.layer_outputs(["stem.0", "mix"], (x,))
    assert fp32_out["stem.0"].shape == int8_out["stem.0"].shape == (4, 8, 4, 4)  # after its fused ReLU
    assert 15 < sqnr_db(fp32_out["stem.0"], int8_out["stem.0"]) < 80

    report = analyze(model, calib, config=_config())
    assert sorted(r.name for r in report.layers) == sorted(layers.names())
    assert report.baseline_sqnr_db == qm.fidelity["sqnr_db"]  # the headline is the self-check's figure
    assert all(r.op for r in report.layers) and {r.op for r in report.layers} >= {"Conv2d", "Linear"}


def test_analyze_refuses_what_it_cannot_do_before_quantizing():
    from ptsq.analysis.sensitivity import analyze
    from ptsq.errors import ConfigError

    with pytest.raises(ConfigError, match="runs on the fx and pt2e engines only, not 'onnx'"):
        analyze(torch.nn.Conv2d(3, 3, 1), iter(()), config=QuantConfig(engine="onnx"))
    with pytest.raises(ConfigError, match="on Ray runs on the fx engine only"):
        analyze(torch.nn.Conv2d(3, 3, 1), iter(()), config=_config(), ray="auto")


def test_speed_check_hooks_move_pt2e_layers_to_fp32_and_the_artifact_keeps_them(tmp_path, monkeypatch):
    from ptsq.engines import get_engine
    from ptsq.modes.speed import REASON

    torch.manual_seed(0)
    model = randomize_bn(_Tokens()).eval()
    calib = _batches((4, 3, 4, 4))
    qm = ptsq.quantize(model, calib, config=_config(), progress=False)
    engine, result, x = get_engine("pt2e"), qm.result, calib[0][:1]
    timings = engine.layer_times(result, (x,), 1)
    # every int8 conv and 2-d linear, timed at its real input shape (mix.q/k/head take 3-d inputs)
    assert [t.name for t in timings] == ["stem.0", "again"] and all(t.int8_ms > 0 and t.fp32_ms > 0 for t in timings)
    assert timings[1].input_shape == [1, 8, 4, 4]
    layers = result.debug["float_layers"]
    with torch.inference_mode():
        before = result.module(x)
        assert engine.keep_fp32(result, timings[1:], REASON, 1) == ["again"]
        after = result.module(x)
        assert torch.equal(after, layers.with_float(["again"])(x)) and not torch.equal(after, before)
        engine.keep_fp32(result, timings[:1], REASON, 1)  # a second round adds to the first
        assert torch.equal(result.module(x), layers.with_float(["again", "stem.0"])(x))
    rows = {r.name: r for r in result.precision}
    assert rows["again"].precision == rows["again#1"].precision == rows["stem.0"].precision == "fp32"
    assert "slower than fp32 inside the model" in rows["again"].reason
    assert rows["head"].precision == "int8"
    monkeypatch.setenv("PTSQ_PT2E_EAGER", "1")
    art = ptsq.load(qm.save(tmp_path / "moved.pt2"))
    with torch.inference_mode():
        torch.testing.assert_close(art(x), result.module(x), atol=1e-5, rtol=1e-5)
    # the speed check times only what users run: without inductor here, it says so instead of timing
    assert qm.manifest["speed"]["verdict"] == "not checked" and "no deployable form" in qm.manifest["speed"]["why"]


@pytest.mark.slow  # inductor compiles twice: the program quantize self-checks, and the .pt2 loaded back
def test_speed_check_times_the_pt2_as_loaded():
    from ptsq.engines import get_engine
    from ptsq.engines.pt2e import CompiledProgram

    torch.manual_seed(0)
    model = randomize_bn(_Tokens()).eval()
    calib = _batches((8, 3, 4, 4), n=6)
    qm = ptsq.quantize(model, calib, config=QuantConfig(engine="pt2e", speed_guard=0), progress=False)
    speed = qm.manifest["speed"]
    assert speed["verdict"] in ("faster", "slower") and speed["pairs"][0]["runs"] >= 5, speed
    assert speed["int8"] == "the saved pt2e artifact, loaded back"
    loaded = get_engine("pt2e").deployed(qm.result)
    assert isinstance(loaded, CompiledProgram) and loaded.program is not qm.result.module.program
    x = calib[0][:1]
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), qm.result.module(x), atol=1e-5, rtol=1e-5)


def test_what_export_cannot_capture_is_one_line_and_auto_quantizes_it_with_another_engine():
    """A block torch.export cannot capture and TorchScript cannot script (no fp32 island for it: see
    test_pt2e_islands.py) is refused naming the user's line, and ``auto`` (with or without torch.ao) still
    hands back a checked int8 model from an engine that can."""
    from ptsq.errors import TraceError
    from ptsq.fidelity import sqnr_db

    torch.manual_seed(0)
    model = Sandwich(BranchNumpy()).eval()
    calib = _batches((4, 3, 12, 12), n=6)
    with pytest.raises(TraceError) as info:
        ptsq.quantize(model, calib, config=_config(), progress=False)
    head = str(info.value).splitlines()[0]
    assert "torch.export cannot capture" in head and "x.mean() > 0" in head and "models.py" in head, head
    assert "TorchScript cannot script it" in head, head
    qm = ptsq.quantize(model, calib, config=QuantConfig(engine="auto", speed_guard=0, pt2e=EAGER), progress=False)
    rows = {r["engine"]: r for r in qm.manifest["auto"]["engines"]}
    assert rows["pt2e"]["status"] == "failed" and "x.mean() > 0" in rows["pt2e"]["why"], rows["pt2e"]
    assert qm.manifest["auto"]["chosen"] in {"fx", "onnx", "openvino"}
    x = _batches((4, 3, 12, 12), n=1, seed=9)[0]
    with torch.inference_mode():
        assert sqnr_db(model(x), qm(x)) > 20.0

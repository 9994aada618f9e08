"""Dynamic mode on the onnx engine: a tiny transformer block, real export and onnxruntime quantizer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ptsq
from ptsq.config import QuantConfig
from ptsq.errors import ConfigError, QuantizationError
from ptsq.machine import has_vnni
from tests.cli.conftest import assert_clean_error, run_cli
from tests.models_seq import ConvOnly, TinyEncoder

pytest.importorskip("onnxruntime")

SEQ = Path(__file__).resolve().parents[1] / "models_seq.py"
# the TorchScript exporter takes ~1 s here; the default dynamo exporter ~15 s (the CLI test covers it)
FAST = {"exporter": "torchscript"}


def _checks() -> list[tuple[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(2, t, 32, generator=g),) for t in (5, 9, 16)]  # several sequence lengths


def test_onnx_dynamic_is_faithful_and_reloads_in_a_fresh_process(tmp_path: Path) -> None:
    model = TinyEncoder().eval()
    config = QuantConfig(engine="onnx", mode="dynamic", onnx=FAST)
    qm = ptsq.quantize_dynamic(model, example_inputs=model.example_inputs(), check_inputs=_checks(), config=config)
    m = qm.manifest
    assert m["engine"] == "onnx" and m["mode"] == "dynamic"
    assert {r["name"]: r["precision"] for r in m["precision"]} == {
        **dict.fromkeys(["qkv", "proj", "up", "down", "head"], "int8"),
        **dict.fromkeys(["ln1", "ln2"], "fp32"),
    }  # the head sees 2-D inputs (exported as Gemm): rewritten so it is int8 too; LayerNorms listed as fp32
    assert m["check"]["cosine_mean"] >= 0.999 and m["check"]["passed"]
    assert m["details"]["reduce_range"] == (not has_vnni())  # 7-bit weights where u8 x s8 would saturate

    path = qm.save(tmp_path / "enc.onnx")
    assert path.read_bytes()[:1] == b"\x08"  # a plain ONNX file
    x = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(2))  # a length never seen before
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch, ptsq\n"
        "a = ptsq.load(sys.argv[1])\n"
        "assert a.manifest['engine'] == 'onnx' and a.manifest['mode'] == 'dynamic'\n"
        "torch.save(a(torch.load(sys.argv[2])), sys.argv[3])\n"
    )
    # a fresh interpreter without the tests package on its path: no model code is needed
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        check=True, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    got = torch.load(tmp_path / "y.pt")
    with torch.inference_mode():
        want = model(x)
    assert got.shape == want.shape
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.999
    torch.testing.assert_close(got, qm(x))  # same int8 model in this process


def test_onnx_dynamic_honours_skip_rules() -> None:
    model = TinyEncoder().eval()
    config = QuantConfig(engine="onnx", mode="dynamic", skip=("name:head",), onnx=FAST)
    qm = ptsq.quantize_dynamic(model, example_inputs=model.example_inputs(), config=config)
    rows = {r["name"]: r for r in qm.manifest["precision"]}
    assert rows["head"]["precision"] == "fp32" and "skip rule" in rows["head"]["reason"]
    assert rows["qkv"]["precision"] == "int8"


def test_onnx_dynamic_rejects_models_without_linear_layers() -> None:
    with pytest.raises(QuantizationError, match="no supported layer") as info:
        ptsq.quantize_dynamic(
            ConvOnly(), example_inputs=(torch.randn(1, 3, 8, 8),), config=QuantConfig(engine="onnx", mode="dynamic")
        )
    assert "\n" not in str(info.value).strip()


def test_dynamic_mode_names_its_engines() -> None:
    model = TinyEncoder().eval()
    with pytest.raises(ConfigError, match="fx, pt2e, onnx engine, not 'openvino'"):
        ptsq.quantize_dynamic(
            model, example_inputs=model.example_inputs(), config=QuantConfig(engine="openvino", mode="dynamic")
        )


def test_cli_dynamic_onnx_bad_input_is_one_line(tmp_path: Path) -> None:
    res = run_cli("quantize", f"{SEQ}:ConvOnly", "--mode", "dynamic", "--engine", "onnx", "--input-size", "8",
                  "-o", tmp_path / "c.onnx")  # fmt: skip
    assert_clean_error(res, "no supported layer")
    assert not (tmp_path / "c.onnx").exists()


@pytest.mark.slow
def test_cli_dynamic_onnx_happy_path(tmp_path: Path) -> None:
    out = tmp_path / "enc.onnx"
    res = run_cli("quantize", f"{SEQ}:TinyEncoder", "--mode", "dynamic", "--engine", "onnx", "-o", out, "--json")
    assert res.code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["engine"] == "onnx" and d["mode"] == "dynamic" and d["layers"] == {"int8": 5, "fp32": 2}
    assert d["check"]["cosine_mean"] >= 0.99
    info = run_cli("info", out, "--json")
    assert info.code == 0, info.stderr
    assert json.loads(info.stdout)["engine"] == "onnx"


@pytest.mark.torch_ao  # auto compares fx with onnx
def test_dynamic_auto_times_fx_and_onnx_and_keeps_a_faithful_one(tmp_path: Path) -> None:
    model = TinyEncoder().eval()
    config = QuantConfig(engine="auto", mode="dynamic", onnx=FAST, auto={"runs": 3, "engines": ("fx", "onnx")})
    qm = ptsq.quantize_dynamic(model, example_inputs=model.example_inputs(), check_inputs=_checks(), config=config)
    table = qm.summary()["auto"]
    rows = {r["engine"]: r for r in table["engines"]}
    assert set(rows) == {"fx", "onnx"}
    chosen = rows[table["chosen"]]
    assert chosen["status"] == "passed" and chosen["cosine_mean"] >= 0.99 and chosen["median_ms"] > 0
    assert all(r["chosen"] == (r is chosen) for r in rows.values())
    loaded = ptsq.load(qm.save(tmp_path / "enc.bin"))
    assert loaded.manifest["engine"] == table["chosen"] and loaded.manifest["auto"]["chosen"] == table["chosen"]

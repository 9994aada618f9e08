"""Artifacts of every engine: the manifest reads straight from the file, info names what runs it, the report
covers them side by side, and each opens without ptsq as the README says."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import ptsq
from ptsq.artifact import unseal
from ptsq.config import QuantConfig
from ptsq.engines import artifact_suffixes, get_engine, missing_packages, output_help
from ptsq.manifest_file import PLAIN_LOADERS, read_manifest, runtime_of
from tests.cli.conftest import run_cli
from tests.models import SmallNet, randomize_bn

pytestmark = pytest.mark.torch_ao  # builds an artifact with every engine, fx included

FAST = ("fx", "onnx", "openvino")  # pt2e (torch.export + inductor) takes longer: the slow test covers it
EXTRA = {"pt2e": {"pt2e": {"compile": False}}}  # info and report need no compiled program


def _build(engine: str, folder: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(4)]
    config = QuantConfig(engine=engine, speed_guard=0, **EXTRA.get(engine, {}))
    qm = ptsq.quantize(randomize_bn(SmallNet()).eval(), calib, config=config, progress=False)
    return qm.save(folder / f"small{artifact_suffixes()[engine]}")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("engines")
    return {e: _build(e, d) for e in FAST if not missing_packages(e)}


def _check_engine(engine: str, path: Path) -> None:
    eng = get_engine(engine)
    assert eng.can_load(path)
    m = read_manifest(path)
    assert m == unseal(eng.load(path)[1], path)  # the same manifest the engine's own loader finds
    assert m["engine"] == engine
    info = run_cli("info", path)
    assert info.code == 0, info.stderr
    assert runtime_of(m) in info.stdout and "without ptsq" in info.stdout
    if engine != "fx":  # torch's quantized engine runs fx artifacts only
        assert "quantized engine" not in info.stdout


def test_manifest_info_and_report_for_each_engine(artifacts, tmp_path):
    for engine, path in artifacts.items():
        _check_engine(engine, path)
    out = tmp_path / "engines.html"
    res = run_cli("report", *artifacts.values(), "-o", out)
    assert res.code == 0, res.stderr
    html = out.read_text()
    for engine, path in artifacts.items():
        assert f"{path.name} ({engine}, " in html  # the header names each artifact with its engine
        assert read_manifest(path)["precision"][0]["name"] in html


def test_quantize_help_names_each_engines_suffix():
    def squash(text: str) -> str:  # the help box wraps and frames lines
        return "".join(text.replace("│", "").split())

    help_text = squash(run_cli("quantize", "--help").stdout)
    assert squash(output_help()) in help_text and "(.pt)" not in help_text
    for engine, suffix in artifact_suffixes().items():
        assert f"{engine}:{suffix}" in help_text
        if not missing_packages(engine):
            assert get_engine(engine).suffix == suffix  # the help's list is the engines' own


def test_each_artifact_opens_without_ptsq_as_documented(artifacts, tmp_path):
    """README's table: fx with torch.jit.load; onnx with onnxruntime and OpenVINO; the OpenVINO artifact is a zip
    whose model.xml OpenVINO reads. And what does not work: torch.jit.load on anything but fx."""
    x = torch.randn(1, 3, 32, 32)
    want = ptsq.load(artifacts["fx"])(x)
    assert "torch.jit.load" in PLAIN_LOADERS["fx"]
    torch.testing.assert_close(torch.jit.load(artifacts["fx"])(x), want)
    for engine in ("onnx", "openvino"):
        if engine in artifacts:
            with pytest.raises(RuntimeError):
                torch.jit.load(artifacts[engine])
    if "onnx" in artifacts:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(artifacts["onnx"]), providers=["CPUExecutionProvider"])
        y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert y.shape == tuple(want.shape) and np.isfinite(y).all()
    if "openvino" in artifacts:
        import openvino as ov

        core = ov.Core()
        with zipfile.ZipFile(artifacts["openvino"]) as zf:
            zf.extractall(tmp_path)
        y = core.compile_model(core.read_model(str(tmp_path / "ptsq_openvino" / "model.xml")), "CPU")(x.numpy())[0]
        assert y.shape == tuple(want.shape)
        if "onnx" in artifacts:
            assert core.read_model(str(artifacts["onnx"])) is not None


@pytest.mark.slow
def test_pt2e_and_auto_artifacts(tmp_path):
    """pt2e: the manifest, info and report as for the others; torch.export.load opens it once torchao's ops are
    registered. auto: the chosen engine's format, and the report takes the speed-up from auto's own timing."""
    if missing_packages("pt2e"):
        pytest.skip("torchao is not installed")
    path = _build("pt2e", tmp_path)
    _check_engine("pt2e", path)
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  (registers quantized_decomposed ops)

    assert "torchao" in PLAIN_LOADERS["pt2e"]
    y = torch.export.load(str(path)).module()(torch.randn(1, 3, 32, 32))
    assert y.shape == (1, 10)
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(4)]
    config = QuantConfig(engine="auto", speed_guard=0, auto={"engines": ("fx", "onnx"), "runs": 5})
    auto = ptsq.quantize(randomize_bn(SmallNet()).eval(), calib, config=config, progress=False)
    out = auto.save(tmp_path / "auto.bin")
    m = read_manifest(out)
    assert m["engine"] in ("fx", "onnx") and m["auto"]["chosen"] == m["engine"]
    res = run_cli("report", out, "-o", tmp_path / "auto.md")
    assert res.code == 0, res.stderr
    md = (tmp_path / "auto.md").read_text()
    chosen = next(r for r in m["auto"]["engines"] if r["chosen"])
    assert f"**speed-up: {chosen['speedup']:.2f}x**" in md and "--engine auto" in md
    assert json.loads(run_cli("info", out, "--json").stdout)["engine"] == m["engine"]

"""The report's parts without quantizing anything: the manifest reader, the JSON checks, the SVG charts."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptsq.artifact import seal
from ptsq.errors import ArtifactError, DataError
from ptsq.manifest_file import ONNX_KEY, OPENVINO_ENTRY, ZIP_SUFFIX, onnx_metadata, read_manifest
from ptsq.report.inputs import check_json
from ptsq.report.svg import grouped_bars, nice_ticks, ranked_bars

SVG = "{http://www.w3.org/2000/svg}"


def _onnx_file(path: Path, props: dict[str, str]) -> Path:
    """A real ONNX model (one Relu) with metadata_props, written by the onnx package."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save_model(model, str(path))
    return path


def _manifest(engine: str = "onnx") -> dict:
    return json.loads(seal({"engine": engine, "mode": "static", "precision": [{"name": "fc", "op": "Gemm",
                                                                             "precision": "int8"}]}))  # fmt: skip


def test_onnx_metadata_matches_the_onnx_package(tmp_path):
    onnx = pytest.importorskip("onnx")
    big = json.dumps({"note": "é" * 3000})  # multi-byte varint lengths, non-ASCII text
    path = _onnx_file(tmp_path / "m.onnx", {"a": "1", ONNX_KEY: big, "z": ""})
    want = {p.key: p.value for p in onnx.load_model(str(path)).metadata_props}
    assert onnx_metadata(path) == want
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size - 40])
    assert onnx_metadata(cut) is None  # truncated: not well-formed
    other = tmp_path / "x.onnx"
    other.write_bytes(b"\x09" + b"\x00" * 10)
    assert onnx_metadata(other) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_onnx_metadata_never_raises_on_garbage(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("g") / "g.onnx"
    p.write_bytes(b"\x08" + data)
    assert onnx_metadata(p) is None or isinstance(onnx_metadata(p), dict)


def test_read_manifest_from_each_container(tmp_path):
    m = _manifest()
    text = seal(m)
    assert read_manifest(_onnx_file(tmp_path / "a.onnx", {ONNX_KEY: text})) == m
    for name, entry in (("a.pt", "archive" + ZIP_SUFFIX), ("a.ov", OPENVINO_ENTRY)):
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            zf.writestr(entry, text)
            zf.writestr("archive/data.pkl", b"x")
        assert read_manifest(tmp_path / name) == m
    with zipfile.ZipFile(tmp_path / "plain.pt", "w") as zf:  # TorchScript without a manifest
        zf.writestr("archive/constants.pkl", b"x")
    with pytest.raises(ArtifactError, match="no ptsq manifest"):
        read_manifest(tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "pickle.pt", "w") as zf:  # torch.save of some object
        zf.writestr("archive/data.pkl", b"x")
    with pytest.raises(ArtifactError, match="not a ptsq artifact"):
        read_manifest(tmp_path / "pickle.pt")
    edited = tmp_path / "edited.onnx"
    _onnx_file(edited, {ONNX_KEY: text.replace('"static"', '"dynamic"')})
    with pytest.raises(ArtifactError, match="modified"):
        read_manifest(edited)


def test_reader_constants_are_the_engines_own():
    from ptsq.engines import openvino, pt2e
    from ptsq.engines.fx import engine as fx
    from ptsq.engines.onnx import export as onnx

    assert ZIP_SUFFIX.endswith("/" + fx.MANIFEST_NAME) and ZIP_SUFFIX.endswith("/" + pt2e.MANIFEST_NAME)
    assert OPENVINO_ENTRY == openvino.MANIFEST_ENTRY and ONNX_KEY == onnx.MANIFEST_KEY


def test_reading_and_reporting_imports_no_runtime(tmp_path):
    path = _onnx_file(tmp_path / "a.onnx", {ONNX_KEY: seal(_manifest())})
    code = (
        "import sys; from ptsq.report import build, render_html, render_markdown; "
        f"r = build([{str(path)!r}]); render_html(r); render_markdown(r); "
        "print(','.join(m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'torchao') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", out


# ------------------------------------------------------------------------------------------------ JSON
def test_json_checks_name_the_command_that_wrote_it():
    bench = {"machine": {}, "timings": [{"label": "a", "kind": "fp32", "threads": 1, "batch_size": 1,
                                         "median_ms": 1.0, "p90_ms": 1.0, "speedup": 1.0}], "memory": []}  # fmt: skip
    ev = {"data": {}, "preprocess": {}, "models": [{"label": "a", "kind": "fp32", "fidelity": None}]}
    assert check_json(bench, "bench", Path("b.json")) is bench
    with pytest.raises(DataError, match="output of 'ptsq bench --json', not of 'ptsq eval") as info:
        check_json(bench, "eval", Path("b.json"))
    assert info.value.hint == "pass it with --bench instead"
    with pytest.raises(DataError, match="holds a JSON list"):
        check_json([bench], "bench", Path("b.json"))
    with pytest.raises(DataError, match="no valid 'models'"):
        check_json({**ev, "models": "x"}, "eval", Path("e.json"))
    with pytest.raises(DataError, match="has no 'timings' entries"):
        check_json({**bench, "timings": []}, "bench", Path("b.json"))


# ------------------------------------------------------------------------------------------------ SVG
@pytest.mark.parametrize("lo, hi", [(0, 1), (0, 0.37), (0, 1234.5), (-3.2, 17.9), (5, 5)])
def test_nice_ticks_cover_the_range_in_round_steps(lo, hi):
    t = nice_ticks(lo, hi)
    assert t[0] <= lo and t[-1] >= hi and len(t) >= 2
    steps = {round(b - a, 9) for a, b in itertools.pairwise(t)}
    assert len(steps) == 1
    step = steps.pop()
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1, 2, 2.5, 5, 10)


def _bars(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == SVG + "svg" and float(root.get("width")) > 0 and float(root.get("height")) > 0
    return [e for e in root.iter(SVG + "rect") if e.get("class") == "bar"]


def test_grouped_bars_heights_follow_the_values_and_text_is_escaped():
    values = {("fp32 <&>", "1 thread"): (10.0, 12.0, ""), ("int8", "1 thread"): (4.0, 4.5, "2.50x"),
              ("fp32 <&>", "2 threads"): (6.0, 90.0, ""), ("int8", "2 threads"): (3.0, None, "2.00x")}  # fmt: skip
    svg = grouped_bars(["1 thread", "2 threads"], ["fp32 <&>", "int8"], values, title="t <b>", unit="ms")
    bars = _bars(svg)
    assert len(bars) == 4
    heights = [float(b.get("height")) for b in bars]
    assert heights[0] / heights[1] == pytest.approx(10 / 4, rel=0.01)  # same scale for every bar
    assert heights[2] / heights[3] == pytest.approx(6 / 3, rel=0.01)
    top = min(float(b.get("y")) for b in bars)
    assert top > 20  # the 90 ms whisker is clipped, not squashing the medians
    assert "<b>" not in svg and "&lt;&amp;&gt;" in svg


def test_ranked_bars_draw_negative_gains_left_of_zero():
    svg = ranked_bars([("a.long.layer.name", 3.0, True, "a"), ("b", -1.0, False, "b"), ("c", 0.5, False, "c")],
                      title="gain", unit="dB")  # fmt: skip
    bars = _bars(svg)
    assert bars[0].get("fill") != bars[1].get("fill")  # the recommended layer stands out
    xs = [(float(b.get("x")), float(b.get("width"))) for b in bars]
    zero = xs[0][0]
    assert xs[1][0] + xs[1][1] == pytest.approx(zero, abs=0.2) and xs[1][0] < zero
    assert xs[0][1] / xs[2][1] == pytest.approx(3.0 / 0.5, rel=0.02)

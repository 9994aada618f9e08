"""What a new user meets first: specs that import from the current folder, a CLI that starts without torch,
and ``ptsq info`` that reads the manifest without loading the model or its runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
import torch

import ptsq
from ptsq.artifact import seal
from ptsq.errors import ArtifactError
from ptsq.manifest_file import read_manifest, read_manifest_text
from tests.cli.conftest import assert_clean_error, run_cli
from tests.models import SmallNet, randomize_bn

SRC = Path(ptsq.__file__).resolve().parents[1]  # the folder that holds this ptsq, for child processes
QFAST = ["--input-size", "32", "--num-calib", "8", "--batch-size", "4", "--speed-guard", "0", "-q"]
HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "openvino", "nncf", "torchao")

PACKAGE = """
from torch import nn

from {name}.layers import head


def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head())
"""


def _child_env() -> dict[str, str]:
    """Only ptsq's own folder on the path: not the test's working folder, not the repository root."""
    return {**os.environ, "PYTHONPATH": str(SRC), "TORCH_CPP_LOG_LEVEL": "ERROR"}


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("ptsq")
    if not script.exists():
        pytest.skip("the ptsq console script is not installed next to this Python")
    return [str(script)]


@pytest.fixture(scope="module")
def fx_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(3)]
    qm = ptsq.quantize(randomize_bn(SmallNet()), calib, config=ptsq.QuantConfig(speed_guard=0), progress=False)
    return qm.save(tmp_path_factory.mktemp("art") / "small.pt")


def test_console_script_imports_a_package_from_the_current_folder(tmp_path):
    """``ptsq bench pkg.module:callable`` from the folder holding ``pkg``, as ``python -m`` would find it (the
    console script alone does not look there; quantize, eval and analyze load specs the same way)."""
    name = f"userpkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "layers.py").write_text("from torch import nn\n\n\ndef head():\n    return nn.Linear(8, 4)\n")
    (tmp_path / name / "models.py").write_text(PACKAGE.format(name=name))
    cmd = [*_console_script(), "bench", f"{name}.models:build", "--input-size", "32", "--runs", "2", "--warmup", "0",
           "--no-memory", "--json"]  # fmt: skip
    res = subprocess.run(cmd, cwd=tmp_path, env=_child_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["timings"]
    assert [r["label"] for r in rows] == [f"{name}.models:build"] and rows[0]["median_ms"] > 0


def test_a_spec_that_cannot_be_imported_names_the_folders_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_cli("quantize", "nosuchpkg_x.models:build", "--calib", tmp_path, "-o", tmp_path / "o.pt", *QFAST)
    assert_clean_error(res, "cannot import 'nosuchpkg_x.models'", "searched", str(tmp_path))
    assert "hint: run ptsq from the folder that holds 'nosuchpkg_x'" in res.stderr


def test_the_cli_app_and_every_help_import_no_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from ptsq.cli.main import app\n"
        "import typer\n"
        "names = list(typer.main.get_command(app).commands)\n"
        "codes = [CliRunner().invoke(app, [*([n] if n else []), '--help']).exit_code for n in ['', *names]]\n"
        f"print(codes, [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_child_env())
    codes, loaded = out.stdout.strip().rsplit("] [", 1)
    assert set(codes.strip("[").split(", ")) == {"0"}, out.stdout
    assert loaded == "]", f"imported by the CLI before any command ran: {loaded}"


@pytest.mark.torch_ao  # an FX (TorchScript) artifact: its zip layout and engine name
def test_info_reads_the_manifest_without_torch(fx_artifact):
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from ptsq.cli.main import app\n"
        f"res = CliRunner().invoke(app, ['info', {str(fx_artifact)!r}, '--json'])\n"
        f"print(json.dumps({{'code': res.exit_code, 'out': res.stdout, 'loaded': [m for m in {HEAVY!r} "
        "if m in sys.modules]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_child_env())
    res = json.loads(out.stdout)
    assert res["code"] == 0 and res["loaded"] == [], res
    shown = json.loads(res["out"])
    assert shown["engine"] == "fx" and shown["bytes"] == fx_artifact.stat().st_size
    assert {k: v for k, v in shown.items() if k not in ("path", "bytes")} == ptsq.load(fx_artifact).manifest


def test_manifest_reader_on_onnx_as_the_onnx_package_writes_it(tmp_path):
    """A real ModelProto (from the onnx package) with the manifest in metadata_props; cut short, it is refused."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    model = helper.make_model(graph, producer_name="ptsq-test")
    text = seal({"engine": "onnx", "note": "ünïcode"})
    helper.set_model_props(model, {"other": "x" * 300, "ptsq_manifest": text})
    path = tmp_path / "m.onnx"
    data = model.SerializeToString()
    path.write_bytes(data)
    assert read_manifest_text(path) == ("onnx", text)
    assert read_manifest(path)["note"] == "ünïcode"
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) - 40])
    with pytest.raises(ArtifactError, match="not a ptsq artifact"):
        read_manifest(cut)
    helper.set_model_props(model, {"other": "x"})
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ArtifactError, match="no ptsq manifest"):
        read_manifest(path)


@pytest.mark.torch_ao  # an FX (TorchScript) artifact: its zip layout and engine name
def test_manifest_reader_refuses_a_damaged_zip_member(fx_artifact, tmp_path):
    """A flipped byte inside the model's data is caught by the member's CRC, without loading the model."""
    with zipfile.ZipFile(fx_artifact) as zf:
        info = next(i for i in zf.infolist() if "/constants/" in i.filename and i.file_size > 64)
    data = bytearray(fx_artifact.read_bytes())
    h = info.header_offset  # local header: 30 bytes, then the name and the extra field (lengths at 26 and 28)
    start = h + 30 + int.from_bytes(data[h + 26 : h + 28], "little") + int.from_bytes(data[h + 28 : h + 30], "little")
    data[start + info.file_size // 2] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="damaged"):
        read_manifest(bad)
    assert read_manifest(fx_artifact)["engine"] == "fx"

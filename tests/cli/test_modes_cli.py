"""ptsq quantize --mode dynamic / qat: happy paths and each bad input (one-line error, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ptsq
from tests.cli.conftest import assert_clean_error, run_cli, tree_digest
from tests.models_seq import write_digit_folder

SEQ = Path(__file__).resolve().parents[1] / "models_seq.py"
DIGITS = ["--preset", "unit", "--channels", "gray", "--input-size", "8"]


def seq(name: str) -> str:
    return f"{SEQ}:{name}"


@pytest.fixture(scope="module")
def digit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digit_folder(tmp_path_factory.mktemp("digits"), classes=3, per_class=12)


def test_dynamic_happy_path(tmp_path: Path) -> None:
    out = tmp_path / "mlp.pt"
    res = run_cli("quantize", seq("TokenMLP"), "--mode", "dynamic", "-o", out, "--json")
    assert res.code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["mode"] == "dynamic" and d["layers"]["int8"] >= 1
    assert d["check"]["cosine_mean"] >= 0.99
    assert ptsq.load(out).manifest["mode"] == "dynamic"


def test_dynamic_on_conv_model_warns_and_names_static(tmp_path: Path) -> None:
    res = run_cli("quantize", f"{SEQ.parent / 'models.py'}:SmallNet", "--mode", "dynamic", "--input-size", "32",
                  "-o", tmp_path / "s.pt", "--min-cosine", "0")  # fmt: skip
    assert res.code == 0, res.stderr
    assert "warning:" in res.stderr and "--mode static" in res.stderr


def test_dynamic_without_supported_layers(tmp_path: Path) -> None:
    res = run_cli("quantize", seq("ConvOnly"), "--mode", "dynamic", "--input-size", "8", "-o", tmp_path / "c.pt")
    assert_clean_error(res, "no supported layer")
    assert not (tmp_path / "c.pt").exists()


def test_static_needs_calib(tmp_path: Path) -> None:
    assert_clean_error(run_cli("quantize", seq("TokenMLP"), "-o", tmp_path / "x.pt"), "--calib")


def test_qat_happy_path(tmp_path: Path, digit_dir: Path) -> None:
    before = tree_digest(digit_dir)
    out = tmp_path / "q.pt"
    res = run_cli("quantize", seq("DigitNet"), "--mode", "qat", "--train-data", digit_dir, *DIGITS, "--epochs", "2",
                  "--lr", "0.01", "--batch-size", "8", "-o", out, "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["mode"] == "qat" and d["training"]["steps"] == 10 and len(d["training"]["epochs"]) == 2
    assert d["training"]["classes"] == ["digit0", "digit1", "digit2"]
    assert d["layers"]["int8"] >= 1
    assert ptsq.load(out).manifest["mode"] == "qat"
    assert tree_digest(digit_dir) == before


def test_qat_without_labelled_data(tmp_path: Path) -> None:
    res = run_cli("quantize", seq("DigitNet"), "--mode", "qat", *DIGITS, "-o", tmp_path / "q.pt")
    assert_clean_error(res, "labelled training data")


def test_qat_folder_without_class_subfolders(tmp_path: Path, digit_dir: Path) -> None:
    res = run_cli("quantize", seq("DigitNet"), "--mode", "qat", "--train-data", digit_dir / "digit0", *DIGITS,
                  "-o", tmp_path / "q.pt")  # fmt: skip
    assert_clean_error(res, "no class sub-folders")


def test_qat_classes_do_not_match_outputs(tmp_path: Path) -> None:
    two = write_digit_folder(tmp_path / "two", classes=2, per_class=3)
    res = run_cli("quantize", seq("DigitNet"), "--mode", "qat", "--train-data", two, *DIGITS, "-o", tmp_path / "q.pt")
    assert_clean_error(res, "2 classes", "3 scores")
    assert not (tmp_path / "q.pt").exists()


def test_unknown_mode(tmp_path: Path) -> None:
    assert_clean_error(run_cli("quantize", seq("TokenMLP"), "--mode", "fast", "-o", tmp_path / "x.pt"), "mode")

"""--calib FILE in every mode, --calib sentences.txt --tokenizer DIR, and each bad input (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ptsq
from tests.cli.conftest import assert_clean_error, run_cli
from tests.models_seq import write_digit_folder

pytestmark = pytest.mark.usefixtures("one_thread")
SEQ = Path(__file__).resolve().parents[1] / "models_seq.py"
ENCODER = f"{SEQ}:TextEncoder"
G = torch.Generator().manual_seed(0)
IDS = torch.randint(1, 16, (24, 9), generator=G)
MASK = (torch.rand(24, 9, generator=G) > 0.2).long()


@pytest.fixture(scope="module")
def inputs_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("inputs") / "inputs.pt"
    torch.save({"input_ids": IDS, "attention_mask": MASK}, p)
    return p


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tokenizer")
    words = "the cat sat on a mat dog ran in park sun is warm rain falls".split()
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    (d / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return d


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("text") / "sentences.txt"
    words = "the cat sat on a mat dog ran in park sun is warm rain falls".split()
    rng = np.random.default_rng(0)
    p.write_text("\n".join(" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(20)) + "\n")
    return p


def _left_nothing(folder: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(f".{out.name}.")]  # no temporary left behind


def test_static_with_a_dict_of_named_inputs(tmp_path, inputs_pt) -> None:
    out = tmp_path / "enc.pt"
    res = run_cli("quantize", ENCODER, "--calib", inputs_pt, "--batch-size", "6", "-o", out, "--speed-guard", "0",
                  "--allow-slower", "--json")  # fmt: skip  # a tiny encoder: this test is about its inputs, not speed
    assert res.code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["layers"]["int8"] >= 2 and d["calibration"]["inputs"] == ["input_ids", "attention_mask"]
    art = ptsq.load(out)
    assert art.manifest["input"]["keywords"] == ["input_ids", "attention_mask"]
    assert art(IDS[:3], MASK[:3]).shape == (3, 32)


def test_dynamic_with_a_tensor_file_and_with_text(tmp_path, inputs_pt, sentences, tokenizer_dir) -> None:
    for name, extra in (("a.pt", ["--calib", inputs_pt]), ("b.pt", ["--calib", sentences, "--tokenizer", tokenizer_dir,
                                                                     "--max-length", "6"])):  # fmt: skip
        res = run_cli("quantize", ENCODER, "--mode", "dynamic", *extra, "-o", tmp_path / name, "--json")
        assert res.code == 0, res.stderr
        d = json.loads(res.stdout)
        assert d["layers"]["int8"] == 2 and d["check"]["cosine_mean"] > 0.99
        assert d["calibration"]["check_source"] == str(extra[1])
        assert ptsq.load(tmp_path / name)(IDS[:2, :6], MASK[:2, :6]).shape == (2, 32)
    assert d["calibration"]["max_length"] == 6 and d["calibration"]["tokenizer"] == str(tokenizer_dir)


def test_qat_takes_its_example_from_calib(tmp_path) -> None:
    digits = write_digit_folder(tmp_path / "digits", classes=3, per_class=8)
    calib = tmp_path / "digits.npy"
    np.save(calib, np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32))
    res = run_cli("quantize", f"{SEQ}:DigitNet", "--mode", "qat", "--train-data", digits, "--calib", calib,
                  "--preset", "unit", "--channels", "gray", "--input-size", "8", "--batch-size", "6",
                  "-o", tmp_path / "q.pt", "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["calibration"]["example_source"] == str(calib)
    assert ptsq.load(tmp_path / "q.pt").manifest["input"]["shapes"] == [[1, 1, 8, 8]]


def test_a_text_model_without_inputs_names_the_flags(tmp_path) -> None:
    res = run_cli("quantize", ENCODER, "--mode", "dynamic", "-o", tmp_path / "x.pt")
    assert_clean_error(res, "no example_inputs()")
    assert "--calib" in res.stderr and "--tokenizer" in res.stderr


@pytest.mark.parametrize(
    "case,needle",
    [
        ("batch", "disagree on batch size"),
        ("key", "names input 'ids'"),
        ("nan", "NaN values in input_ids"),
        ("empty", "has no lines of text"),
        ("no-tokenizer", "does not exist"),
        ("not-tokenizer", "holds no tokenizer files"),
    ],
)
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_bad_inputs(tmp_path, tokenizer_dir, case, needle, mode) -> None:  # type: ignore[no-untyped-def]
    calib = tmp_path / "inputs.pt"
    extra: list[object] = []
    if case == "batch":
        torch.save((IDS, MASK[:20]), calib)
    elif case == "key":
        torch.save({"ids": IDS, "attention_mask": MASK}, calib)
    elif case == "nan":
        torch.save({"input_ids": IDS.float().index_fill(0, torch.tensor([3]), float("nan")), "attention_mask": MASK},
                   calib)  # fmt: skip
    else:
        calib = tmp_path / "s.txt"
        calib.write_text("\n\n" if case == "empty" else "the cat sat\n")
        tok = {"empty": tokenizer_dir, "no-tokenizer": tmp_path / "nowhere", "not-tokenizer": tmp_path}[case]
        extra = ["--tokenizer", tok]
    out = tmp_path / "out.pt"
    res = run_cli("quantize", ENCODER, "--mode", mode, "--calib", calib, *extra, "-o", out, "--speed-guard", "0")
    assert_clean_error(res, needle)
    _left_nothing(tmp_path, out)

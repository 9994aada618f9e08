"""Model inputs from files (ptsq.data.inputs, ptsq.data.text): layouts matched to forward, and every refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ptsq.data.inputs import model_inputs
from ptsq.data.tensor_inputs import TensorInputs, inputs_from_file
from ptsq.data.tensors import CalibrationTensors
from ptsq.errors import DataError

G = torch.Generator().manual_seed(0)
IDS = torch.randint(0, 50, (10, 7), generator=G)
MASK = torch.ones(10, 7, dtype=torch.long)
FEATS = torch.randn(10, 7, 4, generator=G)


class TwoInputs(nn.Module):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return input_ids.float() * attention_mask


class OneInput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _save(path: Path, value) -> Path:  # type: ignore[no-untyped-def]
    if path.suffix == ".npz":
        np.savez(path, **value) if isinstance(value, dict) else np.savez(path, *value)
    elif path.suffix == ".npy":
        np.save(path, value)
    else:
        torch.save(value, path)
    return path


@pytest.mark.parametrize(
    "name,value",
    [
        ("d.pt", {"input_ids": IDS, "attention_mask": MASK}),
        ("t.pt", (IDS, MASK)),
        ("l.pt", [IDS, MASK]),  # a list is positional inputs for a forward that takes two
        ("n.npz", {"input_ids": IDS.numpy(), "attention_mask": MASK.numpy()}),
        ("p.npz", [IDS.numpy(), MASK.numpy()]),
    ],
)
def test_layouts_give_the_same_inputs(tmp_path, name, value) -> None:
    data = inputs_from_file(_save(tmp_path / name, value), TwoInputs(), num=6, batch_size=4, seed=1)
    batches = list(data)
    assert [len(b["input_ids"] if isinstance(b, dict) else b[0]) for b in batches] == [4, 2]
    first = batches[0]
    ids = first["input_ids"] if isinstance(first, dict) else first[0]
    assert ids.dtype == torch.long  # integer inputs keep their type
    ref = list(inputs_from_file(_save(tmp_path / "ref.pt", (IDS, MASK)), TwoInputs(), num=6, batch_size=4, seed=1))
    assert torch.equal(ids, ref[0][0])  # same seeded subset whatever the layout
    assert data.summary()["used"] == 6


def test_one_input_files(tmp_path) -> None:
    seq = inputs_from_file(_save(tmp_path / "s.npy", FEATS.double().numpy()), OneInput(), batch_size=8)
    assert isinstance(seq, TensorInputs)
    (b,) = next(iter(seq))
    assert b.dtype == torch.float32 and b.shape == (8, 7, 4)  # float64 from numpy becomes float32
    images = inputs_from_file(_save(tmp_path / "i.pt", torch.randn(6, 3, 8, 8)), OneInput())
    assert isinstance(images, CalibrationTensors)  # the image layout keeps its reader
    samples = inputs_from_file(_save(tmp_path / "m.pt", [torch.randn(3, 8, 8)] * 5), OneInput())
    assert isinstance(samples, CalibrationTensors) and samples.found == 5


@pytest.mark.parametrize(
    "value,match",
    [
        ((IDS, MASK[:9]), r"disagree on batch size \(input 0 has 10, input 1 has 9\)"),
        ({"input_ids": IDS, "mask": MASK}, r"names input 'mask', which is not a parameter of TwoInputs.forward"),
        ((IDS, torch.tensor(3)), "without a batch dimension"),
        ((IDS, "text"), "str for input 1"),
        ({"input_ids": IDS[:0], "attention_mask": MASK[:0]}, r"no samples"),
        ((IDS, torch.randn(10, 7, dtype=torch.complex64)), "complex64"),
    ],
)
def test_refusals(tmp_path, value, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match=match) as info:
        list(inputs_from_file(_save(tmp_path / "bad.pt", value), TwoInputs()))
    assert "\n" not in info.value.message and info.value.hint


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_name_the_input_and_sample(tmp_path, bad) -> None:
    feats = FEATS.clone()
    feats[6, 2, 1] = bad
    what = "NaN" if bad != bad else "infinite"
    with pytest.raises(DataError, match=rf"{what} values in input 1 \(first bad sample: index 6\)"):
        list(inputs_from_file(_save(tmp_path / "x.pt", (IDS, feats)), TwoInputs(), batch_size=4))


def test_missing_and_unknown_files(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        model_inputs(tmp_path / "none.pt", TwoInputs())
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="unknown extension"):
        model_inputs(tmp_path / "x.csv", TwoInputs())
    (tmp_path / "s.txt").write_text("one sentence\n")
    with pytest.raises(DataError, match="needs a tokenizer") as info:
        model_inputs(tmp_path / "s.txt", TwoInputs())
    assert "--tokenizer" in info.value.hint


# ------------------------------------------------------------------------------------------------ text
@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) WordPiece tokenizer folder, as Hugging Face saves one."""
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tokenizer")
    words = "the cat sat on a mat dog ran in park sun is warm rain falls".split()
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    (d / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return d


def test_sentences_become_named_inputs(tmp_path, tokenizer_dir) -> None:
    text = tmp_path / "s.txt"
    text.write_text("the cat sat on a mat\n\nthe dog ran in the park\nsun is warm\nrain falls on the cat\n")
    data = model_inputs(text, TwoInputs(), tokenizer=tokenizer_dir, max_length=5, batch_size=3)
    batches = list(data)
    assert [set(b) for b in batches] == [{"input_ids", "attention_mask"}] * 2  # what forward takes, no more
    assert batches[0]["input_ids"].shape == (3, 5) and batches[1]["input_ids"].shape[0] == 1  # blank line skipped
    assert data.summary()["found"] == 4 and data.summary()["max_length"] == 5
    (one,) = next(iter(model_inputs(text, OneInput(), tokenizer=tokenizer_dir)))  # forward without input_ids
    assert one.dtype == torch.long


def test_text_refusals(tmp_path, tokenizer_dir) -> None:
    text = tmp_path / "s.txt"
    text.write_text("the cat\n")
    empty = tmp_path / "e.txt"
    empty.write_text("\n   \n")
    with pytest.raises(DataError, match="has no lines of text"):
        model_inputs(empty, TwoInputs(), tokenizer=tokenizer_dir)
    with pytest.raises(DataError, match=r"tokenizer folder .* does not exist") as info:
        model_inputs(text, TwoInputs(), tokenizer=tmp_path / "nowhere")
    assert "--tokenizer" in info.value.hint
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.bin").write_bytes(b"\0" * 8)
    with pytest.raises(DataError, match="holds no tokenizer files"):
        model_inputs(text, TwoInputs(), tokenizer=tmp_path / "weights")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="is not a Hugging Face tokenizer"):
        model_inputs(text, TwoInputs(), tokenizer=broken)
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        model_inputs(tmp_path / "latin.txt", TwoInputs(), tokenizer=tokenizer_dir)

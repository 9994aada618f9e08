"""Models whose inputs or outputs are not one tensor: several inputs, dicts, tuples and lists."""

from __future__ import annotations

import pytest
import torch

import ptsq
from ptsq.calibration import as_args
from ptsq.config import QuantConfig
from ptsq.data.preprocess import parse_input_sizes
from ptsq.errors import ConfigError, DataError
from ptsq.fidelity import flatten_outputs
from tests.models import DictInOut, OneDictArg, TwoInOut

EXACT = QuantConfig(speed_guard=0)


def _same_structure(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_same_structure(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same_structure(x, y) for x, y in zip(a, b))
    return False


def _close(ref, got, tol=0.25) -> None:
    for r, g in zip(flatten_outputs(ref), flatten_outputs(got)):
        assert (r - g).abs().max() <= tol * max(1.0, float(r.abs().max())), (r, g)


def test_two_inputs_tuple_and_list_outputs(tmp_path):
    torch.manual_seed(0)
    model = TwoInOut().eval()
    calib = [(torch.randn(2, 3, 12, 12), torch.randn(2, 3, 6, 8)) for _ in range(4)]
    qm = ptsq.quantize(model, calib, config=EXACT, progress=False)
    x, y = calib[0]
    ref, got = model(x, y), qm(x, y)
    assert _same_structure(ref, got) and isinstance(got, tuple) and isinstance(got[1], list)
    _close(ref, got)
    assert {r["precision"] for n, r in qm.precision.items() if n in ("a", "b", "fc")} == {"int8"}
    spec = qm.manifest["input"]
    assert spec["shapes"] == [[1, 3, 12, 12], [1, 3, 6, 8]] and spec["names"] == ["[0]", "[1]"]
    art = ptsq.load(qm.save(tmp_path / "two.pt"))
    out = art(x, y)
    assert _same_structure(ref, out)
    _close(got, out, tol=1e-4)
    assert art.input_shapes == [[1, 3, 12, 12], [1, 3, 6, 8]]


def test_dict_batches_become_keyword_inputs_and_dict_output_survives(tmp_path):
    torch.manual_seed(0)
    model = DictInOut().eval()
    calib = [{"aux": torch.randn(2, 4), "image": torch.randn(2, 3, 10, 10)} for _ in range(4)]
    qm = ptsq.quantize(model, calib, config=EXACT, progress=False)
    b = calib[0]
    ref = model(**b)
    got_kw, got_pos = qm(**b), qm(b["aux"], b["image"])  # keyword, or positional in the batches' key order
    assert _same_structure(ref, got_kw) and set(got_kw) == {"mask", "logits"}
    _close(ref, got_kw)
    _close(got_kw, got_pos, tol=1e-6)
    assert qm.manifest["input"]["keywords"] == ["aux", "image"]
    assert qm.manifest["input"]["names"] == ["aux", "image"]
    assert qm.precision["model.conv"]["precision"] == "int8"
    art = ptsq.load(qm.save(tmp_path / "dict.pt"))
    out = art(b["aux"], b["image"])
    assert isinstance(out, dict) and _same_structure(ref, out)
    _close(got_kw, out, tol=1e-4)


def test_dict_batch_with_other_keys_is_one_positional_argument():
    torch.manual_seed(0)
    model = OneDictArg().eval()
    calib = [{"pixels": torch.randn(2, 3, 8, 8), "gain": torch.rand(2, 1, 1, 1) + 0.5} for _ in range(4)]
    qm = ptsq.quantize(model, calib, config=EXACT, progress=False)
    _close(model(calib[0]), qm(calib[0]))
    assert qm.manifest["input"]["names"] == ["[0]['pixels']", "[0]['gain']"]
    assert qm.precision["conv"]["precision"] == "int8"


def test_dict_batches_must_keep_their_keys():
    model = DictInOut().eval()
    good = {"image": torch.randn(2, 3, 8, 8), "aux": torch.randn(2, 4)}
    with pytest.raises(DataError, match="batch 1"):
        ptsq.quantize(model, [good, {"image": good["image"]}, good], config=EXACT, progress=False)
    assert as_args(good) == (good,)


def test_per_input_sizes_parse():
    assert parse_input_sizes("3x224x224,3x112x112") == [(3, 224, 224), (3, 112, 112)]
    assert parse_input_sizes("240,320") == [(3, 240, 320)]
    assert parse_input_sizes("1x28x28") == [(1, 28, 28)]
    assert parse_input_sizes("224x224,112x96", channels=1) == [(1, 224, 224), (1, 112, 96)]
    with pytest.raises(ConfigError):
        parse_input_sizes("3x224x224,axb")

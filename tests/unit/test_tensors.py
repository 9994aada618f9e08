"""Calibration from tensor files (ptsq.data.tensors): formats, subsets, and every refusal."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from ptsq.data.tensors import CalibrationTensors, is_tensor_file
from ptsq.errors import DataError, UnsafeFileError
from ptsq.reproducible import pin_serialization_id

X = torch.randn(50, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _write(path, value):  # type: ignore[no-untyped-def]
    if path.suffix == ".npy":
        np.save(path, value)
    elif path.suffix == ".npz":
        np.savez(path, *value) if isinstance(value, list) else np.savez(path, value)
    else:
        torch.save(value, path)
    return path


@pytest.mark.parametrize(
    "name,value",
    [
        ("a.pt", X),
        ("a.pth", [*X[:20], X[20:]]),  # samples and a batch, mixed
        ("a.npy", X.numpy()),
        ("a.npz", X.numpy()),
        ("b.npz", [X[:10].numpy(), X[10:].numpy()]),
    ],
)
def test_formats_give_the_same_batches(tmp_path, name, value) -> None:
    calib = CalibrationTensors(_write(tmp_path / name, value), num=20, batch_size=8, seed=3)
    batches = list(calib)
    assert [b.shape[0] for b in batches] == [8, 8, 4] and calib.found == 50 and calib.sample_shape == (3, 8, 8)
    ref = list(CalibrationTensors(_write(tmp_path / "ref.pt", X), num=20, batch_size=8, seed=3))
    assert all(torch.equal(a, b) for a, b in zip(batches, ref))  # same seeded subset, whatever the format
    assert all(torch.equal(a, b) for a, b in zip(batches, list(calib)))  # iterating again: same batches
    assert calib.summary()["used"] == 20 and calib.skipped_warning() is None


def test_subset_depends_on_the_seed_and_legacy_files_load(tmp_path) -> None:
    p = tmp_path / "legacy.pt"
    torch.save(X, p, _use_new_zipfile_serialization=False)
    a, b = (torch.cat(list(CalibrationTensors(p, num=10, seed=s))) for s in (0, 1))
    assert not torch.equal(a, b)
    assert torch.equal(torch.cat(list(CalibrationTensors(p, num=100))), X)  # num >= N: all, in file order


def test_is_tensor_file(tmp_path) -> None:
    assert is_tensor_file(_write(tmp_path / "x.npy", X.numpy()))
    assert not is_tensor_file(tmp_path / "missing.pt") and not is_tensor_file(tmp_path)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


@pytest.mark.parametrize(
    "name,value,error,match",
    [
        ("d.pt", {"x": X}, DataError, "holds a dict"),
        ("u.pt", X.to(torch.uint8), DataError, "uint8 values"),
        ("r.pt", X[0], DataError, r"shape \(3, 8, 8\); expected \(N, C, H, W\)"),
        ("m.pt", [X[0], torch.randn(3, 9, 9)], DataError, "element 1 has sample shape"),
        ("e.pt", [], DataError, "empty list"),
        ("z.pt", X[:0], DataError, "no samples"),
        ("o.npy", np.array([1, "a"], dtype=object), UnsafeFileError, "Python objects"),
        ("c.npy", X.numpy().astype(np.complex64), DataError, "complex64"),
        ("s.pt", [X[0], "text"], DataError, "element 1 is a str"),
    ],
)
def test_refusals(tmp_path, name, value, error, match) -> None:
    p = tmp_path / name
    if name == "o.npy":
        np.save(p, value, allow_pickle=True)
    else:
        _write(p, value)
    with pytest.raises(error, match=match) as info:
        list(CalibrationTensors(p))
    assert "\n" not in info.value.message and info.value.hint


def test_pickle_payload_is_refused_not_run(tmp_path) -> None:
    marker = tmp_path / "ran"
    p = tmp_path / "evil.pt"
    torch.save([_Payload(str(marker))], p)
    with pytest.raises(UnsafeFileError, match="it would load"):
        CalibrationTensors(p)
    assert not marker.exists()


def test_non_finite_values_name_the_sample(tmp_path) -> None:
    x = X.clone()
    x[41, 2, 0, 0] = float("-inf")
    with pytest.raises(DataError, match=r"infinite values \(first bad sample: index 41\)"):
        list(CalibrationTensors(_write(tmp_path / "x.pt", x), batch_size=16))


def test_empty_truncated_and_unknown_files(tmp_path) -> None:
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        CalibrationTensors(tmp_path / "e.pt")
    data = (_write(tmp_path / "full.pt", X)).read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot be read"):
        CalibrationTensors(tmp_path / "t.pt")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="unknown extension"):
        CalibrationTensors(tmp_path / "x.csv")


def test_pin_serialization_id_is_deterministic_and_loadable() -> None:
    sd = torch.nn.Linear(4, 4).state_dict()
    bufs = []
    for _ in range(2):
        b = io.BytesIO()
        torch.save(sd, b)
        bufs.append(pin_serialization_id(b.getvalue()))
    assert bufs[0] == bufs[1]
    with zipfile.ZipFile(io.BytesIO(bufs[0])) as zf:
        assert zf.testzip() is None  # every CRC matches
    loaded = torch.load(io.BytesIO(bufs[0]), weights_only=True)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert pin_serialization_id(b"not a zip") == b"not a zip"

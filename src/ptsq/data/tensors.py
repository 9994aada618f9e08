"""Calibration batches from a tensor file: ``.pt``/``.pth`` (torch.save) or ``.npy``/``.npz`` (numpy).

The file holds inputs that are already preprocessed: one float tensor ``(N, C, H, W)``, or a
list/tuple of tensors, each a batch ``(n, C, H, W)`` or one sample ``(C, H, W)`` (all samples the
same shape). An ``.npz`` holds one such array, or several that are read in order as a list.

Loading is safe and light:

* ``torch.load(weights_only=True)`` and ``np.load(allow_pickle=False)``: a file that would need
  to unpickle Python objects is refused (:class:`UnsafeFileError`), never executed.
* ``.pt`` files in the zip format and ``.npy`` files are memory-mapped, so only the chosen
  samples of one batch are copied into memory at a time (``.npz`` files are read whole).
* NaN or infinite values fail with :class:`DataError` naming the file and the first bad sample.

The subset of ``num`` samples is seeded (``torch.Generator().manual_seed(seed)``) and read in
file order; iterating again yields the same batches.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptsq.data.images import check_sampling
from ptsq.data.source import CalibrationSource
from ptsq.errors import DataError, UnsafeFileError, first_line

TENSOR_EXTENSIONS = (".pt", ".pth", ".npy", ".npz")
_SHAPE_HINT = "save a float tensor (N, C, H, W) or a list of tensors (C, H, W), e.g. torch.save(batch, 'calib.pt')"


def is_tensor_file(path: str | Path) -> bool:
    """True if ``path`` is an existing file with a tensor-file extension (see :data:`TENSOR_EXTENSIONS`)."""
    p = Path(path).expanduser()
    return p.is_file() and p.suffix.lower() in TENSOR_EXTENSIONS


Part = Any  # a torch.Tensor or a numpy array (possibly memory-mapped), indexed by sample along axis 0


def _as_part(value: Any) -> Part | None:
    return value if isinstance(value, (torch.Tensor, np.ndarray)) else None


def _short(exc: BaseException) -> str:
    """The first sentence of an error's first line: library messages run on with advice we replace."""
    text = first_line(exc, 300)
    cut = text.find(". ")
    return (text[:cut] if 0 < cut < 150 else text[:150]).rstrip(".")


def _row(part: Part, r: int) -> torch.Tensor:
    if isinstance(part, np.ndarray):  # copy one sample out of the mapping, native float32
        return torch.from_numpy(np.array(part[r], dtype=np.float32, copy=True))
    return part[r].to(torch.float32)


def _file_error(path: Path, problem: str, hint: str = _SHAPE_HINT) -> DataError:
    return DataError(f"calibration file '{path}' {problem}", hint)


def load_torch(path: Path) -> Any:
    """A ``torch.save`` file read safely (``weights_only=True``), memory-mapped when it is a zip archive."""
    try:
        try:  # memory-mapped: only the chosen samples are paged in
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        from ptsq.models import unpickle_detail

        raise UnsafeFileError(
            f"calibration file '{path}' holds pickled Python objects that could run code when loaded"
            + unpickle_detail(exc),
            "save plain tensors: torch.save(tensor_or_list_of_tensors, path), or use a .npy file",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        hint = "check the file is complete (save it again)"
        raise _file_error(path, f"cannot be read: {_short(exc)}", hint) from None


def load_numpy(path: Path) -> Any:
    """An ``.npy`` array (memory-mapped) or an ``.npz`` file's arrays by name, without unpickling."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc) or "Python objects" in str(exc):
            raise UnsafeFileError(
                f"calibration file '{path}' holds Python objects (an object array) that need unpickling",
                "save a numeric array: np.save(path, array.astype(np.float32))",
            ) from None
        raise _file_error(path, f"cannot be read: {_short(exc)}", "check the file is complete") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, IndexError, TypeError) as exc:
        raise _file_error(path, f"cannot be read: {_short(exc)}", "check the file is complete") from None


class CalibrationTensors(CalibrationSource):
    """Batches ``(B, C, H, W)`` from a seeded subset of the samples in a tensor file.

    Same interface as :class:`ptsq.data.CalibrationImages` (``expected_images``, ``summary()``,
    ``skipped_warning()``), so the CLI treats both alike. ``sample_shape`` is ``(C, H, W)``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        num: int = 300,
        batch_size: int = 32,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        check_sampling(num, batch_size, seed)
        self.path = Path(path).expanduser()
        self.source = str(path)
        self.num = num
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        self._parts: list[Part] = self._open()
        # (part, row) for every sample, in file order
        index = [(p, r) for p, t in enumerate(self._parts) for r in range(self._rows(t))]
        self.found = len(index)
        if self.found == 0:
            raise DataError(f"calibration file '{self.path}' holds no samples (N = 0)", _SHAPE_HINT)
        if num >= self.found:
            chosen = list(range(self.found))
        else:
            gen = torch.Generator().manual_seed(seed)
            chosen = sorted(torch.randperm(self.found, generator=gen)[:num].tolist())
        self._index = [(index[i], i) for i in chosen]
        self.used = 0
        self.skipped: list[tuple[Any, str]] = []  # tensor files have no unreadable samples

    # ------------------------------------------------------------------ reading the file

    def _fail(self, problem: str, hint: str = _SHAPE_HINT) -> DataError:
        return DataError(f"calibration file '{self.path}' {problem}", hint)

    def _open(self) -> list[Part]:
        p = self.path
        if not p.exists():
            raise DataError(f"calibration file '{p}' does not exist", "check the path")
        if p.stat().st_size == 0:
            raise self._fail("is empty (0 bytes)", "re-create the file")
        suffix = p.suffix.lower()
        if suffix not in TENSOR_EXTENSIONS:
            raise self._fail(
                f"has an unknown extension {suffix or '(none)'!r}",
                f"use a folder of images or a tensor file ({', '.join(TENSOR_EXTENSIONS)})",
            )
        obj = self._load_numpy(suffix) if suffix in (".npy", ".npz") else self._load_torch()
        return self._parts_of(obj)

    def _load_torch(self) -> Any:
        return load_torch(self.path)

    def _load_numpy(self, suffix: str) -> Any:
        if suffix == ".npy":
            return load_numpy(self.path)
        arrays = list(load_numpy(self.path).values())
        return arrays[0] if len(arrays) == 1 else arrays

    def _parts_of(self, obj: Any) -> list[Part]:
        single = _as_part(obj)
        if single is not None:
            self._check_dtype(single, "")
            if single.ndim != 4:
                hint = _SHAPE_HINT
                if single.ndim == 3:
                    hint = (
                        "a single (C, H, W) sample or (N, H, W) without channels: add the missing axis, e.g. x[:, None]"
                    )
                raise self._fail(f"holds a tensor of shape {tuple(single.shape)}; expected (N, C, H, W)", hint)
            return [single]
        if isinstance(obj, (list, tuple)):
            if not obj:
                raise self._fail("holds an empty list", _SHAPE_HINT)
            parts: list[Part] = []
            for i, item in enumerate(obj):
                t = _as_part(item)
                if t is None:
                    raise self._fail(f"element {i} is a {type(item).__name__}, not a tensor")
                self._check_dtype(t, f"element {i} ")
                if t.ndim == 3:
                    t = t[None]
                elif t.ndim != 4:
                    raise self._fail(f"element {i} has shape {tuple(t.shape)}; expected (C, H, W) or (n, C, H, W)")
                if parts and t.shape[1:] != parts[0].shape[1:]:
                    raise self._fail(
                        f"element {i} has sample shape {tuple(t.shape[1:])} but element 0 has "
                        f"{tuple(parts[0].shape[1:])}",
                        "give every sample the same (C, H, W) shape",
                    )
                parts.append(t)
            return parts
        kind = type(obj).__name__
        if isinstance(obj, dict):
            keys = ", ".join(repr(k) for k in list(obj)[:5])
            raise self._fail(f"holds a dict (keys {keys}), not a tensor or a list of tensors")
        raise self._fail(f"holds a {kind}, not a tensor or a list of tensors")

    def _check_dtype(self, t: Part, where: str) -> None:
        if isinstance(t, np.ndarray):
            ok = t.dtype.kind == "f"
        else:
            ok = t.is_floating_point() and t.layout == torch.strided and not t.is_quantized
        if not ok:
            dtype = str(t.dtype).replace("torch.", "")
            layout = "" if isinstance(t, np.ndarray) or t.layout == torch.strided else f" ({t.layout})"
            raise self._fail(
                f"{where}holds {dtype}{layout} values, not dense floating-point model inputs",
                "preprocess the data into float32 (e.g. x.float() / 255 and normalise) before saving",
            )

    @staticmethod
    def _rows(t: Part) -> int:
        return int(t.shape[0])

    # ------------------------------------------------------------------ iterating

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._parts[0].shape[1:])

    @property
    def expected_images(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[torch.Tensor]:
        self.used = 0
        for start in range(0, len(self._index), self.batch_size):
            chunk = self._index[start : start + self.batch_size]
            batch = torch.stack([_row(self._parts[p], r) for (p, r), _ in chunk])
            finite = torch.isfinite(batch.flatten(1)).all(dim=1)
            if not bool(finite.all()):
                bad = chunk[int((~finite).nonzero()[0, 0])][1]
                what = "NaN" if bool(torch.isnan(batch).any()) else "infinite"
                raise DataError(
                    f"calibration file '{self.path}' holds {what} values (first bad sample: index {bad})",
                    "clean the data: observers would record a meaningless range (check for division by zero)",
                )
            self.used += len(chunk)
            if self.progress is not None:
                self.progress(self.used)
            yield batch


__all__ = ["TENSOR_EXTENSIONS", "CalibrationTensors", "is_tensor_file", "load_numpy", "load_torch"]

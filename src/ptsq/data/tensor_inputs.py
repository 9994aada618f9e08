"""Model inputs from a file, for every mode: tensors saved with torch.save or numpy, or sentences + a tokenizer.

:func:`inputs_from_file` reads a tensor file, or a text file with ``tokenizer=`` (:mod:`ptsq.data.text`);
:func:`ptsq.data.inputs.calibration_source` sends folders of images elsewhere. What a tensor file may
hold, matched to the model's ``forward``:

* **a tensor** ``(N, ...)``: the model's one input, ``N`` samples;
* **a tuple** of tensors (or a list, when ``forward`` takes more than one input): positional inputs;
* **a dict** of named tensors (or an ``.npz`` whose array names are ``forward`` parameters): keyword
  inputs; every key must name a parameter of ``forward``;

each with the same leading (batch) size ``N``. Floating-point values become float32 (numpy saves float64
by default); integer and bool inputs (token ids, masks, indices) keep their type. NaN or infinite values
are refused, naming the input and the sample. A seeded subset of ``num`` samples is read in file order,
in batches of ``batch_size``.

The older image layout keeps its meaning: a 4-D float tensor, or a list of ``(C, H, W)`` samples or
``(n, C, H, W)`` batches for a model with one input, is read by :class:`~ptsq.data.tensors.CalibrationTensors`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ptsq.calibration import positional_arity
from ptsq.data.images import check_sampling
from ptsq.data.source import CalibrationSource
from ptsq.data.tensors import TENSOR_EXTENSIONS, CalibrationTensors, load_numpy, load_torch
from ptsq.errors import DataError

TEXT_EXTENSIONS = (".txt",)
INPUTS_HINT = (
    "save the inputs with torch.save: a tensor, a tuple of tensors in forward's order, or a dict naming "
    "forward's parameters, each with the same leading batch size (--calib inputs.pt)"
)


def forward_parameters(model: nn.Module) -> tuple[list[str], bool]:
    """Names of ``model.forward``'s parameters, and whether it also takes ``**kwargs``."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _is_array(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray))


def _legacy_layout(obj: Any, model: nn.Module | None) -> bool:
    """The older image calibration layout (see the module doc), read by CalibrationTensors."""
    one_input = model is None or positional_arity(model) == 1
    if _is_array(obj):
        floating = obj.is_floating_point() if isinstance(obj, torch.Tensor) else obj.dtype.kind == "f"
        return obj.ndim == 4 and floating and one_input
    return isinstance(obj, list) and one_input and all(_is_array(t) for t in obj)


class TensorInputs(CalibrationSource):
    """Batches of model inputs (tuples, or dicts of named inputs) from a seeded subset of a tensor file."""

    def __init__(
        self,
        path: str | Path,
        model: nn.Module | None = None,
        *,
        content: Any = None,
        num: int = 300,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        check_sampling(num, batch_size, seed)
        self.path = Path(path).expanduser()
        self.source, self.num, self.batch_size, self.seed = str(path), num, batch_size, seed
        obj = content if content is not None else read_tensor_file(self.path)
        self.names, self._parts = self._parts_of(obj, model)
        self.found = int(self._parts[0].shape[0])
        if self.found == 0:
            raise self._fail("holds no samples (N = 0)")
        if num >= self.found:
            self._index = list(range(self.found))
        else:
            gen = torch.Generator().manual_seed(seed)
            self._index = sorted(torch.randperm(self.found, generator=gen)[:num].tolist())
        self.used = 0

    def _fail(self, problem: str, hint: str = INPUTS_HINT) -> DataError:
        return DataError(f"calibration file '{self.path}' {problem}", hint)

    def _parts_of(self, obj: Any, model: nn.Module | None) -> tuple[tuple[str, ...] | None, list[Any]]:
        if isinstance(obj, dict):
            if not obj or not all(isinstance(k, str) for k in obj):
                raise self._fail("holds a dict whose keys are not input names")
            if model is not None:
                params, any_kw = forward_parameters(model)
                for k in obj:
                    if k not in params and not any_kw:
                        raise self._fail(
                            f"names input '{k}', which is not a parameter of "
                            f"{type(model).__name__}.forward({', '.join(params)})",
                            "name each tensor after one of forward's parameters, or save a tuple in forward's order",
                        )
            names: tuple[str, ...] | None = tuple(obj)
            items = list(obj.items())
        elif isinstance(obj, (tuple, list)):
            if not obj:
                raise self._fail("holds an empty tuple")
            names, items = None, [(f"input {i}", v) for i, v in enumerate(obj)]
        else:
            names, items = None, [("the tensor", obj)]
        parts = []
        for label, value in items:
            if not _is_array(value):
                raise self._fail(f"holds {type(value).__name__} for {label}, not a tensor")
            self._check_dtype(value, label)
            if value.ndim == 0:
                raise self._fail(f"holds a single number for {label}, without a batch dimension")
            parts.append(value)
        sizes = {label: int(v.shape[0]) for (label, _), v in zip(items, parts)}
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{k} has {n}" for k, n in sizes.items())
            raise self._fail(
                f"holds inputs that disagree on batch size ({listed})",
                "give every input the same leading (batch) dimension, one row per sample",
            )
        return names, parts

    def _check_dtype(self, t: Any, label: str) -> None:
        kind = t.dtype.kind if isinstance(t, np.ndarray) else None
        if isinstance(t, torch.Tensor):
            ok = t.layout == torch.strided and not t.is_quantized and not t.is_complex()
        else:
            ok = kind in ("f", "i", "u", "b")
        if not ok:
            raise self._fail(
                f"holds {str(t.dtype).replace('torch.', '')} values for {label}, not real numbers",
                "save float, integer or bool tensors",
            )

    # ------------------------------------------------------------------ iterating

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._parts[0].shape[1:])

    @property
    def expected_images(self) -> int:
        return len(self._index)

    def _take(self, part: Any, rows: list[int], label: str) -> torch.Tensor:
        if isinstance(part, np.ndarray):
            t = torch.from_numpy(np.array(part[rows], copy=True))
        else:
            t = part[rows].clone()
        if t.is_floating_point():
            t = t.to(torch.float32)
            finite = torch.isfinite(t.reshape(len(rows), -1)).all(dim=1)
            if not bool(finite.all()):
                bad = rows[int((~finite).nonzero()[0, 0])]
                what = "NaN" if bool(torch.isnan(t).any()) else "infinite"
                raise self._fail(
                    f"holds {what} values in {label} (first bad sample: index {bad})",
                    "clean the data: observers would record a meaningless range",
                )
        return t

    def __iter__(self) -> Iterator[Any]:
        self.used = 0
        labels = self.names or tuple(f"input {i}" for i in range(len(self._parts)))
        for start in range(0, len(self._index), self.batch_size):
            rows = self._index[start : start + self.batch_size]
            tensors = [self._take(p, rows, lab) for p, lab in zip(self._parts, labels)]
            self.used += len(rows)
            if self.names is not None:
                yield dict(zip(self.names, tensors))
            else:
                yield tuple(tensors)

    def summary(self) -> dict[str, object]:
        return {**super().summary(), "inputs": list(self.names) if self.names else len(self._parts)}


def read_tensor_file(path: Path) -> Any:
    """The content of a tensor file, read without unpickling code (see :mod:`ptsq.data.tensors`)."""
    if not path.exists():
        raise DataError(f"calibration file '{path}' does not exist", "check the path")
    if path.stat().st_size == 0:
        raise DataError(f"calibration file '{path}' is empty (0 bytes)", "re-create the file")
    if path.suffix.lower() in (".npy", ".npz"):
        return load_numpy(path)
    return load_torch(path)


def _npz_content(content: dict[str, Any], model: nn.Module | None) -> Any:
    """An .npz's arrays: named inputs when the names are forward parameters, else positional in order."""
    if model is not None:
        params, _ = forward_parameters(model)
        if all(k in params for k in content):
            return content
    values = list(content.values())
    if len(values) == 1:
        return values[0]
    return values if model is None or positional_arity(model) == 1 else tuple(values)


def inputs_from_file(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    tokenizer: str | Path | None = None,
    max_length: int = 128,
    num: int = 300,
    batch_size: int = 32,
    seed: int = 0,
) -> Any:
    """Calibration/check batches from a tensor file, or from a text file with ``tokenizer``."""
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if tokenizer is not None or suffix in TEXT_EXTENSIONS:
        from ptsq.data.text import TextInputs

        if tokenizer is None:
            raise DataError(
                f"calibration file '{p}' is text, and text needs a tokenizer",
                "pass --tokenizer DIR (a local Hugging Face tokenizer folder), or save token ids with torch.save",
            )
        return TextInputs(p, tokenizer, model, max_length=max_length, num=num, batch_size=batch_size, seed=seed)
    if suffix not in TENSOR_EXTENSIONS:
        raise DataError(
            f"calibration file '{p}' has an unknown extension {suffix or '(none)'!r}",
            f"use a folder of images, a tensor file ({', '.join(TENSOR_EXTENSIONS)}), or a .txt file with --tokenizer",
        )
    content = read_tensor_file(p)
    if suffix == ".npz":
        content = _npz_content(content, model)
    if _legacy_layout(content, model):
        return CalibrationTensors(p, num=num, batch_size=batch_size, seed=seed)
    return TensorInputs(p, model, content=content, num=num, batch_size=batch_size, seed=seed)


__all__ = ["INPUTS_HINT", "TEXT_EXTENSIONS", "TensorInputs", "forward_parameters", "inputs_from_file"]

"""Feed calibration batches to an observed model, holding a few back for the self-check.

Accepts any iterable of batches: a tensor, a tuple/list of positional inputs, a DataLoader's
``(inputs, labels)`` pair, or a dict. Batches are taken as given: a pair is ``(inputs, labels)`` (and
the labels are dropped) only when the model's ``forward`` takes one positional input, or when the
caller says so (``labelled=True``); never because its second tensor happens to hold integers. A dict
whose keys name parameters of the model's ``forward`` is passed as keyword inputs (through
:class:`KeywordInputs`, which takes them positionally in the order of the first batch's keys, as FX
needs); any other dict is passed as one positional argument. Batches are streamed, never collected.

The *example* (what tracing, the speed guard and the manifest's input spec use) is one sample of the
first batch when that is a faithful sample: every input tensor shares the leading (batch) size and
the model runs on a single sample. Otherwise -- ``forward`` splits or pairs up the batch, or the
inputs have no common batch dimension (``EmbeddingBag`` indices and offsets) -- it is the whole first
batch, as given (:func:`example_from_batch`).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import keystr, tree_flatten_with_path

from ptsq.errors import DataError, InputShapeError, first_line

Transform = Callable[[Any], Any]


def positional_arity(model: nn.Module) -> int | None:
    """How many positional inputs ``model.forward`` takes at most; None when it takes ``*args`` or is opaque."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def is_labelled(batch: Any, model: nn.Module | None = None, labelled: bool | None = None) -> bool:
    """Whether ``batch`` is an ``(inputs, labels)`` pair: said so explicitly, or a pair given to a
    ``forward`` that takes one positional input (a labelled DataLoader fed to a classifier)."""
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        return False
    if labelled is not None:
        return labelled
    return model is not None and positional_arity(model) == 1


def as_args(batch: Any, model: nn.Module | None = None, labelled: bool | None = None) -> tuple[Any, ...]:
    """Turn one calibration batch into positional model inputs (labels dropped, see :func:`is_labelled`)."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, dict):
        return (batch,)  # one dict argument, or keyword inputs: see keyword_inputs()
    if isinstance(batch, (list, tuple)):
        if is_labelled(batch, model, labelled):
            inputs = batch[0]
            return (inputs,) if model is not None and positional_arity(model) == 1 else as_args(inputs)
        return tuple(batch)
    raise DataError(
        f"a calibration batch is a {type(batch).__name__}, not a tensor or a tuple of tensors",
        "yield tensors (N, C, H, W) from the calibration iterable, or pass a transform",
    )


def batch_size(args: tuple[Any, ...]) -> int:
    leaves = tree_flatten_with_path(args)[0]
    for _, a in leaves:
        if isinstance(a, torch.Tensor) and a.dim() > 0:
            return int(a.shape[0])
    return 1


class KeywordInputs(nn.Module):
    """Call ``model`` with keyword inputs given positionally in the fixed order ``names``.

    FX (``prepare_fx``) and TorchScript take example inputs as a tuple; this adapter's ``forward``
    has one named parameter per input, so the quantized module and the artifact take them in that
    order, positionally or by name.
    """

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def extra_repr(self) -> str:
        return f"names={self.names}"


def _keyword_class(names: tuple[str, ...]) -> type[KeywordInputs]:
    params = ", ".join(names)
    call = ", ".join(f"{n}={n}" for n in names)
    ns: dict[str, Any] = {}
    exec(f"def forward(self, {params}):\n    return self.model({call})\n", ns)  # names are identifiers
    return type("KeywordInputs", (KeywordInputs,), {"forward": ns["forward"]})


def keyword_inputs(model: nn.Module, first: tuple[Any, ...]) -> tuple[str, ...] | None:
    """The keyword names when ``first`` is one dict batch naming ``model.forward`` parameters."""
    if len(first) != 1 or not isinstance(first[0], dict) or not first[0]:
        return None
    keys = tuple(first[0])
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    takes = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not all(isinstance(k, str) and k.isidentifier() and k in takes for k in keys):
        return None
    return keys


def adapt_keywords(model: nn.Module, stream: CalibrationStream) -> nn.Module:
    """Wrap ``model`` in :class:`KeywordInputs` if the batches are keyword inputs; else return it."""
    names = keyword_inputs(model, stream.first)
    if names is None:
        return model
    stream.set_keywords(names)
    return _keyword_class(names)(model, names).eval()


def as_positional(
    model: nn.Module, batches: list[Any], labelled: bool | None = None
) -> tuple[nn.Module, list[tuple[Any, ...]], tuple[str, ...] | None]:
    """(model to call, each batch as positional inputs, keyword names or None) for collected batches.

    Dict batches naming ``forward`` parameters become positional: in ``forward``'s own order when the
    keys are its leading parameters (no wrapper needed), else through :class:`KeywordInputs`.
    """
    args = [as_args(b, model, labelled) for b in batches]
    names = keyword_inputs(model, args[0]) if args else None
    if names is None:
        return model, args, None
    params = list(inspect.signature(model.forward).parameters)
    ordered = tuple(params[: len(names)])
    if set(ordered) == set(names):
        names, runner = ordered, model
    else:
        runner = _keyword_class(names)(model, names).eval()
    out = []
    for i, a in enumerate(args):
        if len(a) != 1 or not isinstance(a[0], dict) or set(a[0]) != set(names):
            raise DataError(
                f"batch {i} has inputs {sorted(a[0]) if isinstance(a[0], dict) else type(a[0]).__name__}, "
                f"the first had {sorted(names)}",
                "give every batch the same keyword inputs",
            )
        out.append(tuple(a[0][n] for n in names))
    return runner, out, names


def describe_inputs(args: tuple[Any, ...], names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Every tensor in the inputs (nested tuples/lists/dicts too): its path, shape and dtype."""
    out = []
    for path, leaf in tree_flatten_with_path(args)[0]:
        if not isinstance(leaf, torch.Tensor):
            continue
        key = keystr(path)
        if names:  # "[0]" -> "image"
            idx = path[0].idx if hasattr(path[0], "idx") else None
            if idx is not None and idx < len(names):
                key = names[idx] + keystr(path[1:])
        out.append({"name": key, "shape": list(leaf.shape), "dtype": str(leaf.dtype).replace("torch.", "")})
    return out


def check_finite(args: tuple[Any, ...], index: int) -> None:
    for _, a in tree_flatten_with_path(args)[0]:
        if isinstance(a, torch.Tensor) and a.is_floating_point() and not bool(torch.isfinite(a).all()):
            raise DataError(
                f"calibration batch {index} contains NaN or infinite values",
                "clean the calibration data (observers would record a meaningless range)",
            )


def first_sample(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The first sample of a batch: tensors (also a dict's values) sliced to batch 1; lists kept."""

    def one(a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.dim() > 0:
            return a[:1]
        if isinstance(a, dict):
            return {k: one(v) for k, v in a.items()}
        return a  # a list of per-image tensors (detection) is a batch of its own kind

    return tuple(one(a) for a in args)


def _leading_sizes(args: tuple[Any, ...]) -> set[int]:
    """Leading sizes of the input tensors a batch would be sliced along (see :func:`first_sample`)."""
    sizes: set[int] = set()

    def visit(a: Any) -> None:
        if isinstance(a, torch.Tensor):
            sizes.add(int(a.shape[0]) if a.dim() else -1)
        elif isinstance(a, dict):
            for v in a.values():
                visit(v)

    for a in args:
        visit(a)
    return sizes


def _runs(model: nn.Module, args: tuple[Any, ...]) -> str | None:
    """None if ``model`` accepts ``args``, else the first line of its error."""
    try:
        with torch.inference_mode():
            model(*args)
    except Exception as exc:  # the model's own error is what the user needs to see
        return first_line(exc)
    return None


def example_from_batch(model: nn.Module, batch: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None]:
    """The example inputs taken from the first batch, and a note when it is the whole batch.

    One sample when every input tensor shares a leading batch size above 1 and the model accepts one
    sample; the whole batch otherwise. Raises :class:`InputShapeError` if the model rejects the batch.
    """
    sizes = _leading_sizes(batch)
    one_error = None
    if len(sizes) == 1 and next(iter(sizes)) > 1:
        one = first_sample(batch)
        one_error = _runs(model, one)
        if one_error is None:
            return one, None
        why = "the model rejects a single sample (its forward needs the batch)"
    elif len(sizes) > 1:
        why = "its inputs have no common leading batch size"
    else:
        why = ""
    error = _runs(model, batch)
    if error is not None:  # report what a single sample got: the usual case is a wrong shape, not the batch
        shown, error = (first_sample(batch), one_error) if one_error is not None else (batch, error)
        raise InputShapeError(
            f"the model rejects inputs of shape {describe_args(shown)}: {error}",
            "give inputs the model accepts (--calib FILE with its tensors, --tokenizer for text, "
            "--input-size or --preset/--channels for images)",
        )
    n = f" ({batch_size(batch)} samples)" if len(sizes) == 1 else ""
    note = f"example inputs: the whole first batch{n}, as {why}" if why else None
    return batch, note


def describe_args(args: tuple[Any, ...]) -> str:
    """``(1, 3, 8, 8) float32, (4,) int64`` for error messages (nested structures by type name)."""
    return ", ".join(
        f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')}" if isinstance(a, torch.Tensor) else type(a).__name__
        for a in args
    )


AUTO_CHECK_SAMPLES = 32  # held back by default: fewer give agreement figures too coarse to judge by
AUTO_CHECK_FRACTION = 8  # ... or an eighth of a larger calibration set
MAX_CHECK_FRACTION = 4  # but never more than a quarter: calibration keeps at least three quarters of the data


def slice_batch(args: tuple[Any, ...], start: int, stop: int) -> tuple[Any, ...]:
    """Samples ``start:stop`` of a batch: tensors (also inside dicts) and lists along their first axis."""

    def cut(a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.dim() > 0:
            return a[start:stop]
        if isinstance(a, dict):
            return {k: cut(v) for k, v in a.items()}
        if isinstance(a, list):
            return a[start:stop]
        return a

    return tuple(cut(a) for a in args)


def _sliceable(args: tuple[Any, ...]) -> bool:
    """Whether every batched leaf has the same first dimension, so the batch can be cut by samples."""
    n = batch_size(args)
    leaves = tree_flatten_with_path(args)[0]
    return all(not isinstance(a, torch.Tensor) or a.dim() == 0 or a.shape[0] == n for _, a in leaves)


def check_target(requested: int, total: int | None) -> int:
    """How many samples to hold back: ``requested``, or (0) 32 or an eighth of a larger set, at most a quarter."""
    if requested > 0:
        return requested
    target = max(AUTO_CHECK_SAMPLES, (total or 0) // AUTO_CHECK_FRACTION)
    return min(target, total // MAX_CHECK_FRACTION) if total is not None else target


class CalibrationStream:
    """Iterate batches once: peek the first, calibrate on all but the last ``hold_samples`` samples.

    Samples are held back, not batches: the held-back set is the last ``hold_samples`` samples of the
    stream (a batch is cut in two where needed), never the leftovers of a short last batch. 0 holds
    back 32 samples, or an eighth of the data when the total is known and that is more, and never more
    than a quarter of it (so 128 samples or more give the self-check the 32 a verdict needs). An explicit
    count larger than the data is an error.
    """

    def __init__(
        self,
        source: Iterable[Any],
        *,
        transform: Transform | None = None,
        hold_samples: int = 0,
        progress: Callable[[int], None] | None = None,
        model: nn.Module | None = None,
        labelled: bool | None = None,
        expected: int | None = None,
    ) -> None:
        if isinstance(source, (torch.Tensor, str, bytes)):
            raise DataError(
                f"calibration data must be an iterable of batches, not a single {type(source).__name__}",
                "pass a list of tensors, a DataLoader, or ptsq.data.CalibrationImages(folder, preprocess)",
            )
        try:
            self._it: Iterator[Any] = iter(source)
        except TypeError:
            raise DataError(
                f"calibration data of type {type(source).__name__} is not iterable",
                "pass a list of tensors, a DataLoader, or ptsq.data.CalibrationImages(folder, preprocess)",
            ) from None
        self._transform = transform
        self._progress = progress
        self._model = model
        self._labelled = labelled
        self._keywords: tuple[str, ...] | None = None
        if expected is None and isinstance(source, (list, tuple)) and transform is None:
            try:
                expected = sum(batch_size(as_args(b, model, labelled)) for b in source)
            except DataError:
                expected = None
        self.requested = max(0, hold_samples)
        if self.requested and expected is not None and self.requested >= expected:
            raise _too_many(self.requested, expected)
        self.target = check_target(self.requested, expected)
        self._index = 0
        self.first = self._next()
        if self.first is None:
            raise DataError("the calibration data is empty", "give at least one batch of inputs")
        self.held: list[tuple[Any, ...]] = []
        self.calibrated_samples = 0
        self.calibrated_batches = 0
        self.in_sample_check = False  # True when there was too little data to hold any back

    @property
    def held_samples(self) -> int:
        return sum(batch_size(a) for a in self.held)

    def _next(self) -> tuple[Any, ...] | None:
        try:
            batch = next(self._it)
        except StopIteration:
            return None
        args = as_args(self._transform(batch) if self._transform else batch, self._model, self._labelled)
        check_finite(args, self._index)
        self._index += 1
        return self._positional(args) if self._keywords else args

    def set_keywords(self, names: tuple[str, ...]) -> None:
        """From now on (and for the first batch), dict batches become positional in ``names`` order."""
        self._keywords = names
        self.first = self._positional(self.first) if self.first is not None else None

    def _positional(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        names = self._keywords or ()
        if len(args) != 1 or not isinstance(args[0], dict) or set(args[0]) != set(names):
            got = sorted(args[0]) if len(args) == 1 and isinstance(args[0], dict) else type(args[0]).__name__
            raise DataError(
                f"calibration batch {self._index - 1} has inputs {got}, the first had {sorted(names)}",
                "give every batch the same keyword inputs",
            )
        return tuple(args[0][n] for n in names)

    def run(self, fn: Callable[..., Any]) -> int:
        """Call ``fn(*args)`` for each calibration batch; return the number of samples seen."""
        window: deque[tuple[Any, ...]] = deque()
        in_window = 0
        batch: tuple[Any, ...] | None = self.first
        while batch is not None:
            window.append(batch)
            in_window += batch_size(batch)
            while window and in_window - batch_size(window[0]) >= self.target:  # the rest still covers the target
                in_window -= batch_size(window[0])
                self._feed(fn, window.popleft())
            batch = self._next()
        total = self.calibrated_samples + in_window
        if self.requested and self.requested >= total:
            raise _too_many(self.requested, total)
        hold = self.target if self.requested else min(self.target, total // MAX_CHECK_FRACTION)
        self.held = []
        if hold <= 0:  # too few samples to spare any: calibrate on them and check on them too
            for args in window:
                self._feed(fn, args)
            self.held = list(window)
            self.in_sample_check = True
            return self.calibrated_samples
        excess = in_window - hold  # the window's first samples go to calibration
        for args in window:
            n = batch_size(args)
            if excess >= n:
                self._feed(fn, args)
                excess -= n
            elif excess > 0 and _sliceable(args):
                self._feed(fn, slice_batch(args, 0, excess))
                self.held.append(slice_batch(args, excess, n))
                excess = 0
            else:
                self.held.append(args)  # a batch that cannot be cut is held back whole
        if self.calibrated_batches == 0 and self.held:  # nothing left to calibrate on
            for args in self.held:
                self._feed(fn, args)
            self.in_sample_check = True
        else:
            self.in_sample_check = False
        return self.calibrated_samples

    def _feed(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        fn(*args)
        self.calibrated_samples += batch_size(args)
        self.calibrated_batches += 1
        if self._progress is not None:
            self._progress(self.calibrated_samples)


def _too_many(requested: int, total: int) -> DataError:
    return DataError(
        f"--check-samples {requested} is not less than the {total} calibration samples",
        f"hold back fewer (e.g. --check-samples {max(1, total // 4)}) or give more calibration data",
    )

"""fp32 islands: submodules ``torch.export`` cannot capture, run as TorchScript inside the exported program.

When export fails on a line of a submodule's ``forward`` (data-dependent control flow, say), every
instance of that submodule's class is scripted (``torch.jit.script``, not traced: tracing would bake in
the branch the example took) and replaced, in the engine's working copy, by a call to a custom op
``ptsq_island::island_<digest>`` that runs the script. Export then sees one opaque op; the quantizer
leaves it unannotated, so it takes and returns fp32 values and the rest of the model is int8.

The op's name is a digest of the script's bytes and its output spec, so the process that quantizes
and the one that loads the .pt2 (where the scripts are stored) agree on it and one registration per
process serves both. Its fake (shape) implementation replays the output shapes of the example run;
an output dimension equal to the first input's same dimension on that run follows the input (export
makes the batch and image sizes dynamic), and the real implementation refuses outputs that break that
rule rather than let compiled code assume wrong shapes.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ptsq.engines.common import run_with_hooks
from ptsq.reproducible import pin_serialization_id

NAMESPACE = "ptsq_island"
MAX_ISLANDS = 8
_LIBRARY: torch.library.Library | None = None
_REGISTERED: set[str] = set()


@dataclass(frozen=True)
class IslandSpec:
    """What a .pt2 needs to run one island: its script, input count and output shapes."""

    inputs: int
    shapes: tuple[tuple[int, ...], ...]  # each output's shape on the example run
    follow: tuple[tuple[bool, ...], ...]  # which output dims follow the first input's same dim
    dtypes: tuple[str, ...]
    as_tuple: bool  # forward returns a tuple (else one tensor)

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "shapes": [list(s) for s in self.shapes],
            "follow": [list(f) for f in self.follow],
            "dtypes": list(self.dtypes),
            "tuple": self.as_tuple,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IslandSpec:
        return cls(
            inputs=int(d["inputs"]),
            shapes=tuple(tuple(int(n) for n in s) for s in d["shapes"]),
            follow=tuple(tuple(bool(b) for b in f) for f in d["follow"]),
            dtypes=tuple(str(t) for t in d["dtypes"]),
            as_tuple=bool(d["tuple"]),
        )

    def expected(self, first: torch.Tensor, i: int) -> list[Any]:
        return [first.shape[d] if f else n for d, (n, f) in enumerate(zip(self.shapes[i], self.follow[i]))]


@dataclass
class Island:
    """One island as the engine and the artifact see it."""

    op: str  # op name inside NAMESPACE
    modules: list[str]  # qualified names of the instances it replaced
    cls: str  # their class
    reason: str  # why export could not capture them
    script: bytes  # TorchScript archive
    spec: IslandSpec

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.script).hexdigest()

    def manifest_entry(self) -> dict[str, Any]:
        return {"op": self.op, "modules": self.modules, "class": self.cls, "sha256": self.sha256,
                "spec": self.spec.to_json()}  # fmt: skip


def op_name(script: bytes, spec: IslandSpec) -> str:
    """The op's name: a digest of what it runs and the shapes it promises."""
    h = hashlib.sha256(script)
    h.update(json.dumps(spec.to_json(), sort_keys=True).encode())
    return "island_" + h.hexdigest()[:24]


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def register(op: str, script: bytes, spec: IslandSpec) -> None:
    """Register ``ptsq_island::<op>`` running ``script`` (once per process)."""
    global _LIBRARY
    if op in _REGISTERED:
        return
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library(NAMESPACE, "FRAGMENT")  # kept for the process: its ops live with it
    scripted = torch.jit.load(io.BytesIO(script), map_location="cpu")
    dtypes = [_dtype(t) for t in spec.dtypes]
    args = ", ".join(f"Tensor x{i}" for i in range(spec.inputs))
    outs = "(" + ", ".join(["Tensor"] * len(spec.shapes)) + ")" if spec.as_tuple else "Tensor"
    _LIBRARY.define(f"{op}({args}) -> {outs}")

    def real(*xs: torch.Tensor) -> Any:
        with torch.no_grad():
            out = scripted(*xs)
        outs = list(out) if spec.as_tuple else [out]
        taken = {x.untyped_storage().data_ptr() for x in xs}
        for i, o in enumerate(outs):
            want = spec.expected(xs[0], i)
            if list(o.shape) != want:
                raise RuntimeError(
                    f"fp32 island {op}: output {i} has shape {list(o.shape)} where the example run's rule gives "
                    f"{want}; quantize again with example inputs of this size"
                )
            if o.untyped_storage().data_ptr() in taken:  # a custom op's outputs alias neither inputs nor each other
                outs[i] = o = o.clone()
            taken.add(o.untyped_storage().data_ptr())
        return tuple(outs) if spec.as_tuple else outs[0]

    def fake(*xs: torch.Tensor) -> Any:
        outs = [xs[0].new_empty(spec.expected(xs[0], i), dtype=dtypes[i]) for i in range(len(spec.shapes))]
        return tuple(outs) if spec.as_tuple else outs[0]

    _LIBRARY.impl(op, real, "CompositeExplicitAutograd")
    torch.library.register_fake(f"{NAMESPACE}::{op}", fake, lib=_LIBRARY)
    _REGISTERED.add(op)


class IslandCall(nn.Module):
    """Stands in for an island in the engine's working copy: calls its op."""

    def __init__(self, op: str, cls: str) -> None:
        super().__init__()
        self.op = op
        self.island_of = cls

    def forward(self, *xs: torch.Tensor) -> Any:
        return getattr(torch.ops.ptsq_island, self.op)(*xs)


def _source_span(cls: type) -> tuple[str, int, int] | None:
    forward = getattr(cls, "forward", None)
    try:
        path = inspect.getsourcefile(forward)  # type: ignore[arg-type]
        lines, start = inspect.getsourcelines(forward)  # type: ignore[arg-type]
    except (TypeError, OSError):
        return None
    return (os.path.realpath(path), start, start + len(lines)) if path else None


def holders(model: nn.Module, path: str, line: int) -> list[str]:
    """Qualified names of the submodules to keep as islands for a failure at ``path:line``.

    The deepest submodule (never the root) whose class's ``forward`` holds the line decides the class;
    every instance of that class not inside another one is returned. [] when only the root holds it.
    """
    where = os.path.realpath(path)
    spans: dict[type, tuple[str, int, int] | None] = {}
    best: tuple[int, str] | None = None
    for name, m in model.named_modules():
        if not name or isinstance(m, IslandCall):
            continue
        cls = type(m)
        if cls not in spans:
            spans[cls] = _source_span(cls)
        span = spans[cls]
        if span and span[0] == where and span[1] <= line < span[2]:
            depth = name.count(".") + 1
            if best is None or depth > best[0]:
                best = (depth, name)
    if best is None:
        return []
    cls = type(model.get_submodule(best[1]))
    names = [n for n, m in model.named_modules() if n and type(m) is cls]
    return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


class IslandError(Exception):
    """Why a submodule cannot be an island (one line)."""


def script_bytes(module: nn.Module) -> bytes:
    """``module`` as a TorchScript archive, byte-identical for identical modules (no source paths)."""
    try:
        scripted = torch.jit.script(copy.deepcopy(module).eval())
    except Exception as exc:  # TorchScript's frontend raises many types
        text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise IslandError(f"TorchScript cannot script it either ({text[:160]})") from exc
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if info.filename.endswith(".debug_pkl"):  # source ranges with this machine's paths
                continue
            record = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zout.writestr(record, zin.read(info))
    return pin_serialization_id(out.getvalue())


def _tensors_only(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (
        isinstance(value, tuple) and bool(value) and all(isinstance(v, torch.Tensor) for v in value)
    )


def spec_from_calls(calls: list[tuple[tuple[Any, ...], dict[str, Any], Any]]) -> IslandSpec:
    """The output rule from an instance's calls on the example run (all calls must agree with it)."""
    if not calls:
        raise IslandError("the example inputs never reach it")
    args, kwargs, out = calls[0]
    if kwargs or not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise IslandError("an fp32 island takes tensor positional inputs only")
    if not _tensors_only(out):
        raise IslandError("an fp32 island returns a tensor or a tuple of tensors only")
    outs = list(out) if isinstance(out, tuple) else [out]
    first = args[0]
    follow = tuple(tuple(d < first.dim() and o.shape[d] == first.shape[d] for d in range(o.dim())) for o in outs)
    spec = IslandSpec(
        inputs=len(args),
        shapes=tuple(tuple(o.shape) for o in outs),
        follow=follow,
        dtypes=tuple(str(o.dtype).removeprefix("torch.") for o in outs),
        as_tuple=isinstance(out, tuple),
    )
    for a, _kw, o in calls[1:]:
        more = list(o) if isinstance(o, tuple) else [o]
        if len(a) != spec.inputs or [list(m.shape) for m in more] != [spec.expected(a[0], i) for i in range(len(more))]:
            raise IslandError("it is called with inputs whose output shapes follow no single rule")
    return spec


def record_calls(model: nn.Module, names: list[str], args: tuple[Any, ...]) -> dict[str, list[Any]]:
    """Each named submodule's (args, kwargs, output) on one run of ``model`` on ``args``."""
    calls: dict[str, list[Any]] = {n: [] for n in names}

    def recorder(n: str) -> Callable[..., None]:
        return lambda _m, a, kw, out: calls[n].append((a, kw, out))

    run_with_hooks(model, args, {model.get_submodule(n): recorder(n) for n in names}, with_kwargs=True)
    return calls


def make_islands(model: nn.Module, names: list[str], args: tuple[Any, ...], reason: str) -> list[Island]:
    """Replace the named submodules of ``model`` (in place) by calls to their scripts; the islands made."""
    calls = record_calls(model, names, args)
    made: dict[str, Island] = {}
    for n in [n for n in names if calls[n]] or names:  # instances the example never reaches are left alone
        module = model.get_submodule(n)
        try:
            spec = spec_from_calls(calls[n])
            script = script_bytes(module)
        except IslandError as exc:
            why = f"'{n}' ({type(module).__name__}) cannot be kept in fp32 inside the program: {exc}"
            raise IslandError(why) from None
        op = op_name(script, spec)
        register(op, script, spec)
        if op in made:
            made[op].modules.append(n)
        else:
            made[op] = Island(op, [n], type(module).__name__, reason, script, spec)
    for island in made.values():
        for n in island.modules:
            parent, _, child = n.rpartition(".")
            setattr(model.get_submodule(parent), child, IslandCall(island.op, island.cls))
    return list(made.values())


def is_island_op(target: Any) -> bool:
    return getattr(target, "namespace", None) == NAMESPACE


def island_op(target: Any) -> str:
    """The island op's name for a graph node's target (``torch.ops.ptsq_island.<op>.default``)."""
    return str(getattr(target, "_opname", "") or str(target).split(".")[1])


def capture_with_islands(
    model: nn.Module, example_args: tuple[Any, ...]
) -> tuple[torch.export.ExportedProgram, str, list[Island]]:
    """:func:`~.capture.capture`, keeping what export cannot capture as fp32 islands (``model`` is edited:
    pass the engine's working copy). Refuses in one line when the failing line is in the top-level
    forward or in no forward, when more than :data:`MAX_ISLANDS` would be needed, or when an island
    cannot be scripted or has other than tensor inputs and outputs."""
    from ptsq.engines.pt2e.capture import attempt, batch2, export_explanation, failing_line, refusal, user_lines

    islands: list[Island] = []
    while True:
        ep, mode, errors = attempt(model, example_args)
        if ep is not None:
            return ep, mode, islands
        # the deepest submodule whose forward holds the failing line, or calls the helper that holds it
        found = [holders(model, f, n) for e in errors for f, n in user_lines(e)]
        names = max(found, key=lambda ns: ns[0].count(".") if ns else -1, default=[])
        if not names:
            raise refusal(errors)
        if sum(len(i.modules) for i in islands) + len(names) > MAX_ISLANDS:
            raise refusal(errors, f"more than {MAX_ISLANDS} submodules would have to stay fp32")
        cause = next(e for e in errors if failing_line(e))
        try:
            islands.extend(make_islands(model, names, batch2(example_args), export_explanation(cause)))
        except IslandError as exc:
            raise refusal(errors, str(exc)) from None


def island_rows(rows: list[tuple[Any, Any]], islands: list[Island]) -> list[tuple[Any, Any]]:
    """The precision map's rows with each island's op shown as its module: fp32, and why."""
    from ptsq.engines.base import LayerPrecision

    by_op = {i.op: i for i in islands}
    out = []
    for node, row in rows:
        island = by_op.get(island_op(node.target)) if is_island_op(node.target) else None
        if island is not None:
            row = LayerPrecision(row.name, island.cls, "fp32", f"torch.export cannot capture it: {island.reason}")
        out.append((node, row))
    return out

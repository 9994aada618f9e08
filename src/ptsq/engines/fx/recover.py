"""No ptsq step may break a model: a step that cannot handle a construct leaves it fp32, and says so.

Two guards around the FX pipeline:

* :func:`safe_cleanup` runs the graph clean-up (:mod:`ptsq.algorithms.cleanup`) on a copy and checks
  the cleaned fp32 graph against the model on the example inputs. If a step raises or changes the
  fp32 outputs, the steps are applied one at a time and the ones that fail are left out, with a note.
* :func:`recover` rehearses prepare -> calibrate -> convert -> run on a copy of the model with the
  example inputs before the real calibration streams the data. When a step fails (an observer fed a
  ``torch.Size``, an int8 kernel that rejects its input, a lowering that crashes), the node it failed
  at is found (:class:`_Tracking` interpreter, or the traceback of torch.ao's own code), mapped back to
  the model's graph, and kept fp32: a module is wrapped in :class:`KeepFloat`, a function or method
  call is moved into a one-node graph wrapped the same way. Then the rehearsal runs again, at most
  :data:`MAX_RECOVERIES` times. A failure that cannot be located is raised naming the op and the line.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from ptsq.algorithms.keep_float import KeepFloat, wrap_modules
from ptsq.algorithms.tracing import LeafTracer
from ptsq.errors import QuantizationError, first_line
from ptsq.fidelity import flatten_outputs, sqnr_db

MAX_RECOVERIES = 8
_TORCH_DIR = os.path.dirname(torch.__file__)
_PTSQ_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_INSERTED = re.compile(r"(activation_post_process|quantize_per_|dequantize|_input_scale|_scale_|_zero_point)")
CLEANUP_MIN_SQNR_DB = 50.0  # the clean-up rewrites are exact up to float rounding (~120 dB)


# ----------------------------------------------------------------------------------------- clean-up
def _outputs(model: nn.Module, args: tuple[Any, ...]) -> list[torch.Tensor] | None:
    try:
        with torch.inference_mode():
            return [t.detach().clone() for t in flatten_outputs(model(*args))]
    except Exception:  # the caller reports the clean-up itself; an unrunnable reference just skips the check
        return None


def _disagreement(ref: list[torch.Tensor] | None, got: list[torch.Tensor] | None) -> str:
    """Why the cleaned graph's outputs are not the model's ("" when they agree to float rounding)."""
    if ref is None:
        return ""
    if got is None or len(got) != len(ref):
        return "it changed the model's outputs"
    for r, g in zip(ref, got):
        if r.shape != g.shape:
            return f"it changed an output shape {tuple(r.shape)} -> {tuple(g.shape)}"
        if not r.is_floating_point():
            if not torch.equal(r, g):
                return "it changed an integer output"
            continue
        s = sqnr_db(r, g)
        if not math.isnan(s) and s < CLEANUP_MIN_SQNR_DB:
            return f"it changed the fp32 outputs (SQNR {s:.0f} dB)"
    return ""


def safe_cleanup(
    model: nn.Module, steps: tuple[str, ...], example_args: tuple[Any, ...]
) -> tuple[nn.Module, list[str]]:
    """:func:`~ptsq.engines.fx_cleanup.cleanup`, leaving out any step that fails or changes the fp32 outputs.

    ``model`` is not modified (each attempt works on a copy).
    """
    from ptsq.algorithms.cleanup import GRAPH_STEPS, cleanup

    wanted = tuple(s for s in GRAPH_STEPS if s in steps)
    if not wanted:
        return model, []
    ref = _outputs(model, example_args)
    if ref is not None and _disagreement(ref, _outputs(model, example_args)):
        ref = None  # a forward that is not deterministic (noise, sampling): nothing to compare against

    def attempt(chosen: tuple[str, ...]) -> tuple[nn.Module | None, list[str], str]:
        try:
            gm, notes = cleanup(copy.deepcopy(model), chosen)
        except Exception as exc:  # a rewrite that does not understand the graph
            return None, [], f"it failed ({type(exc).__name__}: {first_line(exc, 120)})"
        why = _disagreement(ref, _outputs(gm, example_args))
        return (None, [], why) if why else (gm, notes, "")

    gm, notes, why = attempt(wanted)
    if gm is not None:
        return gm, notes
    kept: tuple[str, ...] = ()
    left_out: list[str] = []
    for step in wanted:
        trial, trial_notes, why = attempt((*kept, step))
        if trial is None:
            left_out.append(f"clean-up step '{step}' left out: {why}")
        else:
            kept, gm, notes = (*kept, step), trial, trial_notes
    if gm is None:  # not even one step works: the model as it was
        gm, notes = model, []
        fails, _, why = attempt(())
        if fails is None and why:
            left_out.append(f"graph clean-up left out: {why}")
    return gm, left_out + notes


# ------------------------------------------------------------------------------------- recovery
class _Tracking(fx.Interpreter):
    """Run a graph node by node; the exception it raises carries the node it was raised at."""

    def run_node(self, n: fx.Node) -> Any:
        try:
            return super().run_node(n)
        except Exception as exc:
            if not hasattr(exc, "_ptsq_node"):
                exc._ptsq_node = n  # type: ignore[attr-defined]
            raise


def run_tracked(gm: fx.GraphModule, args: tuple[Any, ...]) -> Any:
    """Run ``gm`` on ``args`` like its ``forward``; a failure names its node (``exc._ptsq_node``)."""
    with torch.no_grad():
        return _Tracking(gm).run(*args)


@dataclass
class Failure:
    stage: str  # prepare_fx, calibration, convert_fx, the int8 kernel
    node: fx.Node | None  # where it failed, in the graph that failed
    error: str


def _failing_node(exc: BaseException) -> fx.Node | None:
    """The node an error was raised at: tagged by :class:`_Tracking`, else the innermost torch.ao frame
    holding a ``node`` local (prepare_fx / convert_fx walk the graph node by node)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        node = getattr(e, "_ptsq_node", None)
        if isinstance(node, fx.Node):
            return node
        found = None
        tb = e.__traceback__
        while tb is not None:
            local = tb.tb_frame.f_locals.get("node")
            if isinstance(local, fx.Node):
                found = local
            tb = tb.tb_next
        if found is not None:
            return found
        e = e.__cause__ or e.__context__
    return None


def _error_text(exc: BaseException) -> str:
    e = exc.__cause__ if isinstance(exc, QuantizationError) and exc.__cause__ is not None else exc
    return f"{type(e).__name__}: {first_line(e, 160)}"


def rehearse(
    work: nn.Module, pipeline: Callable[[nn.Module, Callable[[nn.Module], Any]], nn.Module], example: tuple[Any, ...]
) -> Failure | None:
    """Run ``pipeline`` (prepare, calibrate with the given function, convert) on a copy, calibrating and
    then running the int8 graph on ``example``; the first failure, or None."""
    stage = ["prepare_fx"]

    def calibrate(prepared: nn.Module) -> None:
        stage[0] = "calibration"
        run_tracked(prepared, example) if isinstance(prepared, fx.GraphModule) else prepared(*example)
        stage[0] = "convert_fx"

    try:
        converted = pipeline(copy.deepcopy(work), calibrate)
        stage[0] = "the int8 kernel"
        run_tracked(converted, example) if isinstance(converted, fx.GraphModule) else converted(*example)
    except Exception as exc:  # any failure is data: where it happened decides what stays fp32
        return Failure(stage[0], _failing_node(exc), _error_text(exc))
    return None


def as_graph(model: nn.Module) -> fx.GraphModule:
    """``model`` as a GraphModule traced with the quantization leaf rules (and source lines recorded)."""
    if isinstance(model, fx.GraphModule):
        return model
    tracer = LeafTracer()
    tracer.record_stack_traces = True
    return fx.GraphModule(model, tracer.trace(model), class_name=type(model).__name__)


def _origin(node: fx.Node, work: fx.GraphModule) -> fx.Node | None:
    """The op of ``work``'s graph that ``node`` (of a prepared/converted copy) stands for: itself by name,
    or the nearest op upstream (observers, quantize/dequantize are inserted after their op), else downstream."""
    ops = {n.name: n for n in work.graph.nodes if n.op in ("call_module", "call_function", "call_method")}
    for direction in ("up", "down"):
        queue: deque[fx.Node] = deque([node])
        seen: set[str] = set()
        while queue:
            n = queue.popleft()
            if n.name in seen:
                continue
            seen.add(n.name)
            if n.name in ops and not _is_inserted(n):
                return ops[n.name]
            queue.extend(n.all_input_nodes if direction == "up" else n.users)
    return None


def _is_inserted(n: fx.Node) -> bool:
    """Nodes torch.ao inserts: observers, quantize/dequantize."""
    return bool(_INSERTED.match(n.name))


def source_line(node: fx.Node) -> str:
    """``file:line: code`` of the user's code that made ``node``, when tracing recorded it."""
    trace = node.stack_trace or ""
    found = re.findall(r'File "([^"]+)", line (\d+), in \w+\n\s+(.+)', trace)
    for fname, line, code in reversed(found):
        if not fname.startswith((_TORCH_DIR, _PTSQ_DIR, "<")):
            return f"{fname}:{line}: {code.strip()}"
    return ""


def _label(node: fx.Node, work: fx.GraphModule) -> str:
    if node.op == "call_module":
        mod = work.get_submodule(str(node.target))
        return type(mod.inner if isinstance(mod, KeepFloat) else mod).__name__
    target = node.target
    return getattr(target, "__name__", None) or str(target).split(".")[-1]


def keep_node_fp32(work: fx.GraphModule, node: fx.Node, reason: str) -> str | None:
    """Keep ``node`` of ``work`` fp32 (a KeepFloat leaf); its qualified name, or None if it cannot be."""
    if node.op == "call_module":
        target = str(node.target)
        if isinstance(work.get_submodule(target), KeepFloat):
            return None  # already fp32: the failure is not the int8 kernel's
        wrap_modules(work, {target: reason})
        return target
    if node.op not in ("call_function", "call_method"):
        return None
    inputs: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: inputs.append(a) if a not in inputs else None)
    sub = fx.Graph()
    env = {a: sub.placeholder(f"in_{i}") for i, a in enumerate(inputs)}
    sub.output(sub.node_copy(node, lambda a: env[a]))
    label = _label(node, work)
    inner = fx.GraphModule(nn.Module(), sub, class_name=re.sub(r"\W", "_", label) or "op")
    name = node.name
    while hasattr(work, name):
        name += "_fp32"
    work.add_submodule(name, KeepFloat(inner, reason))
    with work.graph.inserting_before(node):
        call = work.graph.call_module(name, tuple(inputs))
    call.meta = dict(node.meta)
    node.replace_all_uses_with(call)
    work.graph.erase_node(node)
    work.recompile()
    return name


def recover(
    work: nn.Module,
    pipeline: Callable[[nn.Module, Callable[[nn.Module], Any]], nn.Module],
    example: tuple[Any, ...],
) -> tuple[nn.Module, list[str]]:
    """Rehearse ``pipeline`` on ``example``; keep each failing op fp32 until it passes. Returns (model, notes)."""
    notes: list[str] = []
    for _ in range(MAX_RECOVERIES):
        failure = rehearse(work, pipeline, example)
        if failure is None:
            return work, notes
        work = as_graph(work)
        target = _origin(failure.node, work) if failure.node is not None else None
        where = ""
        if target is not None:
            line = source_line(target)
            where = f" at {_label(target, work)} ('{target.name}')" + (f", {line}" if line else "")
            reason = f"{failure.stage} failed here ({failure.error}); kept in fp32" + (f" [{line}]" if line else "")
            name = keep_node_fp32(work, target, reason)
            if name is not None:
                notes.append(f"'{name}' kept in fp32: {failure.stage} failed there ({failure.error}){where}")
                continue
        raise QuantizationError(
            f"{failure.stage} failed{where}: {failure.error}",
            "keep that layer fp32 with --skip name:LAYER (or rewrite the line), or try --engine pt2e",
        )
    raise QuantizationError(
        f"int8 quantization kept failing after {MAX_RECOVERIES} ops were kept in fp32 ({notes[-1]})",
        "keep the failing part fp32 with --skip name:LAYER, or try --engine pt2e",
    )


__all__ = ["MAX_RECOVERIES", "Failure", "as_graph", "keep_node_fp32", "recover", "rehearse", "safe_cleanup"]

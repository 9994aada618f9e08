"""Capture a model with ``torch.export``: strict first, non-strict when strict cannot, one-line errors."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ptsq.errors import TraceError


def _batched(a: Any) -> bool:
    return isinstance(a, torch.Tensor) and a.dim() > 0


def batch2(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Export with batch 2: a batch of 1 would be specialised and later batches rejected (nested inputs too)."""
    return tree_map(lambda a: torch.cat([a[:1], a[:1]]) if _batched(a) else a, args)


def dynamic_batch(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Every dimension of every input tensor dynamic where the model allows it (``Dim.AUTO``: the exporter
    keeps static what must be), in the inputs' own (nested) structure: the program takes other batch and
    image sizes, like the FX and ONNX artifacts. The compiled program is still specialised per shape."""
    auto = torch.export.Dim.AUTO
    return tuple(tree_map(lambda a: dict.fromkeys(range(a.dim()), auto) if _batched(a) else None, a) for a in args)


_USER_LINE = (
    re.compile(r'File "([^"]+)", line (\d+), in \w+, code: (.+)'),
    re.compile(r'File "([^"]+)", line (\d+), in \w+\n\s+(.+)'),
)


def failing_line(exc: BaseException) -> tuple[str, int, str] | None:
    """(file, line, code) of the user's line an exporter error points at; None if it names none."""
    text = str(exc)
    m = _USER_LINE[0].search(text) or _USER_LINE[1].search(text)
    if m and "site-packages" not in m.group(1):
        return m.group(1), int(m.group(2)), m.group(3).strip()
    return None


def user_lines(exc: BaseException) -> list[tuple[str, int]]:
    """Every (file, line) of user code an exporter error names: the failing line first, then its callers
    as far as the error shows them (strict export prints the user stack; non-strict, the failing line)."""
    first = failing_line(exc)
    found = [(f, int(n)) for f, n in re.findall(r'File "([^"]+)", line (\d+)', str(exc)) if "site-packages" not in f]
    return list(dict.fromkeys(([first[:2]] if first else []) + found))


def export_explanation(exc: BaseException) -> str:
    """The first line of an exporter error that says something, plus the user's line it points at."""
    text = str(exc)
    head = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)[:200]
    if where := failing_line(exc):
        head += f" at {where[0]}:{where[1]}: {where[2]}"
    return head


def export(model: nn.Module, args: tuple[Any, ...], strict: bool) -> torch.export.ExportedProgram:
    """``torch.export`` with batch-dynamic inputs, its logging and partial-graph printouts silenced."""
    logging.disable(logging.WARNING)  # the exporter logs graphs and advice; ptsq reports one line
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # failed exports print the partial graph
            return torch.export.export(model, args, dynamic_shapes=dynamic_batch(args), strict=strict)
    finally:
        logging.disable(logging.NOTSET)


def attempt(model: nn.Module, example_args: tuple[Any, ...]) -> tuple[Any, str, list[BaseException]]:
    """(program, mode, []) from strict or else non-strict export; (None, "", both errors) if neither works.

    Strict first: non-strict export breaks the x86 inductor quantizer on torchvision ResNets, whose
    blocks call one ReLU module twice.
    """
    args = batch2(example_args)
    errors: list[BaseException] = []
    for strict in (True, False):
        try:
            return export(model, args, strict), "strict" if strict else "non-strict", []
        except Exception as exc:  # exporter errors come in many types
            errors.append(exc)
    return None, "", errors


def refusal(errors: list[BaseException], why_not_island: str = "") -> TraceError:
    """The one-line error for a model export cannot capture (``why_not_island``: why no fp32 island helped)."""
    from ptsq import legacy

    hint = (
        "try --engine fx (it keeps untraceable submodules in fp32), or make forward export-friendly"
        if legacy.available()
        else "make forward export-friendly (torch.cond for a data-dependent branch), or try --engine onnx"
    )
    extra = f"; {why_not_island}" if why_not_island else ""
    return TraceError(
        f"torch.export cannot capture the model (strict and non-strict tried): {export_explanation(errors[0])}{extra}",
        hint,
    )


def capture(model: nn.Module, example_args: tuple[Any, ...]) -> tuple[torch.export.ExportedProgram, str]:
    """``torch.export`` the model: strict first, non-strict if strict cannot; returns (program, mode)."""
    ep, mode, errors = attempt(model, example_args)
    if ep is None:
        raise refusal(errors)
    return ep, mode

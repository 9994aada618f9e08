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


def export_explanation(exc: BaseException) -> str:
    """The first line of an exporter error that says something, plus the user's line it points at."""
    text = str(exc)
    head = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)[:200]
    m = re.search(r'File "([^"]+)", line (\d+), in \w+, code: (.+)', text) or re.search(
        r'File "([^"]+)", line (\d+), in \w+\n\s+(.+)', text
    )
    if m and "site-packages" not in m.group(1):
        head += f" at {m.group(1)}:{m.group(2)}: {m.group(3).strip()}"
    return head


def export(model: nn.Module, args: tuple[Any, ...], strict: bool) -> torch.export.ExportedProgram:
    """``torch.export`` with batch-dynamic inputs, its logging and partial-graph printouts silenced."""
    logging.disable(logging.WARNING)  # the exporter logs graphs and advice; ptsq reports one line
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # failed exports print the partial graph
            return torch.export.export(model, args, dynamic_shapes=dynamic_batch(args), strict=strict)
    finally:
        logging.disable(logging.NOTSET)


def capture(model: nn.Module, example_args: tuple[Any, ...]) -> tuple[torch.export.ExportedProgram, str]:
    """``torch.export`` the model: strict first, non-strict if strict cannot; returns (program, mode).

    Strict first: non-strict export breaks the x86 inductor quantizer on torchvision ResNets, whose
    blocks call one ReLU module twice.
    """
    args = batch2(example_args)
    errors: list[str] = []
    for strict in (True, False):
        try:
            return export(model, args, strict), "strict" if strict else "non-strict"
        except Exception as exc:  # exporter errors come in many types
            errors.append(export_explanation(exc))
    from ptsq import legacy

    hint = (
        "try --engine fx (it keeps untraceable submodules in fp32), or make forward export-friendly"
        if legacy.available()
        else "make forward export-friendly (torch.cond for a data-dependent branch), or try --engine onnx"
    )
    raise TraceError(f"torch.export cannot capture the model (strict and non-strict tried): {errors[0]}", hint)

"""PT2E's part in the whole-model speed check (:class:`ptsq.engines.base.SpeedHooks`).

- ``layer_times``: each int8 conv/linear timed against its fp32 twin at its real input shape and the
  deployment thread count, the same oneDNN calls the compiled program makes (:mod:`.speed`). They are
  timed alone, not inside the compiled program: inductor's generated code does not say which kernel
  call belongs to which layer.
- ``keep_fp32``: the slow layers run in fp32 in a copy of the converted program (:mod:`.layers`: the
  calibrated fp32 weights, no re-calibration), compiled again; the precision map says why.
- ``fix_layout``: nothing to fix; inductor chooses the memory formats of the compiled program itself.
"""

from __future__ import annotations

from typing import Any

import torch

from ptsq.engines.base import EngineResult, LayerTiming
from ptsq.engines.pt2e.layers import Pt2eFloatLayers
from ptsq.engines.pt2e.runtime import CompiledProgram
from ptsq.engines.pt2e.speed import conv_times, linear_times

MOVED = "pt2e_fp32_layers"  # debug key: layers the speed check has moved to fp32 so far


def layer_times(result: EngineResult, example_args: tuple[Any, ...], threads: int) -> list[LayerTiming]:
    """Every int8 conv/linear, int8 against fp32 (plus the island's dequantize/quantize), at ``threads``."""
    layers: Pt2eFloatLayers | None = result.debug.get("float_layers")
    if layers is None:
        return []
    moved = set(result.debug.get(MOVED, []))
    ops = {r.name: r.op for r in result.precision if r.precision == "int8"}
    saved = torch.get_num_threads()
    out: list[LayerTiming] = []
    try:
        torch.set_num_threads(threads)
        for name, key in layers.speed_keys(example_args).items():
            if name in moved or name not in ops:
                continue
            try:
                int8_ms, fp32_ms = (linear_times if key[0] == "Linear" else conv_times)(key)
            except Exception:  # a configuration oneDNN cannot run alone: nothing to compare
                continue
            out.append(LayerTiming(name, ops[name], int8_ms, fp32_ms, list(key[-1]), key=name))
    finally:
        torch.set_num_threads(saved)
    return out


def keep_fp32(result: EngineResult, timings: list[LayerTiming], reason: str) -> list[str]:
    """Run the timed layers in fp32 from now on (in place: a new program, compiled like the old one)."""
    layers: Pt2eFloatLayers | None = result.debug.get("float_layers")
    if layers is None or not timings:
        return []
    names = [t.key or t.name for t in timings]
    moved = list(dict.fromkeys([*result.debug.get(MOVED, []), *names]))
    program = layers.with_float(moved)  # always from the converted program: rounds add up
    result.module = CompiledProgram(program).eval() if isinstance(result.module, CompiledProgram) else program
    result.debug[MOVED] = moved
    why = {t.key or t.name: reason.format(ratio=t.ratio, int8=t.int8_ms, fp32=t.fp32_ms) for t in timings}
    for row in result.precision:
        layer = row.name.split("#")[0]  # one module called twice: name, name#1, ...
        if layer in why and row.precision == "int8":
            row.precision, row.reason = "fp32", why[layer]
    return names

"""The FX engine's part of the whole-model speed check: time int8 layers in context, move slow ones to fp32.

Isolated timings (the speed guard's) miss what only the real model shows: the layout and quantization
parameters a layer really receives, the thread count it really runs at, the machine's load when it was
measured. Here each int8 conv/linear of the converted model is timed *inside the model* (forward hooks,
the model running on a real input), and its fp32 twin (the float module at the same name in the calibrated
fp32 graph) on that same input, in the memory format it runs fastest in, plus the dequantize/quantize an
fp32 layer adds between int8 neighbours. A layer moved to fp32 is recorded in the speed guard's cache
with how it was measured, so the next quantization keeps it fp32 from the start.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from ptsq.algorithms.float_layers import float_twin, set_float_layer, swappable_layers
from ptsq.engines.base import EngineResult, LayerTiming
from ptsq.engines.fx.islands import public_name
from ptsq.engines.fx.speed import record_in_context


def _clock(threads: int) -> Any:
    # one thread: the calling thread does all the work, and its CPU time ignores other processes' load
    return time.thread_time if threads == 1 else time.perf_counter


def _is_leaf_wrapper(model: nn.Module, name: str) -> bool:
    """``x.module`` inside a QuantWrapper: an int8 leaf of an untraceable island (islands.py)."""
    parent, _, leaf = name.rpartition(".")
    return leaf == "module" and type(model.get_submodule(parent)).__name__ == "QuantWrapper"


def _targets(gm: nn.Module, observed: nn.Module) -> dict[str, str]:
    """int8 layer name -> the module to time in context (the wrapper, for island leaves)."""
    out = {}
    for name in swappable_layers(gm, observed):
        out[name] = name.rpartition(".")[0] if _is_leaf_wrapper(gm, name) else name
    return out


def _in_context(
    gm: nn.Module, targets: dict[str, str], args: tuple[Any, ...], threads: int, runs: int
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Fastest time of each target module inside the running model, and the input it received."""
    clock = _clock(threads)
    best: dict[str, float] = {}
    inputs: dict[str, torch.Tensor] = {}
    started: dict[str, float] = {}
    hooks = []
    for name, path in targets.items():
        mod = gm.get_submodule(path)

        def pre(_m: nn.Module, a: Any, name: str = name) -> None:
            if name not in inputs and a and isinstance(a[0], torch.Tensor):
                inputs[name] = a[0].detach().clone(memory_format=torch.preserve_format)
            started[name] = clock()

        def post(_m: nn.Module, _a: Any, _o: Any, name: str = name) -> None:
            dt = clock() - started.pop(name, clock())
            best[name] = min(best.get(name, float("inf")), dt * 1000.0)

        hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        with torch.inference_mode():
            gm(*args)  # warm-up; records the inputs
            best.clear()
            for _ in range(runs):
                gm(*args)
    finally:
        for h in hooks:
            h.remove()
    return best, inputs


def _min_ms(fn: Any, runs: int, clock: Any) -> float:
    best = float("inf")
    with torch.inference_mode():
        fn()
        for _ in range(runs):
            t0 = clock()
            fn()
            best = min(best, clock() - t0)
    return best * 1000.0


def _fp32_ms(twin: nn.Module, x: torch.Tensor, int8: nn.Module, leaf: bool, runs: int, clock: Any) -> float:
    """The fp32 twin's time on the input the int8 layer got, in its fastest weight layout, plus its island."""
    xd = x.dequantize() if x.is_quantized else x
    candidates = [twin]
    if xd.dim() == 4 and xd.is_contiguous(memory_format=torch.channels_last) and not xd.is_contiguous():
        candidates.append(copy.deepcopy(twin).to(memory_format=torch.channels_last))
    ms = min(_min_ms(lambda m=m: m(xd), runs, clock) for m in candidates)
    if leaf:  # an island leaf's fp32 form needs no quantize/dequantize at all
        return ms
    with torch.inference_mode():
        y = twin(xd)
    scale, zp = float(int8.scale), int(int8.zero_point)
    island = _min_ms(lambda: (x.dequantize() if x.is_quantized else x, torch.quantize_per_tensor(y, scale, zp,
                                                                                                   torch.quint8)),
                     runs, clock)  # fmt: skip
    return ms + island


def layer_times(result: EngineResult, example_args: tuple[Any, ...], threads: int, runs: int = 7) -> list[LayerTiming]:
    """Each int8 conv/linear of the converted model, timed in context against its fp32 twin."""
    gm, observed = result.module, result.debug.get("observed")
    if observed is None:  # the split capture keeps no single calibrated graph: nothing to compare against
        return []
    targets = _targets(gm, observed)
    saved = torch.get_num_threads()
    out: list[LayerTiming] = []
    try:
        torch.set_num_threads(threads)
        int8_ms, inputs = _in_context(gm, targets, example_args, threads, runs)
        clock = _clock(threads)
        for name, path in targets.items():
            if name not in int8_ms or name not in inputs:
                continue  # never called on this input
            leaf = path != name
            twin = float_twin(observed, name)
            fp = _fp32_ms(twin, inputs[name], gm.get_submodule(name), leaf, runs, clock)
            shown = public_name(path) if leaf else name
            op = type(twin[0] if isinstance(twin, nn.Sequential) and len(twin) else twin).__name__
            out.append(LayerTiming(shown, op, int8_ms[name], fp, list(inputs[name].shape), key=name))
    finally:
        torch.set_num_threads(saved)
    return out


def keep_fp32(result: EngineResult, layers: list[LayerTiming], reason: str, backend: str, threads: int) -> list[str]:
    """Swap each layer for its fp32 twin in the converted model (in place), update the precision rows and
    record the in-context verdict in the speed guard's cache."""
    gm, observed = result.module, result.debug["observed"]
    rows = {r.name: r for r in result.precision}
    moved = []
    for lt in layers:
        path = lt.key or lt.name
        twin = float_twin(observed, path)
        if _is_leaf_wrapper(gm, path):
            wrapper = path.rpartition(".")[0]
            parent, _, leaf = wrapper.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, twin)
        else:
            set_float_layer(gm, observed, path)
        text = reason.format(ratio=lt.ratio, int8=lt.int8_ms, fp32=lt.fp32_ms)
        if lt.name in rows:
            rows[lt.name].precision, rows[lt.name].reason = "fp32", text
        conv = twin[0] if isinstance(twin, nn.Sequential) and len(twin) else twin
        record_in_context(conv, tuple(lt.input_shape), backend, threads, lt.ratio, lt.int8_ms, lt.fp32_ms)
        moved.append(lt.name)
    return moved


__all__ = ["keep_fp32", "layer_times"]

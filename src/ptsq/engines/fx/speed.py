"""Speed guard: keep in fp32 the conv/linear layers whose int8 kernel is slower than fp32 here.

Some int8 kernels fall off their fast path for particular shapes: on AVX2 x86, a depthwise conv with
TF-style "same" padding (padding 0 after an asymmetric pad) ran 30x slower than fp32 in
EfficientNet-Lite0. Each layer's int8 kernel is timed against its fp32 twin on the layer's real
input shape, on this machine, before calibration; a layer slower by more than ``margin`` stays fp32.
The fp32 side is charged the dequantize/quantize an fp32 layer adds between int8 neighbours: on a
microsecond-scale layer that costs more than its slow int8 kernel saves.

Layers near the margin would otherwise flip between runs (timings drift), so a verdict is measured
once per machine (CPU, ISA, torch version, backend, thread count) and kept in
``~/.cache/ptsq/speed_guard.json`` (``$PTSQ_CACHE_DIR``): quantizing the same model twice on one
machine keeps the same layers fp32. Delete the file to measure again.
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Any

import torch
from torch import nn

from ptsq.cache import read_json, write_json
from ptsq.machine import machine_info

_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _min_ms(fns: list[Any], args: list[torch.Tensor], runs: int) -> list[float]:
    """Fastest time of each fn over ``runs`` interleaved calls.

    The minimum, not the median: other processes can only add time, so on a loaded machine the
    fastest run is the best estimate of a kernel's own cost; interleaving exposes both to the same load.
    """
    for fn, x in zip(fns, args):
        fn(x)
    best = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, (fn, x) in enumerate(zip(fns, args)):
            t0 = time.perf_counter()
            fn(x)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [b * 1000.0 for b in best]


def _key(mod: nn.Module, shape: tuple[int, ...]) -> tuple[Any, ...]:
    if isinstance(mod, nn.Linear):
        return ("Linear", (mod.in_features, mod.out_features), {"bias": mod.bias is not None}, shape)
    kw = {"stride": mod.stride, "padding": mod.padding, "dilation": mod.dilation, "groups": mod.groups,
          "bias": mod.bias is not None}  # fmt: skip
    return (type(mod).__name__, (mod.in_channels, mod.out_channels, mod.kernel_size), tuple(kw.items()), shape)


@functools.lru_cache(maxsize=4096)
def _ratio(key: tuple[Any, ...], backend: str) -> float:
    """int8 / fp32 time for one layer configuration (weights do not matter for speed)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from ptsq.backends import qconfig_name

    kind, args, kwargs, shape = key
    torch.manual_seed(0)
    mod = getattr(nn, kind)(*args, **dict(kwargs)).eval()
    x = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(nn.Sequential(mod), get_default_qconfig_mapping(qconfig_name(backend)), (x,))
        prepared(x)
        q = getattr(convert_fx(prepared), "0")
    qx = torch.quantize_per_tensor(x, float(x.abs().max()) / 127 + 1e-8, 128, torch.quint8)
    runs = 15 if x.numel() < 2_000_000 else 5
    with torch.inference_mode():
        y = mod(x)

        def island(t: torch.Tensor) -> torch.Tensor:
            t.dequantize()  # what keeping the layer fp32 adds around it: dequantize its input, quantize its output
            return torch.quantize_per_tensor(y, 0.05, 128, torch.quint8)

        fp_ms, i8_ms, island_ms = _min_ms([mod, q, island], [x, qx, qx], runs)
    # a tiny layer's fp32 island costs more than its slow int8 kernel (Fashion ResNet's 1x1 shortcuts)
    return i8_ms / max(fp_ms + island_ms, 1e-6)


STORE = "speed_guard.json"


@functools.cache
def _cpu() -> str:
    m = machine_info()  # reads /proc/cpuinfo: once per process, not once per layer
    return f"{m['cpu']} | {' '.join(m['isa'])} | torch {m['torch']}"


def _machine(backend: str) -> str:
    return f"{_cpu()} | {backend} | {torch.get_num_threads()} threads | v2 island cost"


@functools.lru_cache(maxsize=4096)
def _verdict(key: tuple[Any, ...], backend: str, margin: float) -> float:
    """The ratio a decision is made on, fixed for the machine: every quantization (the accuracy budget's
    re-quantizations, a benchmark's recipes, tomorrow's run) then keeps the same layers fp32."""
    machine, k = _machine(backend), repr(key)
    stored = read_json(STORE).get(machine, {})
    if isinstance(stored.get(k), (int, float)):
        return float(stored[k])
    ratio = _ratio(key, backend)
    if ratio > margin:  # a slow verdict must survive a second, independent measurement
        ratio = min(ratio, _ratio.__wrapped__(key, backend))
    data = read_json(STORE)  # re-read: another process may have added verdicts meanwhile
    data.setdefault(machine, {})[k] = round(ratio, 4)
    write_json(STORE, data)
    return ratio


def slow_layers(model: nn.Module, example_args: tuple[Any, ...], backend: str, margin: float) -> dict[str, str]:
    """Qualified names of layers whose int8 kernel is over ``margin`` times slower than fp32, with why."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if type(mod) in _TYPES:

            def hook(_m: nn.Module, inputs: Any, _o: Any, name: str = name) -> None:
                if inputs and isinstance(inputs[0], torch.Tensor):
                    shapes.setdefault(name, tuple(inputs[0].shape))

            hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(*example_args)
    finally:
        for h in hooks:
            h.remove()
    slow: dict[str, str] = {}
    for name, shape in shapes.items():
        try:
            key = _key(model.get_submodule(name), shape)
            ratio = _verdict(key, backend, margin)
        except Exception:  # a layer the backend cannot quantize alone: nothing to compare
            continue
        if ratio > margin:
            slow[name] = f"int8 kernel measured {ratio:.1f}x slower than fp32 for input {list(shape)}, kept in fp32"
    return slow

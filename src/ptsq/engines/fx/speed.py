"""Speed guard: keep in fp32 the conv/linear layers whose int8 kernel is slower than fp32 here.

Some int8 kernels fall off their fast path for particular shapes: on AVX2 x86, a depthwise conv with
TF-style "same" padding (padding 0 after an asymmetric pad) ran 30x slower than fp32 in
EfficientNet-Lite0. Each layer's int8 kernel is timed against its fp32 twin on the layer's real
input shape, on this machine, before calibration, at every thread count the model will run at
(``speed.threads``, default 1); a layer slower by more than ``margin`` at any of them stays fp32.
The fp32 side is charged the dequantize/quantize an fp32 layer adds between int8 neighbours: on a
microsecond-scale layer that costs more than its slow int8 kernel saves.

How a verdict is measured: the minimum over interleaved runs of the calling thread's CPU time at one
thread (other processes' load does not count in it), of wall-clock time at several threads. A slow
verdict must survive a second, independent measurement.

Layers near the margin would otherwise flip between runs (timings drift), so a verdict is kept in
``~/.cache/ptsq/speed_guard.json`` (``$PTSQ_CACHE_DIR``) per machine (CPU, ISA, torch version, backend,
thread count), with how it was measured (method, runs, times, the load per core, when). The cache earns
trust two ways: a verdict the whole-model speed check contradicts (the layer is slow *in the model*)
is replaced by the in-context measurement (``record_in_context``), and a verdict measured while the
machine was overloaded (load per core above 1) is measured again once the load is below half of what it
was. Delete the file to measure everything again.
"""

from __future__ import annotations

import functools
import time
import warnings
from datetime import UTC, datetime
from typing import Any

import torch
from torch import nn

from ptsq.cache import read_json, write_json
from ptsq.engines.common import input_shapes
from ptsq.machine import load_per_core, machine_info

_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
STORE = "speed_guard.json"
METHOD = "isolated layer, min of {runs} interleaved runs ({clock})"


def clock_for(threads: int) -> Any:
    """Per-thread CPU time at one thread (blind to other processes); wall-clock time at several."""
    return time.thread_time if threads == 1 else time.perf_counter


def _min_ms(fns: list[Any], args: list[torch.Tensor], runs: int, clock: Any) -> list[float]:
    """Fastest time of each fn over ``runs`` interleaved calls.

    The minimum, not the median: other processes can only add time, so on a loaded machine the
    fastest run is the best estimate of a kernel's own cost; interleaving exposes both to the same load.
    """
    for fn, x in zip(fns, args):
        fn(x)
    best = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, (fn, x) in enumerate(zip(fns, args)):
            t0 = clock()
            fn(x)
            best[i] = min(best[i], clock() - t0)
    return [b * 1000.0 for b in best]


def _key(mod: nn.Module, shape: tuple[int, ...]) -> tuple[Any, ...]:
    if isinstance(mod, nn.Linear):
        return ("Linear", (mod.in_features, mod.out_features), {"bias": mod.bias is not None}, shape)
    kw = {"stride": mod.stride, "padding": mod.padding, "dilation": mod.dilation, "groups": mod.groups,
          "bias": mod.bias is not None}  # fmt: skip
    return (type(mod).__name__, (mod.in_channels, mod.out_channels, mod.kernel_size), tuple(kw.items()), shape)


def _measure(key: tuple[Any, ...], backend: str) -> dict[str, Any]:
    """int8 / fp32 time for one layer configuration at the current thread count (weights do not matter)."""
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
    threads = torch.get_num_threads()
    clock = clock_for(threads)
    with torch.inference_mode():
        y = mod(x)

        def island(t: torch.Tensor) -> torch.Tensor:
            t.dequantize()  # what keeping the layer fp32 adds around it: dequantize its input, quantize its output
            return torch.quantize_per_tensor(y, 0.05, 128, torch.quint8)

        fp_ms, i8_ms, island_ms = _min_ms([mod, q, island], [x, qx, qx], runs, clock)
    # a tiny layer's fp32 island costs more than its slow int8 kernel (Fashion ResNet's 1x1 shortcuts)
    ratio = i8_ms / max(fp_ms + island_ms, 1e-6)
    clock_name = "per-thread CPU time" if threads == 1 else "wall-clock"
    return _entry(ratio, i8_ms, fp_ms + island_ms, METHOD.format(runs=runs, clock=clock_name), threads)


def _entry(ratio: float, int8_ms: float, fp32_ms: float, method: str, threads: int) -> dict[str, Any]:
    return {
        "ratio": round(ratio, 4),
        "int8_ms": round(int8_ms, 4),
        "fp32_ms": round(fp32_ms, 4),  # including the island's dequantize/quantize
        "method": method,
        "threads": threads,
        "load_per_core": load_per_core(),
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


@functools.cache
def _cpu() -> str:
    m = machine_info()  # reads /proc/cpuinfo: once per process, not once per layer
    return f"{m['cpu']} | {' '.join(m['isa'])} | torch {m['torch']}"


def _machine(backend: str, threads: int) -> str:
    return f"{_cpu()} | {backend} | {threads} threads | v3"


def _stale(entry: dict[str, Any]) -> bool:
    """Measured while the machine was overloaded, and it is much quieter now: measure again."""
    then, now = entry.get("load_per_core"), load_per_core()
    return isinstance(then, (int, float)) and then > 1.0 and now is not None and now < then / 2


# verdicts already settled in this process: every quantization in it (the accuracy budget's
# re-quantizations, a benchmark's recipes) keeps the same layers fp32
_settled: dict[tuple[str, str], float] = {}


def _verdict(key: tuple[Any, ...], backend: str, margin: float, threads: int) -> float:
    """The ratio a decision is made on at ``threads``, fixed for the machine (see the module docstring)."""
    machine, k = _machine(backend, threads), repr(key)
    if (machine, k) in _settled:
        return _settled[(machine, k)]
    stored = read_json(STORE).get(machine, {}).get(k)
    if isinstance(stored, dict) and isinstance(stored.get("ratio"), (int, float)) and not _stale(stored):
        _settled[(machine, k)] = float(stored["ratio"])
        return _settled[(machine, k)]
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        entry = _measure(key, backend)
        if entry["ratio"] > margin:  # a slow verdict must survive a second, independent measurement
            again = _measure(key, backend)
            entry = min(entry, again, key=lambda e: e["ratio"])
    finally:
        torch.set_num_threads(saved)
    _store(machine, k, entry)
    _settled[(machine, k)] = float(entry["ratio"])
    return _settled[(machine, k)]


def forget_settled() -> None:
    """Forget this process's settled verdicts (the file still holds them)."""
    _settled.clear()


def _store(machine: str, key: str, entry: dict[str, Any]) -> None:
    data = read_json(STORE)  # re-read: another process may have added verdicts meanwhile
    data.setdefault(machine, {})[key] = entry
    write_json(STORE, data)


def record_in_context(
    mod: nn.Module, shape: tuple[int, ...], backend: str, threads: int, ratio: float, int8_ms: float, fp32_ms: float
) -> None:
    """The whole-model check found this layer slow in the model: that measurement replaces the cached one."""
    if type(mod) not in _TYPES:
        return
    machine, k = _machine(backend, threads), repr(_key(mod, shape))
    method = f"in context (whole-model speed check), {'per-thread CPU' if threads == 1 else 'wall-clock'} time"
    entry = _entry(ratio, int8_ms, fp32_ms, method, threads)
    previous = read_json(STORE).get(machine, {}).get(k)
    if isinstance(previous, dict):
        entry["contradicted"] = {f: previous.get(f) for f in ("ratio", "method", "load_per_core", "at")}
    _store(machine, k, entry)
    _settled[(machine, k)] = round(ratio, 4)


def slow_layers(
    model: nn.Module, example_args: tuple[Any, ...], backend: str, margin: float, threads: tuple[int, ...] = (1,)
) -> dict[str, str]:
    """Qualified names of layers whose int8 kernel is over ``margin`` times slower than fp32 at any of
    ``threads``, with why."""
    shapes = input_shapes(model, example_args, lambda _n, m: type(m) in _TYPES)
    slow: dict[str, str] = {}
    for name, shape in shapes.items():
        try:
            key = _key(model.get_submodule(name), shape)
            ratios = {t: _verdict(key, backend, margin, t) for t in threads}
        except Exception:  # a layer the backend cannot quantize alone: nothing to compare
            continue
        t, ratio = max(ratios.items(), key=lambda kv: kv[1])
        if ratio > margin:
            slow[name] = (f"int8 kernel measured {ratio:.1f}x slower than fp32 for input {list(shape)} at {t} "
                          "thread(s), kept in fp32")  # fmt: skip
    return slow

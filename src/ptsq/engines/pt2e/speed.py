"""Speed verification for PT2E: keep in fp32 the convs/linears whose oneDNN int8 kernel is slower here.

The compiled program calls ``onednn::qconv_pointwise`` / ``qlinear_pointwise`` with prepacked weights
for int8 layers and oneDNN's fp32 convolution for fp32 ones. Each conv/linear of the model is timed both
ways on its real input shape before calibration (the same ops, called directly), the fp32 side charged
the dequantize/quantize an fp32 island adds between int8 neighbours; a layer more than ``margin`` times
slower in int8 stays fp32 (a PT2E fp32 region). int8 calls carry a fixed cost of ~25 us on this
machine (oneDNN primitive descriptors are rebuilt per call), so tiny layers are where int8 can lose.

Verdicts are measured once per machine (CPU, ISA, torch, threads) and kept in
``~/.cache/ptsq/pt2e_speed.json`` (``$PTSQ_CACHE_DIR``), like the FX engine's speed guard.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch
from torch import nn

from ptsq.cache import read_json, write_json
from ptsq.engines.common import input_shapes

STORE = "pt2e_speed.json"
_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _min_ms(fns: list[Any], runs: int) -> list[float]:
    """Fastest time of each fn over ``runs`` interleaved calls (load only ever adds time)."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return [b * 1000.0 for b in best]


def _key(mod: nn.Module, shape: tuple[int, ...]) -> tuple[Any, ...]:
    if isinstance(mod, nn.Linear):
        return ("Linear", mod.in_features, mod.out_features, shape)
    conv = (mod.in_channels, mod.out_channels, tuple(mod.kernel_size), tuple(mod.stride))
    return (type(mod).__name__, *conv, tuple(mod.padding), tuple(mod.dilation), mod.groups, shape)


def _conv_ratio(key: tuple[Any, ...]) -> float:
    i8, fp = conv_times(key)
    return i8 / max(fp, 1e-6)


def conv_times(key: tuple[Any, ...]) -> tuple[float, float]:
    """(int8 ms, fp32 ms plus the dequantize/quantize an fp32 island adds) of one conv configuration."""
    kind, cin, cout, kernel, stride, padding, dilation, groups, shape = key
    if kind == "Conv1d":  # oneDNN runs 1-d convs as 2-d with height 1
        kernel, stride, padding, dilation = (1, *kernel), (1, *stride), (0, *padding), (1, *dilation)
        shape = (shape[0], shape[1], 1, shape[2])
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    w = torch.randn(cout, cin // groups, *kernel)
    b = torch.randn(cout)
    qx = torch.randint(0, 255, shape, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    qw = torch.randint(-127, 127, w.shape, dtype=torch.int8)
    ws, wz = torch.rand(cout) * 0.01 + 1e-3, torch.zeros(cout, dtype=torch.int64)
    conv = [list(stride), list(padding), list(dilation), groups]
    packed = torch.ops.onednn.qconv_prepack(qw, ws, 0.02, 128, *conv, list(shape))
    y = torch.nn.functional.conv2d(x, w, b, stride, padding, dilation, groups)

    def int8() -> Any:
        return torch.ops.onednn.qconv_pointwise(qx, 0.02, 128, packed, ws, wz, b, *conv, 0.05, 0, None, "none", [], "")

    def fp32() -> Any:
        return torch.nn.functional.conv2d(x, w, b, stride, padding, dilation, groups)

    return _times(int8, fp32, qx, y, x.numel())


def _linear_ratio(key: tuple[Any, ...]) -> float:
    i8, fp = linear_times(key)
    return i8 / max(fp, 1e-6)


def linear_times(key: tuple[Any, ...]) -> tuple[float, float]:
    """(int8 ms, fp32 ms plus the island's dequantize/quantize) of one linear configuration."""
    _, cin, cout, shape = key
    x = torch.randn(shape)
    w, b = torch.randn(cout, cin), torch.randn(cout)
    qx = torch.randint(0, 255, shape, dtype=torch.uint8)
    qw = torch.randint(-127, 127, (cout, cin), dtype=torch.int8)
    ws, wz = torch.rand(cout) * 0.01 + 1e-3, torch.zeros(cout, dtype=torch.int64)
    packed = torch.ops.onednn.qlinear_prepack(qw, list(shape))
    y = torch.nn.functional.linear(x, w, b)

    def int8() -> Any:
        return torch.ops.onednn.qlinear_pointwise(qx, 0.02, 128, packed, ws, wz, b, 0.05, 0, None, "none", [], "")

    def fp32() -> Any:
        return torch.nn.functional.linear(x, w, b)

    return _times(int8, fp32, qx, y, x.numel())


def _times(int8: Any, fp32: Any, qx: torch.Tensor, y: torch.Tensor, numel: int) -> tuple[float, float]:
    def island() -> Any:  # what keeping the layer fp32 adds around it: dequantize its input, quantize its output
        (qx.float() - 128) * 0.02
        return torch.clamp(torch.round(y / 0.05), 0, 255).to(torch.uint8)

    with torch.inference_mode():
        i8, fp, isl = _min_ms([int8, fp32, island], 15 if numel < 2_000_000 else 5)
    return i8, fp + isl


def _dynamic_ratio(key: tuple[Any, ...]) -> float:
    """Dynamic int8 Linear (choose scale, quantize, oneDNN int8 matmul) over fp32, on one input shape."""
    import torch._inductor.compile_fx  # registers the quantized_decomposed ops

    _, cin, cout, shape = key
    x = torch.randn(shape)
    w, b = torch.randn(cout, cin), torch.randn(cout)
    qw = torch.randint(-127, 127, (cout, cin), dtype=torch.int8)
    ws, wz = torch.rand(cout) * 0.01 + 1e-3, torch.zeros(cout, dtype=torch.int64)
    packed = torch.ops.onednn.qlinear_prepack(qw, list(shape))
    qd = torch.ops.quantized_decomposed

    def int8() -> Any:
        scale, zp = qd.choose_qparams.tensor(x, 0, 255, torch.finfo(torch.float32).eps, torch.uint8)
        qx = qd.quantize_per_tensor.tensor(x, scale, zp, 0, 255, torch.uint8)
        return torch.ops.onednn.qlinear_pointwise.tensor(
            qx, scale, zp, packed, ws, wz, b, 1.0, 0, torch.float32, "none", [], ""
        )

    def fp32() -> Any:
        return torch.nn.functional.linear(x, w, b)

    with torch.inference_mode():
        i8, fp = _min_ms([int8, fp32], 15 if x.numel() < 2_000_000 else 5)
    return i8 / max(fp, 1e-6)


@functools.cache
def _cpu() -> str:
    from ptsq.bench import machine_info

    m = machine_info()
    return f"{m['cpu']} | {' '.join(m['isa'])} | torch {m['torch']}"


def _machine() -> str:  # the thread count is read on every call: a process may change it between quantizes
    return f"{_cpu()} | {torch.get_num_threads()} threads | pt2e v1"


def verdict(key: tuple[Any, ...], margin: float) -> float:
    """int8/fp32 time of one layer configuration, measured once per machine and thread count."""
    return _verdict(_machine(), key, margin)


def forget() -> None:
    """Forget the verdicts this process has read or measured (the file keeps them)."""
    _verdict.cache_clear()


@functools.lru_cache(maxsize=4096)
def _verdict(machine: str, key: tuple[Any, ...], margin: float) -> float:
    k = repr(key)
    stored = read_json(STORE).get(machine, {})
    if isinstance(stored.get(k), (int, float)):
        return float(stored[k])
    measure = {"Linear": _linear_ratio, "DynamicLinear": _dynamic_ratio}.get(key[0], _conv_ratio)
    ratio = measure(key)
    if ratio > margin:  # a slow verdict must survive a second, independent measurement
        ratio = min(ratio, measure(key))
    data = read_json(STORE)  # re-read: another process may have added verdicts meanwhile
    data.setdefault(machine, {})[k] = round(ratio, 4)
    write_json(STORE, data)
    return ratio


def _input_shapes(
    model: nn.Module, example_args: tuple[Any, ...], types: tuple[type, ...]
) -> dict[str, tuple[int, ...]]:
    return input_shapes(model, example_args, lambda n, m: bool(n) and isinstance(m, types))


def slow_dynamic_linears(model: nn.Module, example_args: tuple[Any, ...], margin: float) -> dict[str, str]:
    """Linear layers whose dynamic int8 version is over ``margin`` times slower than fp32 here, with why."""
    slow: dict[str, str] = {}
    for name, shape in _input_shapes(model, example_args, (nn.Linear,)).items():
        mod = model.get_submodule(name)
        rows = (int(torch.tensor(shape[:-1]).prod()), shape[-1])  # oneDNN runs it flattened to 2-d
        try:
            ratio = verdict(("DynamicLinear", mod.in_features, mod.out_features, rows), margin)
        except Exception:  # a configuration oneDNN cannot run alone: nothing to compare
            continue
        if ratio > margin:
            slow[name] = (
                f"dynamic int8 kernel measured {ratio:.1f}x slower than fp32 for input {list(shape)}, kept in fp32"
            )
    return slow


def slow_layers(model: nn.Module, example_args: tuple[Any, ...], margin: float) -> dict[str, str]:
    """Qualified names of convs/linears whose int8 kernel is over ``margin`` times slower here, with why."""
    slow: dict[str, str] = {}
    for name, shape in _input_shapes(model, example_args, _TYPES).items():
        mod = model.get_submodule(name)
        if isinstance(mod, nn.Linear) and len(shape) != 2:
            continue  # batched linears (sequence models): the onednn kernel runs them flattened
        try:
            ratio = verdict(_key(mod, shape), margin)
        except Exception:  # a configuration oneDNN cannot run alone: nothing to compare
            continue
        if ratio > margin:
            slow[name] = f"int8 kernel measured {ratio:.1f}x slower than fp32 for input {list(shape)}, kept in fp32"
    return slow

"""fp32 islands inside an FX-quantized model: int8 leaves in untraceable islands, and their memory format.

Two things ptsq owes the parts of a model it keeps in fp32:

- **Untraceable islands still get int8 layers.** A submodule FX cannot trace (timm's VGG ``pre_logits``:
  ``if x.shape[-2] < 7`` on a traced shape) runs as fp32 Python. Its conv/linear children are still
  quantized one by one, eager-mode style: quantize the input, int8 kernel, dequantize the output
  (``torch.ao.quantization.QuantWrapper``), calibrated with the rest of the model. In VGG-11 that island
  holds a 7x7 conv 512->4096 (100 M multiply-adds, 400 MB of fp32 weights read on every call), two
  thirds of the fp32 model's time.
- **Islands run in the memory format they are fastest in, set once.** Quantized convs hand over
  channels-last tensors. An fp32 conv whose weight is contiguous then has oneDNN re-lay out the weight
  (or the input) on every call: two ``aten::copy_`` of ~400 ms each per inference on VGG-11's island.
  :func:`fix_layouts` finds every fp32 conv by the input it really receives, times it with the weight in
  each memory format and keeps the fastest, so the copy happens once, here.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from ptsq.algorithms.keep_float import KeepFloat
from ptsq.engines.common import run_with_hooks

_LEAVES = (nn.Conv1d, nn.Conv2d, nn.Linear)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
UNTRACEABLE = "cannot be traced"  # the reason prefix capture.make_traceable gives untraceable islands


def untraceable_islands(model: nn.Module) -> list[str]:
    """Qualified names of the KeepFloat islands kept fp32 only because FX cannot trace them."""
    return [n for n, m in model.named_modules() if isinstance(m, KeepFloat) and m.reason.startswith(UNTRACEABLE)]


def prepare_island_leaves(model: nn.Module, qconfig: Any) -> list[str]:
    """Insert observers around each conv/linear leaf of the untraceable islands (in place); their names.

    Leaves already kept fp32 (skip rules, speed guard: nested KeepFloat) are left alone.
    """
    from torch.ao.quantization import QuantWrapper, prepare

    names: list[str] = []
    for island in untraceable_islands(model):
        inner = model.get_submodule(island).inner
        for name, mod in list(inner.named_modules()):
            if type(mod) not in _LEAVES or _inside_keepfloat(inner, name):
                continue
            wrapped = QuantWrapper(mod)
            wrapped.qconfig = qconfig
            prepare(wrapped, inplace=True)
            _set(inner, name, wrapped)
            names.append(f"{island}.inner.{name}")
    return names


def convert_island_leaves(model: nn.Module, names: list[str]) -> list[str]:
    """Convert the leaves :func:`prepare_island_leaves` observed; those never called stay fp32. Converted names."""
    from torch.ao.quantization import convert

    done = []
    for name in names:
        wrapped = model.get_submodule(name)
        observer = getattr(wrapped.module, "activation_post_process", None)
        if observer is None or not _observed(observer):  # the island never called it: nothing measured
            _set(model, name, wrapped.module)
            if observer is not None:
                del wrapped.module.activation_post_process
            continue
        convert(wrapped, inplace=True)
        done.append(name)
    return done


def public_name(name: str) -> str:
    """``pre_logits.inner.fc1`` (the wrapper's path) -> ``pre_logits.fc1`` (the user's)."""
    name = name.replace(".inner.", ".")
    return name[: -len(".inner")] if name.endswith(".inner") else name


def _observed(observer: Any) -> bool:
    lo = getattr(observer, "min_val", None)
    return lo is not None and lo.numel() > 0 and bool(torch.isfinite(lo).all())


def _inside_keepfloat(root: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(isinstance(root.get_submodule(".".join(parts[:i])), KeepFloat) for i in range(1, len(parts)))


def _set(root: nn.Module, qname: str, new: nn.Module) -> None:
    parent, _, leaf = qname.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


# ------------------------------------------------------------------------------------ memory format
def _float_convs(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, _CONVS)}


def _inputs_of(model: nn.Module, convs: dict[str, nn.Module], args: tuple[Any, ...]) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def pre(_m: nn.Module, inputs: Any) -> None:
            if name not in seen and inputs and isinstance(inputs[0], torch.Tensor) and not inputs[0].is_quantized:
                seen[name] = inputs[0].detach().clone(memory_format=torch.preserve_format)

        return pre

    run_with_hooks(model, args, pre={mod: keep(name) for name, mod in convs.items()})
    return seen


def _format_of(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


def _fmt(f: torch.memory_format) -> str:
    return str(f).split(".")[-1].replace("_", "-")


def _min_ms(fn: Any, x: torch.Tensor, runs: int) -> float:
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    best = float("inf")
    with torch.inference_mode():
        fn(x)
        for _ in range(runs):
            t0 = clock()
            fn(x)
            best = min(best, clock() - t0)
    return best * 1000.0


def fix_layouts(
    model: nn.Module, args: tuple[Any, ...], threads: int, runs: int = 5, *, measure: bool = True
) -> list[str]:
    """Give every fp32 conv the weight memory format it runs fastest in for the input it really gets.

    Returns notes for the convs that changed. A change can change what the next fp32 conv receives,
    so the model is looked at again until nothing changes (at most 4 passes). ``measure=False`` (speed
    guard off: choices fixed everywhere) gives the weight the input's format without timing.
    """
    saved = torch.get_num_threads()
    notes: list[str] = []
    done: set[str] = set()
    try:
        for _ in range(4):
            convs = {n: m for n, m in _float_convs(model).items() if n not in done}
            torch.set_num_threads(saved)  # what each conv receives does not depend on the thread count
            inputs = _inputs_of(model, convs, args)
            torch.set_num_threads(threads)
            changed = False
            for name, x in inputs.items():
                mod = convs[name]
                want = _format_of(x)
                have = _format_of(mod.weight) if mod.weight.dim() == x.dim() else want
                if want == have:
                    continue
                done.add(name)
                if not measure:
                    mod.to(memory_format=want)
                    changed = True
                    notes.append(f"fp32 island '{public_name(name)}': weights laid out {_fmt(want)} once "
                                 "(the format of the tensors it receives)")  # fmt: skip
                    continue
                other = copy.deepcopy(mod).to(memory_format=want)
                now_ms, new_ms = _min_ms(mod, x, runs), _min_ms(other, x, runs)
                if new_ms < now_ms:
                    mod.to(memory_format=want)
                    changed = True
                    notes.append(
                        f"fp32 island '{public_name(name)}': weights laid out {_fmt(want)} once "
                        f"(the format of the tensors it receives): {now_ms:.2f} -> {new_ms:.2f} ms"
                    )
            if not changed:
                break
    finally:
        torch.set_num_threads(saved)
    return notes


__all__ = [
    "UNTRACEABLE",
    "convert_island_leaves",
    "fix_layouts",
    "prepare_island_leaves",
    "public_name",
    "untraceable_islands",
]

"""What every engine shares: skip rules resolved to layers, a quiet context for torch's warnings, numpy inputs,
one forward pass with hooks on some modules."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ptsq.config import QuantConfig
from ptsq.errors import ConfigError
from ptsq.machine import has_vnni


@contextlib.contextmanager
def quiet(all_user_warnings: bool = False) -> Iterator[None]:
    """Silence torch's deprecation and tracer chatter while an engine works; ptsq reports through notes."""
    with warnings.catch_warnings():
        if all_user_warnings:
            warnings.filterwarnings("ignore", category=UserWarning)
        else:
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # quantized scalars traced as constants
        yield


def outermost(names: dict[str, str]) -> dict[str, str]:
    """Drop names nested inside another chosen name (the outer one keeps them fp32 already)."""
    keep = {}
    for name, reason in names.items():
        parts = name.split(".")
        if not any(".".join(parts[:i]) in names for i in range(1, len(parts))):
            keep[name] = reason
    return keep


def skip_targets(model: nn.Module, config: QuantConfig) -> dict[str, str]:
    """Qualified names the user's skip rules keep in fp32 (outermost only); a rule matching nothing is an error."""
    chosen: dict[str, str] = {}
    for rule in config.skip:
        hits = [
            name
            for name, mod in model.named_modules()
            if name and rule.matches(name, f"{type(mod).__module__}.{type(mod).__qualname__}")
        ]
        if not hits:
            raise ConfigError(
                f"skip rule '{rule}' matches no layer of the model",
                "check the layer names with 'ptsq quantize ... --json' (precision map) and fix the rule",
            )
        for name in hits:
            chosen.setdefault(name, f"kept in fp32 by skip rule '{rule}'")
    return outermost(chosen)


def skip_reason(name: str, skipped: dict[str, str]) -> str | None:
    """Why layer ``name`` is kept fp32 when it is, or lies inside, a layer the skip rules named."""
    return next((r for k, r in skipped.items() if name == k or name.startswith(k + ".")), None)


def reduce_range(choice: str, applies: bool = True) -> bool:
    """A 7-bit ``reduce_range`` choice (auto/on/off): auto = on where it ``applies`` and the CPU lacks VNNI,
    whose absence makes u8 x s8 kernels add pairs of products in saturating 16 bits."""
    return (applies and not has_vnni()) if choice == "auto" else choice == "on"


def to_numpy(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Tensors (and array-likes) as numpy arrays, for runtimes outside torch."""
    import numpy as np

    return tuple(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in args)


__all__ = ["outermost", "quiet", "reduce_range", "skip_reason", "skip_targets", "to_numpy"]


def run_with_hooks(
    model: nn.Module,
    args: tuple[Any, ...],
    forward: dict[nn.Module, Callable[..., Any]] | None = None,
    pre: dict[nn.Module, Callable[..., Any]] | None = None,
    with_kwargs: bool = False,
) -> None:
    """``model(*args)`` once, without autograd, with forward (``pre``: forward-pre) hooks on some modules;
    the hooks are gone afterwards, whatever happened. ``with_kwargs``: forward hooks also get the keyword
    inputs, as ``hook(module, args, kwargs, output)``."""
    handles = [m.register_forward_hook(f, with_kwargs=with_kwargs) for m, f in (forward or {}).items()]
    handles += [m.register_forward_pre_hook(f) for m, f in (pre or {}).items()]
    try:
        with torch.inference_mode():
            model(*args)
    finally:
        for h in handles:
            h.remove()


def input_shapes(
    model: nn.Module, args: tuple[Any, ...], keep: Callable[[str, nn.Module], bool]
) -> dict[str, tuple[int, ...]]:
    """Shape of the first input each kept submodule sees (its first call) when ``model`` runs ``args``."""
    shapes: dict[str, tuple[int, ...]] = {}

    def note(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, inputs: Any, _o: Any) -> None:
            if inputs and isinstance(inputs[0], torch.Tensor):
                shapes.setdefault(name, tuple(inputs[0].shape))

        return hook

    run_with_hooks(model, args, {m: note(n) for n, m in model.named_modules() if keep(n, m)})
    return shapes

"""Keep chosen modules in fp32 inside an FX-quantized model, and find int8 kernels that lie.

``KeepFloat`` wraps a module so the FX tracer treats it as an opaque leaf with no qconfig: FX then
inserts dequantize before it and quantize after it. This is more robust than giving a module type a
``None`` qconfig, which crashes ``convert_fx`` for PReLU in torch 2.14 (AttributeError in lowering).

Kernel probes quantize one module of a suspect type on a known input range and compare it with
fp32. An int8 activation kernel should reach ~40 dB there; the quantized PReLU kernel in torch
2.14.1 reaches ~3 dB (it halves positive inputs), so PReLU is kept in fp32 when the probe says so.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any

import torch
from torch import nn

PROBE_MIN_SQNR_DB = 25.0

# Module types whose int8 kernels are measured before they are trusted.
SUSPECT_TYPES: tuple[type[nn.Module], ...] = (
    nn.PReLU,
    nn.Hardswish,
    nn.ELU,
    nn.LeakyReLU,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
)


class KeepFloat(nn.Module):
    """Run ``inner`` in fp32; ``reason`` is reported in the precision map."""

    def __init__(self, inner: nn.Module, reason: str) -> None:
        super().__init__()
        self.inner = inner
        self.reason = reason

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # models read their layers' attributes in forward (timm's edgenext: token_projection.weight.dtype)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    ref = ref.detach().float()
    err = (ref - test.detach().float()).pow(2).mean()
    sig = ref.pow(2).mean()
    if err == 0:
        return float("inf")
    return float(10 * torch.log10(sig / err))


@functools.cache
def _probe_type(cls: type[nn.Module], backend: str) -> float:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from ptsq.backends import activate, qconfig_name

    activate(backend)
    torch.manual_seed(0)
    mod = cls()
    if isinstance(mod, nn.PReLU):  # a slope unlike the default exposes sign-dependent bugs
        with torch.no_grad():
            mod.weight.fill_(0.2)
    model = nn.Sequential(nn.Identity(), mod).eval()
    x = torch.linspace(-4.0, 4.0, 8 * 32 * 32).reshape(8, 1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping(qconfig_name(backend)), (x,))
        prepared(x)
        quantized = convert_fx(prepared)
        with torch.no_grad():
            return sqnr_db(model(x), quantized(x))


def probe(cls: type[nn.Module], backend: str) -> float | None:
    """SQNR (dB) of the int8 kernel for ``cls`` on a ramp input; None if it cannot be probed."""
    try:
        return _probe_type(cls, backend)
    except Exception:  # a type the backend cannot quantize alone: nothing to distrust
        return None


def broken_kernels(model: nn.Module, backend: str) -> dict[type[nn.Module], float]:
    """Suspect module types present in ``model`` whose int8 kernel fails its probe, with the probe SQNR."""
    present = {type(m) for m in model.modules() if type(m) in SUSPECT_TYPES}
    bad: dict[type[nn.Module], float] = {}
    for cls in sorted(present, key=lambda c: c.__name__):
        score = probe(cls, backend)
        if score is not None and score < PROBE_MIN_SQNR_DB:
            bad[cls] = score
    return bad


def wrap_modules(model: nn.Module, names: dict[str, str]) -> None:
    """Replace each submodule named in ``names`` (qualified name -> reason) by ``KeepFloat`` in place."""
    for qname, reason in sorted(names.items(), key=lambda kv: kv[0].count("."), reverse=True):
        parent_name, _, child = qname.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        inner = getattr(parent, child)
        if isinstance(inner, KeepFloat):
            continue
        setattr(parent, child, KeepFloat(inner, reason))

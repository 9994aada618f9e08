"""Kernel probes: find int8 kernels that lie before a model is trusted to them.

A probe quantizes one module of a suspect type on a known input ramp and compares it with fp32.
An int8 activation kernel should reach ~40 dB there; the quantized PReLU kernel in torch 2.14.1
reaches ~3 dB (it halves positive inputs), so PReLU is kept in fp32 when the probe says so.
"""

from __future__ import annotations

import copy
import functools
import warnings

import torch
from torch import nn

from ptsq.backends import activate, qconfig_name
from ptsq.fidelity import sqnr_db

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


@functools.cache
def _probe_type(cls: type[nn.Module], backend: str) -> float:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

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


__all__ = ["PROBE_MIN_SQNR_DB", "SUSPECT_TYPES", "broken_kernels", "probe"]

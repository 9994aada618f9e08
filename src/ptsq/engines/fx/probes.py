"""Kernel probes: find int8 kernels that lie before a model is trusted to them.

A probe quantizes one module of a suspect type on a known input ramp and compares it with fp32.
An int8 activation kernel should reach ~40 dB there; the quantized PReLU kernel in torch 2.14.1
reaches ~3 dB (it halves positive inputs), so PReLU is kept in fp32 when the probe says so.
Transposed convs are probed per configuration (channels, kernel, stride): x86's int8 ConvTranspose
is wrong only for some of them (:func:`broken_layers`).
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any

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


# Layer types whose int8 kernel is measured per configuration: x86's quantized ConvTranspose returns
# noise (~ -2 dB) whenever in_channels != out_channels in torch 2.14.1 (fbgemm and qnnpack are right).
SUSPECT_LAYERS: tuple[type[nn.Module], ...] = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _layer_config(m: nn.Module) -> tuple[Any, ...]:
    return (type(m), m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.output_padding,
            m.groups, m.dilation)  # fmt: skip


@functools.cache
def _probe_layer(config: tuple[Any, ...], backend: str) -> float:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    activate(backend)
    cls, cin, cout, k, stride, pad, out_pad, groups, dil = config
    g = torch.Generator().manual_seed(0)
    layer = cls(cin, cout, k, stride=stride, padding=pad, output_padding=out_pad, groups=groups, dilation=dil)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model = nn.Sequential(layer).eval()
    x = torch.randn(2, cin, *([max(6, 2 * max(k))] * len(k)), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping(qconfig_name(backend)), (x,))
        prepared(x)
        with torch.no_grad():
            return sqnr_db(model(x), convert_fx(prepared)(x))


def broken_layers(model: nn.Module, backend: str) -> dict[str, str]:
    """Layers (qualified name -> reason) whose int8 kernel, probed with their own configuration, is wrong."""
    bad: dict[str, str] = {}
    for name, m in model.named_modules():
        if type(m) not in SUSPECT_LAYERS:
            continue
        try:
            score = _probe_layer(_layer_config(m), backend)
        except Exception:  # a configuration the backend cannot quantize alone: nothing to distrust
            continue
        if score < PROBE_MIN_SQNR_DB:
            bad[name] = (
                f"int8 {type(m).__name__} kernel measured wrong for {m.in_channels}->{m.out_channels} channels "
                f"({score:.1f} dB on a probe), kept in fp32"
            )
    return bad


__all__ = ["PROBE_MIN_SQNR_DB", "SUSPECT_LAYERS", "SUSPECT_TYPES", "broken_kernels", "broken_layers", "probe"]

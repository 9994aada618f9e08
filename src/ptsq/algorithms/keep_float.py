"""Keep chosen modules in fp32 inside a graph-quantized model.

``KeepFloat`` wraps a module so the FX tracer treats it as an opaque leaf with no qconfig: FX then
inserts dequantize before it and quantize after it. This is more robust than giving a module type a
``None`` qconfig, which crashes ``convert_fx`` for PReLU in torch 2.14 (AttributeError in lowering).
The graph clean-up and the tracer recognise the wrapper, so it lives beside them in ``algorithms``.
"""

from __future__ import annotations

from typing import Any

from torch import nn


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
            if name.startswith("__"):  # protocol hooks (copy's __deepcopy__) belong to the wrapper, not inner
                raise
            return getattr(super().__getattr__("inner"), name)


def wrap_modules(model: nn.Module, names: dict[str, str]) -> None:
    """Replace each submodule named in ``names`` (qualified name -> reason) by ``KeepFloat`` in place."""
    for qname, reason in sorted(names.items(), key=lambda kv: kv[0].count("."), reverse=True):
        parent_name, _, child = qname.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        inner = getattr(parent, child)
        if isinstance(inner, KeepFloat):
            continue
        setattr(parent, child, KeepFloat(inner, reason))


__all__ = ["KeepFloat", "wrap_modules"]

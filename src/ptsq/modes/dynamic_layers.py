"""The layers dynamic mode leaves in fp32 without being asked, each with why: the rest of its precision map.

Dynamic quantization has int8 kernels only for weight matrices multiplied by activations whose range
it measures per call (Linear, LSTM, GRU, RNN cells). Every other layer holding weights stays fp32; the
precision map lists them so "1 int8, 0 fp32" never hides five convolutions.
"""

from __future__ import annotations

from torch import nn

from ptsq.engines.base import LayerPrecision

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
         nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)  # fmt: skip
_EMBEDDING = (nn.Embedding, nn.EmbeddingBag)
KINDS = "Linear, LSTM, GRU and RNN cells"  # the types in DYNAMIC_TYPES


def why_fp32(module: nn.Module, supported: str = KINDS) -> str:
    """Why dynamic mode keeps ``module`` in fp32 (``supported`` names the layer types it does quantize)."""
    if isinstance(module, _CONV):
        return f"no int8 convolution in dynamic mode (only {supported}); convs need calibrated ranges: --mode static"
    if isinstance(module, nn.Linear):  # a Linear subclass torch keeps float, e.g. MultiheadAttention's out_proj
        return f"{type(module).__name__} is not a plain Linear: torch's dynamic quantization leaves it fp32"
    if isinstance(module, _EMBEDDING):
        return "a table lookup, no matrix product: dynamic mode keeps embeddings fp32"
    if isinstance(module, _NORM):
        return "a normalisation: dynamic mode quantizes only " + supported
    return f"dynamic mode quantizes only {supported}"


def unquantized_layers(model: nn.Module, supported: dict[str, nn.Module], kinds: str = KINDS) -> list[LayerPrecision]:
    """fp32 rows for every leaf module with weights of its own that is not in ``supported`` (module order)."""
    rows = []
    for name, mod in model.named_modules():
        if not name or name in supported or any(name.startswith(s + ".") for s in supported):
            continue
        if next(mod.children(), None) is not None and not isinstance(mod, nn.MultiheadAttention):
            continue  # containers: their leaves are listed
        if isinstance(mod, nn.MultiheadAttention):
            own = True  # in_proj weights live on the attention module itself
        else:
            own = any(True for _ in mod.parameters(recurse=False))
        if own:
            rows.append(LayerPrecision(name, type(mod).__name__, "fp32", why_fp32(mod, kinds)))
    return rows


def in_module_order(model: nn.Module, rows: list[LayerPrecision]) -> list[LayerPrecision]:
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(rows, key=lambda r: order.get(r.name, len(order)))


__all__ = ["in_module_order", "unquantized_layers", "why_fp32"]

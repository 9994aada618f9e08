"""Dynamic int8 on ONNX Runtime: export fp32 -> onnxruntime.quantization.quantize_dynamic.

Weights are int8 (per output channel by default), activations are quantized per call by
``DynamicQuantizeLinear`` (uint8), so no calibration data is needed. MatMul with a constant
weight becomes ``MatMulInteger``; MatMuls between two activations (attention scores) stay fp32.
Linear layers on 2-D inputs export as ``Gemm``, which the dynamic quantizer skips; they are
rewritten as MatMul + Add first so that every Linear is int8, as on the FX path.

Every input dimension is exported as dynamic (batch and sequence length), since dynamic mode is
meant for encoders fed sentences of any length.

Weight format, measured on all-MiniLM-L6-v2 (60 sentences; onnxruntime 1.32, AVX2 CPU without VNNI):
onnxruntime's defaults (per-tensor int8, full range) give mean embedding cosine 0.965; per-channel
int8 0.9918; per-channel int8 with 7-bit ``reduce_range`` 0.9927 (u8 x s8 products no longer
saturate the 16-bit adds of vpmaddubsw); per-channel uint8 weights 0.9941 but clearly slower (u8 x u8
kernels). Per-tensor 7-bit weights are worse still (0.884). Hence: per-channel int8, ``reduce_range``
on when the CPU lacks VNNI (``OnnxOptions.reduce_range`` "auto"), ``OnnxOptions.weights`` "uint8" for the last
bit of accuracy.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from ptsq.config import QuantConfig
from ptsq.engines.base import LayerPrecision
from ptsq.engines.common import reduce_range
from ptsq.engines.onnx.export import OrtModule, excluded_nodes, export_fp32, no_logging, node_module
from ptsq.errors import QuantizationError, first_line

# onnxruntime's dynamic quantizer has integer kernels for these. It has none for Gemm: see _gemm_to_matmul.
# Gather = embedding tables, stored int8 and dequantized row by row after the lookup: all-MiniLM-L6-v2's
# artifact shrinks from 59 MB to 23 MB with the same embedding cosine (0.9927) and speed.
# Conv is left out on purpose: dynamic mode targets Linear/RNN layers (ConvInteger is slow on CPUs).
OP_TYPES = ("MatMul", "Attention", "LSTM", "Gather")
_INT8_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention")


def quantize_onnx_dynamic(
    model: nn.Module,
    example: tuple[Any, ...],
    config: QuantConfig,
    layers: dict[str, nn.Module],
    fallback: dict[str, str],
) -> tuple[OrtModule, list[LayerPrecision], dict[str, Any], list[str], bytes]:
    """Export ``model`` and quantize it with onnxruntime's dynamic quantizer.

    ``layers`` are the torch layers dynamic mode targets, ``fallback`` those kept fp32 by skip rules
    (name -> reason). Returns (runnable model, precision rows per layer, manifest details, notes,
    the exported fp32 ONNX bytes).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exporter, weights = config.onnx.exporter, config.onnx.weights
    narrow = reduce_range(config.onnx.reduce_range)
    work = copy.deepcopy(model).eval()
    fp32_bytes, used = export_fp32(work, example, exporter, all_dims=True)
    notes = [] if used == exporter else [f"the {exporter} ONNX exporter failed; exported with the {used} exporter"]
    fp32 = _gemm_to_matmul(onnx.load_model_from_string(fp32_bytes))
    with tempfile.TemporaryDirectory(prefix="ptsq-onnx-dyn-") as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(fp32.SerializeToString())
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), no_logging():
                warnings.simplefilter("ignore")
                quantize_dynamic(
                    str(src),
                    str(dst),
                    op_types_to_quantize=list(OP_TYPES),
                    per_channel=config.per_channel,
                    reduce_range=narrow,
                    weight_type=QuantType.QInt8 if weights == "int8" else QuantType.QUInt8,
                    nodes_to_exclude=excluded_nodes(fp32, fallback),
                )
        except Exception as exc:
            raise QuantizationError(
                f"onnxruntime quantize_dynamic failed: {first_line(exc)}", "try --engine fx (eager dynamic int8)"
            ) from exc
        int8_bytes = dst.read_bytes()
    int8 = onnx.load_model_from_string(int8_bytes)
    rows = _precision(fp32, int8, layers, fallback)
    if not any(r.precision == "int8" for r in rows):
        raise QuantizationError(
            f"onnxruntime's dynamic quantizer made no layer of {type(model).__name__} int8",
            "use --engine fx for dynamic mode on this model",
        )
    details = {
        "capture": f"torch.onnx export ({used}), every input dimension dynamic",
        "exporter": used,
        "weights": f"{weights} " + ("per-channel" if config.per_channel else "per-tensor"),
        "activations": "dynamic per-tensor uint8 (DynamicQuantizeLinear)",
        "reduce_range": narrow,
        "op_types": list(OP_TYPES),
        "int8_embeddings": sum(
            n.op_type == "Gather" and n.input[0].endswith("_quantized") for n in int8.graph.node
        ),  # int8 tables, not in the per-layer rows
        "runtime": "onnxruntime CPUExecutionProvider",
    }
    return OrtModule(int8_bytes).eval(), rows, details, notes, fp32_bytes


def _precision(fp32: Any, int8: Any, layers: dict[str, nn.Module], fallback: dict[str, str]) -> list[LayerPrecision]:
    """One row per targeted torch layer: int8 when an integer node came from it.

    The quantizer drops node metadata but names a replaced node ``<fp32 node>_quant``, so the torch
    module is looked up on the fp32 node of that name.
    """
    module_of = {n.name: node_module(n) for n in fp32.graph.node}
    quantized = {module_of.get(n.name.removesuffix("_quant"), "") for n in int8.graph.node if n.op_type in _INT8_OPS}
    rows = []
    for name, mod in layers.items():
        if name in quantized:
            rows.append(LayerPrecision(name, type(mod).__name__, "int8"))
        else:
            why = fallback.get(name) or "onnxruntime's dynamic quantizer leaves it in fp32"
            rows.append(LayerPrecision(name, type(mod).__name__, "fp32", why))
    return rows


def _gemm_to_matmul(model: Any) -> Any:
    """Rewrite ``Gemm(A, W, b)`` with a constant W (alpha = beta = 1, A not transposed) as MatMul + Add.

    The MatMul keeps the Gemm's name and metadata, so the precision map still finds its torch module.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if n.op_type != "Gemm" or not plain or len(n.input) < 2 or n.input[1] not in inits:
            nodes.append(n)
            continue
        weight = numpy_helper.to_array(inits[n.input[1]])
        name = n.input[1] + ("_t" if attrs.get("transB", 0) else "")
        if attrs.get("transB", 0):
            model.graph.initializer.append(numpy_helper.from_array(weight.T.copy(), name))
        bias = len(n.input) > 2 and n.input[2]
        out = n.output[0] + "_matmul" if bias else n.output[0]
        mm = helper.make_node("MatMul", [n.input[0], name], [out], name=n.name)
        mm.metadata_props.extend(n.metadata_props)
        nodes.append(mm)
        if bias:
            add = helper.make_node("Add", [out, n.input[2]], [n.output[0]], name=n.name + "_bias")
            add.metadata_props.extend(n.metadata_props)
            nodes.append(add)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model

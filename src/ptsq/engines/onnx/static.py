"""ONNX Runtime static quantization: torch.onnx export -> onnxruntime.quantization.quantize_static.

The fp32 model is exported with the dynamo exporter (TorchScript-based exporter as fallback) and
quantized by onnxruntime's quantizer with calibration data from ptsq. Defaults are the ones that are
fast on x86: unsigned 8-bit activations with signed 8-bit per-channel weights (U8S8); signed
activations (S8S8) leave most convolutions in fp32 on AVX2 machines and are slow. The artifact is
an ``.onnx`` file with the ptsq manifest in its ``metadata_props``; loading returns a module that runs
it with onnxruntime and takes and returns torch tensors.

Engine options (``QuantConfig(onnx=OnnxOptions(...))``): ``format`` ``"qdq"`` (default) or ``"qoperator"``;
``calibration`` ``"minmax"`` (default), ``"entropy"`` or ``"percentile"``; ``activations``
``"uint8"`` (default) or ``"int8"``; ``exporter`` ``"dynamo"`` (default) or ``"torchscript"``;
``weights`` ``"int8"`` (default) or ``"uint8"`` (never saturates, but 7x slower on Lite0 here);
``reduce_range`` ``"auto"`` (default: on for int8 weights when the CPU lacks VNNI), ``"on"`` or ``"off"``;
``saturation`` (how weights avoid saturation when reduce_range is on) ``"pairs"`` (default) or
``"reduce-range"`` (the earlier behaviour: 7-bit weights on every non-depthwise conv and linear).

Without VNNI, onnxruntime's u8 x s8 kernels (vpmaddubsw) add pairs of products in 16 bits and
saturate on full-range 8-bit weights: a PReLU face model measured 25.6 dB SQNR with full-range
weights and 43.5 dB with 7-bit ``reduce_range`` here (the FX engine's x86 qconfig does the same).
7-bit weights cost fidelity elsewhere (EfficientNet-Lite0: 12.9 dB). Depthwise convolutions run
in a kernel that accumulates in 32 bits, so their weights keep all 8 bits (Lite0: 14.6 dB, same speed).
``"pairs"`` gives each output channel of a conv (and of a Gemm with transposed weights) the finest
symmetric scale at which its two largest same-signed weights add up to at most 128 steps (so any
pair x 255 stays inside int16, whatever the pairing): usually close to 8 bits, never coarser than 7.
EfficientNet-Lite0 (64 calibration photos, 20 photos scored, all convs int8, 1 thread latency
unchanged): 7-bit weights 15.00 dB, pairs 16.34 dB (the same with graph optimizations off, so no
saturation). Tried and not kept: full 8-bit weights with 8-bit activations 17.66 dB emulated but 8.4
dB in the real kernels (saturation); 7-bit activations (u8 0..127) with 8-bit weights 4.5 dB, because
onnxruntime drops a ReLU6/Clip and lets the u8 Q saturate at 255 instead (14.9 dB with the Clips kept,
7-bit only on pointwise-conv inputs 15.2 dB); ptsq's histogram observer for the activation ranges
instead of MinMax, with pairs 16.25 dB. onnxruntime already quantizes a Clip/Relu input over the
Clip/Relu output's range. The FX engine reached 18.0 dB there while its speed guard kept the stem and 5
depthwise convs fp32, 16.4 dB with the 9 it keeps since; it also corrects biases.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ptsq.algorithms.cleanup import GRAPH_STEPS, cleanup
from ptsq.config import QuantConfig
from ptsq.engines import register
from ptsq.engines.base import EngineResult, LayerPrecision
from ptsq.engines.common import reduce_range, skip_reason, skip_targets, to_numpy
from ptsq.engines.onnx.export import MANIFEST_KEY, OrtModule, excluded_nodes, export_fp32, no_logging, node_module
from ptsq.errors import QuantizationError, first_line

_WEIGHTED = {"Conv", "Gemm", "MatMul", "ConvTranspose"}
_COMPUTE = _WEIGHTED | {
    "Add", "Mul", "Relu", "Clip", "PRelu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Concat", "Softmax", "Gelu",
    "LayerNormalization", "BatchNormalization", "Resize", "Sub", "Div", "Erf",
}  # fmt: skip


def precision_map(model: Any, skipped: dict[str, str]) -> list[LayerPrecision]:
    """Which compute nodes of the quantized ONNX graph run in int8 (QDQ pairs or QLinear ops)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def from_dq(name: str) -> bool:
        p = producer.get(name)
        return p is not None and p.op_type == "DequantizeLinear"

    rows: list[LayerPrecision] = []
    for n in model.graph.node:
        op = n.op_type
        qop = re.sub(r"^(QLinear|Q)(?=[A-Z])", "", op)
        if op in ("QuantizeLinear", "DequantizeLinear") or (qop not in _COMPUTE and op not in _COMPUTE):
            continue
        mod = node_module(n)
        name = mod or n.name
        if op != qop or op.endswith(("Integer",)):
            rows.append(LayerPrecision(name, qop, "int8"))
            continue
        ins = [i for i in n.input if i]
        if op in _WEIGHTED:
            int8 = len(ins) >= 2 and from_dq(ins[0]) and from_dq(ins[1])
        else:
            out_q = any(c.op_type == "QuantizeLinear" for o in n.output for c in consumers.get(o, []))
            int8 = bool(ins) and all(from_dq(i) for i in ins[:2]) and out_q
        if int8:
            rows.append(LayerPrecision(name, op, "int8"))
            continue
        reason = skip_reason(mod, skipped) or f"onnxruntime's quantizer leaves {op} in fp32"
        rows.append(LayerPrecision(name, op, "fp32", reason))
    return rows


class _Reader:
    """onnxruntime CalibrationDataReader over batches collected from ptsq's calibration stream."""

    def __init__(self, batches: list[tuple[np.ndarray, ...]], names: list[str]) -> None:
        self.batches, self.names = batches, names
        self._it: Iterator[tuple[np.ndarray, ...]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._it, None)
        return None if b is None else dict(zip(self.names, b))

    def rewind(self) -> None:
        self._it = iter(self.batches)


def _depthwise_weights(model: Any) -> list[str]:
    """Weight initializers of depthwise convs (one input channel per group), whose kernel cannot saturate."""
    one_in = {i.name for i in model.graph.initializer if len(i.dims) == 4 and i.dims[1] == 1}  # [out, in/g, kh, kw]
    return [
        n.input[1]
        for n in model.graph.node
        if n.op_type == "Conv" and n.input[1] in one_in and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]


def _full_range_spec(per_channel: bool) -> list[dict[str, Any]]:
    return [{"reduce_range": False, **({"axis": 0} if per_channel else {})}]


def _full_range_depthwise(model: Any, per_channel: bool) -> dict[str, Any]:
    """Overrides that keep 8-bit weights on depthwise convs, whose kernel cannot saturate."""
    weights = _depthwise_weights(model)
    return {"TensorQuantOverrides": {w: _full_range_spec(per_channel) for w in weights}} if weights else {}


def _pair_scale(w: np.ndarray) -> float:
    """The smallest symmetric s8 scale at which no two same-signed weights of ``w`` add up to more than 128
    steps, so u8 x s8 pair sums stay inside int16 whatever the activations (255 * 128 < 32767)."""
    w = w.reshape(-1).astype(np.float64)
    pos, neg = np.sort(w[w > 0])[::-1], np.sort(-w[w < 0])[::-1]
    top2 = max(float(pos[:2].sum()) if pos.size else 0.0, float(neg[:2].sum()) if neg.size else 0.0)
    scale = max(float(np.abs(w).max(initial=0.0)) / 127, top2 / 127)  # rounding adds at most one step
    return scale if scale > 0 else 1.0


def _pair_safe_weights(model: Any, per_channel: bool) -> dict[str, Any]:
    """Overrides giving every conv weight the finest scale that cannot saturate (8-bit depthwise)."""
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    out: dict[str, Any] = {w: _full_range_spec(per_channel) for w in _depthwise_weights(model)}
    for n in model.graph.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 2 or n.input[1] not in init or n.input[1] in out:
            continue
        if n.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in n.attribute):
            continue  # [in, out] weights: left to reduce_range
        w = numpy_helper.to_array(init[n.input[1]])
        if per_channel:
            out[n.input[1]] = [
                {"axis": 0, "scale": np.array(_pair_scale(c), np.float32), "zero_point": np.array(0, np.int8)}
                for c in w
            ]
        else:
            out[n.input[1]] = [{"scale": np.array(_pair_scale(w), np.float32), "zero_point": np.array(0, np.int8)}]
    return {"TensorQuantOverrides": out} if out else {}


def prepare_for_onnx(model: nn.Module, config: QuantConfig) -> tuple[nn.Module, list[str]]:
    """ptsq's fp32-preserving graph clean-up (conv modules, pad/BN folding, cross-layer equalization).

    EfficientNet-Lite0 here: 14.70 dB without, 15.01 dB with (equalization is the gain). Bias
    correction emulating onnxruntime's int8 weight rounding measured worse (14.75 dB), so it is not used.
    """
    try:
        return cleanup(model, tuple(s for s in config.cleanup if s in GRAPH_STEPS))
    except Exception:  # untraceable by FX: export the model as it is
        return model, []


def _quantize_static(fp32_bytes: bytes, batches: list[tuple[np.ndarray, ...]], skipped: dict[str, str],
                     config: QuantConfig, narrow: bool) -> bytes:  # fmt: skip
    """onnxruntime's quantize_static on the exported model, in a scratch folder; the int8 model's bytes."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    opts = config.onnx
    fp32 = onnx.load_model_from_string(fp32_bytes)
    names = [i.name for i in fp32.graph.input]
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ptsq-onnx-") as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(fp32_bytes)
        cwd = os.getcwd()
        try:
            os.chdir(d)  # the calibrator writes an augmented model next to the working directory
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), no_logging():
                warnings.simplefilter("ignore")
                extra: dict[str, Any] | None = None
                if narrow:
                    pick = _pair_safe_weights if opts.saturation == "pairs" else _full_range_depthwise
                    extra = pick(fp32, config.per_channel)
                quantize_static(
                    str(src),
                    str(dst),
                    _Reader(batches, names),
                    quant_format=QuantFormat.QDQ if opts.format == "qdq" else QuantFormat.QOperator,
                    per_channel=config.per_channel,
                    reduce_range=narrow,
                    activation_type=QuantType.QUInt8 if opts.activations == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8 if opts.weights == "int8" else QuantType.QUInt8,
                    calibrate_method=methods[opts.calibration],
                    nodes_to_exclude=excluded_nodes(fp32, skipped),
                    extra_options=extra,
                )
        except Exception as exc:
            raise QuantizationError(
                f"onnxruntime quantize_static failed: {first_line(exc)}", "try --engine fx or --engine pt2e"
            ) from exc
        finally:
            os.chdir(cwd)
        return dst.read_bytes()


@register("onnx")
class OnnxEngine:
    name = "onnx"
    suffix = ".onnx"

    def quantize(
        self,
        model: nn.Module,
        calibrate: Callable[[Callable[..., Any]], int],
        example_args: tuple[Any, ...],
        config: QuantConfig,
        backend: str,
    ) -> EngineResult:
        import onnx

        opts = config.onnx
        narrow = reduce_range(opts.reduce_range, applies=opts.weights == "int8")
        work = copy.deepcopy(model).eval()
        skipped = skip_targets(work, config)
        notes = [f"'{n}' {r}" for n, r in skipped.items()]
        batches: list[tuple[np.ndarray, ...]] = []
        calibrate(lambda *a: batches.append(to_numpy(a)))
        if not skipped:  # skip rules name the original layers; clean-up may rename some
            work, cleaned = prepare_for_onnx(work, config)
            notes.extend(cleaned)
        fp32_bytes, used = export_fp32(work, example_args, opts.exporter)
        if used != opts.exporter:
            notes.append(f"the {opts.exporter} ONNX exporter failed; exported with the {used} exporter")
        int8_bytes = _quantize_static(fp32_bytes, batches, skipped, config, narrow)
        int8 = onnx.load_model_from_string(int8_bytes)
        details = {
            "exporter": used,
            "opset": max((o.version for o in int8.opset_import if o.domain in ("", "ai.onnx")), default=0),
            "format": opts.format,
            "activations": opts.activations,
            "weights": f"{opts.weights} per-channel" if config.per_channel else f"{opts.weights} per-tensor",
            "calibration_method": opts.calibration,
            "reduce_range": narrow,
            "saturation": opts.saturation if narrow else None,
            "runtime": "onnxruntime CPUExecutionProvider",
        }
        return EngineResult(
            module=OrtModule(int8_bytes).eval(),
            precision=precision_map(int8, skipped),
            notes=notes,
            details=details,
        )

    def save(self, result: EngineResult, path: Path, manifest_json: str, example_args: tuple[Any, ...]) -> nn.Module:
        import onnx

        module = result.module
        if not isinstance(module, OrtModule):
            raise QuantizationError("the onnx engine can only save its own results", "report this to ptsq")
        model = onnx.load_model_from_string(module.model_bytes)
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = MANIFEST_KEY, manifest_json
        Path(path).write_bytes(model.SerializeToString())
        return module

    def can_load(self, path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                if f.read(1) != b"\x08":  # a ModelProto starts with ir_version (field 1, varint)
                    return False
            import onnx

            model = onnx.load_model(str(path), load_external_data=False)
        except Exception:
            return False
        return any(p.key == MANIFEST_KEY for p in model.metadata_props)

    def load(self, path: Path) -> tuple[nn.Module, str]:
        import onnx

        data = Path(path).read_bytes()
        model = onnx.load_model_from_string(data)
        text = next((p.value for p in model.metadata_props if p.key == MANIFEST_KEY), "")
        module = OrtModule(data).eval()
        module.session()  # fail here (not on the first call) if onnxruntime cannot run the file
        return module, text

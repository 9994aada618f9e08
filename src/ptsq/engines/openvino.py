"""OpenVINO int8: ``openvino.convert_model`` -> ``nncf.quantize`` -> OpenVINO IR run by the CPU plugin.

The fp32 model is converted from the torch module itself (traced with the example inputs, dynamic
shapes), quantized by NNCF's post-training pipeline on ptsq's calibration batches (min/max ranges,
fast bias correction), and compiled by OpenVINO's CPU plugin, which runs the quantized layers in int8
(depthwise convolutions included, on AVX2 too) and the rest in fp32. Depthwise convolutions are left
out of quantization by default: a 3x3 or 5x5 depthwise filter sums too few inputs to average out the
per-tensor int8 noise of its input, and on CPUs without VNNI their weights drop to 7 bits as well. The
artifact is one zip file holding the IR (``model.xml`` + ``model.bin``) and the ptsq manifest; loading
returns a module that takes and returns torch tensors and runs on ``torch.get_num_threads()`` threads
unless told otherwise.

Engine options (``QuantConfig(openvino=OpenVinoOptions(...))``, documented in ``ptsq.config``):
``preset``, ``bias_correction``, ``model_type``, ``overflow_fix`` (``"auto"``: 7-bit weights in every layer
on CPUs without VNNI, first layer only with it) and ``depthwise`` (``"fp32"`` by default: depthwise convs
stay fp32 and the precision map says so).

EfficientNet-Lite0 here (AVX2, no VNNI), SQNR vs fp32 on the 20 ImageNet photos (FX engine: 16.0 dB):
depthwise fp32 17.8 dB (mixed preset 17.9, accurate bias correction 18.0, overflow fix first_layer 11.9:
the u8 x s8 sums saturate); depthwise int8 11.5 dB (overflow fix off 7.2, first_layer 10.2, accurate bias
correction 13.6). With the 8-bit weights a VNNI CPU would get, the FakeQuantize model scores 24.4 dB
with depthwise fp32 and 13.2 dB with depthwise int8. 1-thread batch-1 latency (interleaved medians of 30):
11.5 ms with depthwise fp32, 10.3 ms with depthwise int8, FX int8 23 ms, torch fp32 48 ms.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ptsq.config import QuantConfig
from ptsq.engines import register
from ptsq.engines.base import EngineResult, LayerPrecision
from ptsq.engines.common import run_with_hooks, skip_reason, skip_targets, to_numpy
from ptsq.errors import QuantizationError, TraceError, first_line
from ptsq.machine import has_vnni

# entries of the artifact zip; the manifest name doubles as the format marker can_load looks for
MANIFEST_ENTRY = "ptsq_openvino/manifest.json"
XML_ENTRY = "ptsq_openvino/model.xml"
BIN_ENTRY = "ptsq_openvino/model.bin"

DEPTHWISE_REASON = (
    "depthwise conv kept in fp32 (openvino.depthwise='fp32'): its few taps do not average out the int8 noise "
    "of its input (EfficientNet-Lite0: 11.5 dB SQNR with int8 depthwise convs, 17.8 dB without)"
)

# CPU-plugin layer types worth listing in the precision map (what the user would call a layer)
_LISTED = {
    "Convolution", "Deconvolution", "FullyConnected", "MatMul", "Pooling", "Eltwise", "Reduce",
    "Interpolate", "MVN", "Softmax", "Concatenation",
}  # fmt: skip
_MODULE = re.compile(r"__module\.([^/]+)/")


@contextlib.contextmanager
def _silence_nncf() -> Iterator[None]:
    """NNCF draws progress bars and logs advice; ptsq reports through its own notes."""
    logging.disable(logging.WARNING)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _conv_behind_norm(model: nn.Module, example_args: tuple[Any, ...]) -> dict[str, str]:
    """norm layer -> the conv/linear feeding it, from one forward pass.

    ``convert_model`` folds BatchNorm into the preceding convolution and the folded node loses the
    convolution's name; the norm's name survives, so this map names the layer after its conv again.
    """
    produced: dict[int, str] = {}
    found: dict[str, str] = {}
    hooks: dict[nn.Module, Any] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            hooks[mod] = lambda m, i, o, n=name: produced.__setitem__(id(o), n)
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            hooks[mod] = lambda m, i, o, n=name: (
                found.__setitem__(n, produced[id(i[0])]) if id(i[0]) in produced else None
            )
    run_with_hooks(model, example_args, hooks)
    return found


def _torch_names(ov_model: Any, behind_norm: dict[str, str]) -> dict[str, str]:
    """OpenVINO node name -> torch module name, for the nodes that can be traced back to one."""
    names: dict[str, str] = {}
    for op in ov_model.get_ordered_ops():
        m = _MODULE.match(op.get_friendly_name())
        if m:
            names[op.get_friendly_name()] = m.group(1)
    for op in ov_model.get_ordered_ops():
        if op.get_friendly_name() in names or op.get_type_name() not in ("Convolution", "GroupConvolution"):
            continue
        for target in (t for out in op.outputs() for t in out.get_target_inputs()):
            norm = names.get(target.get_node().get_friendly_name())
            if norm in behind_norm:
                names[op.get_friendly_name()] = behind_norm[norm]
    return names


def _ignored(names: dict[str, str], skipped: dict[str, str]) -> list[str]:
    return [n for n, mod in names.items() if skip_reason(mod, skipped) is not None]


def _depthwise(ov_model: Any) -> list[str]:
    """OpenVINO node names of the depthwise convolutions (one input channel per group)."""
    found = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "GroupConvolution":
            continue
        shape = op.input(1).get_partial_shape()  # weights: groups, out/group, in/group, kernel...
        if shape.rank.is_static and shape.rank.get_length() >= 3 and shape[2].is_static and shape[2].get_length() == 1:
            found.append(op.get_friendly_name())
    return found


def precision_map(
    compiled: Any, names: dict[str, str], skipped: dict[str, str], kept: dict[str, str] | None = None
) -> list[LayerPrecision]:
    """Where the CPU plugin runs each layer of the compiled model (its runtime precision, per node).

    ``kept``: OpenVINO node name -> why the engine left it out of quantization (fp32 rows say so).
    """
    kept = kept or {}
    rows: list[LayerPrecision] = []
    seen: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind not in _LISTED:
            continue
        fused = [n for n in info["originalLayersNames"].astype(str).split(",") if n]
        mod = next((names[n] for n in fused if n in names), "")
        name = mod or op.get_friendly_name()
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        prec = info["runtimePrecision"].astype(str)
        if prec in ("u8", "i8"):
            rows.append(LayerPrecision(name, kind, "int8"))
            continue
        reason = (
            skip_reason(mod, skipped)
            or next((kept[n] for n in fused if n in kept), None)
            or f"OpenVINO's CPU plugin runs it in {prec} on this CPU"
        )
        rows.append(LayerPrecision(name, kind, "fp32", reason))
    return rows


class OpenVinoModule(nn.Module):
    """Runs an OpenVINO IR with the CPU plugin; takes and returns torch tensors.

    ``threads`` sets ``INFERENCE_NUM_THREADS``; ``None`` follows ``torch.get_num_threads()`` at call
    time (so ``ptsq bench --threads`` and ``torch.set_num_threads`` apply to it too).
    """

    def __init__(self, xml: bytes, weights: bytes, threads: int | None = None) -> None:
        super().__init__()
        self.xml, self.weights, self.threads = xml, weights, threads
        self._request: Any = None
        self._compiled: Any = None
        self._request_threads = 0

    def compiled(self) -> Any:
        import openvino as ov

        n = self.threads or torch.get_num_threads()
        if self._compiled is None or n != self._request_threads:
            core = ov.Core()
            model = core.read_model(model=self.xml, weights=ov.Tensor(np.frombuffer(self.weights, np.uint8).copy()))
            # f32 as the float precision: on bf16/AMX CPUs the plugin would otherwise run fp32 layers in bf16
            props = {"INFERENCE_NUM_THREADS": n, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
            self._compiled = core.compile_model(model, "CPU", props)
            self._request = self._compiled.create_infer_request()
            self._request_threads = n
        return self._compiled

    def forward(self, *args: Any) -> Any:
        self.compiled()
        outs = self._request.infer(list(to_numpy(args)), share_inputs=True, share_outputs=False)
        tensors = [torch.from_numpy(np.asarray(v)) for v in outs.values()]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    def __getstate__(self) -> dict[str, Any]:  # compiled models do not pickle or deep-copy
        state = self.__dict__.copy()
        state["_compiled"] = state["_request"] = None
        return state


def _serialize(ov_model: Any) -> tuple[bytes, bytes]:
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="ptsq-openvino-") as d:
        xml = Path(d) / "model.xml"
        ov.save_model(ov_model, str(xml), compress_to_fp16=False)  # fp32 layers stay bit-exact
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def _nncf_quantize(fp32: Any, batches: list[Any], config: QuantConfig, overflow: str, ignored: list[str]) -> Any:
    """NNCF's post-training quantization of the OpenVINO model on ptsq's calibration batches."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    opts = config.openvino
    advanced = AdvancedQuantizationParameters(
        overflow_fix={
            "first_layer": nncf.OverflowFix.FIRST_LAYER,
            "all": nncf.OverflowFix.ENABLE,
            "off": nncf.OverflowFix.DISABLE,
        }[overflow],
        disable_bias_correction=opts.bias_correction == "off",
        weights_quantization_params=None if config.per_channel else QuantizationParameters(per_channel=False),
    )
    try:
        with _silence_nncf():
            return nncf.quantize(
                fp32,
                nncf.Dataset(batches, lambda b: b[0] if len(b) == 1 else list(b)),
                preset=nncf.QuantizationPreset.PERFORMANCE
                if opts.preset == "performance"
                else nncf.QuantizationPreset.MIXED,
                subset_size=max(1, len(batches)),  # NNCF counts dataset items, here batches
                fast_bias_correction=opts.bias_correction != "accurate",
                model_type=nncf.ModelType.TRANSFORMER if opts.model_type == "transformer" else None,
                ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
                advanced_parameters=advanced,
            )
    except Exception as exc:
        raise QuantizationError(f"nncf.quantize failed: {first_line(exc)}", "try --engine onnx or --engine fx") from exc


@register("openvino")
class OpenVinoEngine:
    name = "openvino"
    suffix = ".ov"

    def quantize(
        self,
        model: nn.Module,
        calibrate: Callable[[Callable[..., Any]], int],
        example_args: tuple[Any, ...],
        config: QuantConfig,
        backend: str,
    ) -> EngineResult:
        import nncf
        import openvino as ov

        opts = config.openvino
        preset, bias, model_type, depthwise = opts.preset, opts.bias_correction, opts.model_type, opts.depthwise
        work = copy.deepcopy(model).eval()
        skipped = skip_targets(work, config)
        try:
            with _silence_nncf():
                fp32 = ov.convert_model(work, example_input=example_args)
        except Exception as exc:  # the converter raises many types
            raise TraceError(
                f"OpenVINO could not convert the model: {first_line(exc)}",
                "try --engine fx, --engine pt2e or --engine onnx",
            ) from None
        names = _torch_names(fp32, _conv_behind_norm(work, example_args))

        batches: list[tuple[np.ndarray, ...]] = []
        calibrate(lambda *a: batches.append(to_numpy(a)))
        overflow = opts.overflow_fix
        if overflow == "auto":  # without VNNI the CPU plugin's u8 x s8 kernels saturate in 16 bits
            overflow = "first_layer" if has_vnni() else "all"
        ignored = _ignored(names, skipped)
        kept = {} if depthwise == "int8" else {n: DEPTHWISE_REASON for n in _depthwise(fp32) if n not in ignored}
        int8 = _nncf_quantize(fp32, batches, config, overflow, ignored + list(kept))
        xml, weights = _serialize(int8)
        module = OpenVinoModule(xml, weights).eval()
        notes = [f"'{n}' {r}" for n, r in skipped.items()]
        if kept:
            notes.append(f"{len(kept)} depthwise convs kept in fp32 (more accurate); depthwise='int8' quantizes them")
        details = {
            "preset": preset,
            "bias_correction": bias,
            "overflow_fix": overflow,
            "depthwise": depthwise,
            "model_type": model_type,
            "weights": "int8 per-channel" if config.per_channel else "int8 per-tensor",
            "calibration_method": "minmax",
            "openvino": ov.get_version().split("-")[0],
            "nncf": nncf.__version__,
            "runtime": "OpenVINO CPU plugin",
        }
        return EngineResult(
            module=module,
            precision=precision_map(module.compiled(), names, skipped, kept),
            notes=notes,
            details=details,
        )

    def save(self, result: EngineResult, path: Path, manifest_json: str, example_args: tuple[Any, ...]) -> nn.Module:
        module = result.module
        if not isinstance(module, OpenVinoModule):
            raise QuantizationError("the openvino engine can only save its own results", "report this to ptsq")
        # stored, not deflated: the weights are int8 already and loading stays a plain read
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(MANIFEST_ENTRY, manifest_json)
            zf.writestr(XML_ENTRY, module.xml)
            zf.writestr(BIN_ENTRY, module.weights)
        return module

    def can_load(self, path: Path) -> bool:
        try:
            with zipfile.ZipFile(path) as zf:
                return MANIFEST_ENTRY in zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return False

    def load(self, path: Path) -> tuple[nn.Module, str]:
        with zipfile.ZipFile(path) as zf:
            text = zf.read(MANIFEST_ENTRY).decode()
            module = OpenVinoModule(zf.read(XML_ENTRY), zf.read(BIN_ENTRY)).eval()
        module.compiled()  # fail here (not on the first call) if OpenVINO cannot run the file
        return module, text

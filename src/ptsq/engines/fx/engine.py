"""FX graph mode post-training static quantization on torch.ao.quantization.

Capture (symbolic trace, untraceable parts kept fp32) -> clean-up -> prepare_fx with the backend's
QConfigMapping -> calibrate -> convert_fx -> TorchScript artifact with the manifest inside.
"""

from __future__ import annotations

import copy
import io
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from ptsq.algorithms.bias_correction import InputMeans, correct_biases
from ptsq.algorithms.cleanup import clamp_ranges, cleanup
from ptsq.algorithms.keep_float import wrap_modules
from ptsq.backends import activate, qconfig_name
from ptsq.config import QuantConfig
from ptsq.engines import register
from ptsq.engines.base import EngineResult
from ptsq.engines.common import quiet
from ptsq.engines.fx.capture import make_traceable
from ptsq.engines.fx.fixed_inputs import free_fixed_inputs
from ptsq.engines.fx.precision import precision_map
from ptsq.engines.fx.qconfig import keep_fp32, qconfig_mapping
from ptsq.engines.fx.speed import slow_layers
from ptsq.errors import QuantizationError, TraceError
from ptsq.reproducible import pin_serialization_id

MANIFEST_NAME = "ptsq_manifest.json"


def views_to_reshapes(gm: fx.GraphModule) -> None:
    """``x.view(n, -1)`` fails on the channels-last outputs of quantized convs; ``reshape`` copies then."""
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target == "view":
            node.target = "reshape"
            changed = True
    if changed:
        gm.recompile()


def _resolves(model: nn.Module, name: str) -> bool:
    """Whether ``name`` is still a submodule (not when it sits inside a part kept fp32 as untraceable)."""
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _calibrate_and_convert(
    work: nn.Module,
    calibrate: Callable[[Callable[..., Any]], int],
    example_args: tuple[Any, ...],
    config: QuantConfig,
    backend: str,
    notes: list[str],
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """prepare_fx -> calibrate -> bias correction and clamp ranges -> convert_fx; (int8 model, observed fp32)."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    qmap, custom = qconfig_mapping(config, backend)
    try:
        prepared = prepare_fx(work, qmap, example_args, prepare_custom_config=custom)
    except Exception as exc:
        raise QuantizationError(f"prepare_fx failed: {exc}".splitlines()[0], "report this model to ptsq") from exc
    views_to_reshapes(prepared)
    if n := free_fixed_inputs(prepared, qmap.global_qconfig.activation):
        notes.append(f"{n} sigmoid/tanh input(s) after an fp32 layer observed over their real range")
    means = InputMeans(prepared) if "bias-correction" in config.cleanup else None
    try:
        with torch.no_grad():
            calibrate(prepared)
    finally:
        if means is not None:
            means.remove()
    # the calibrated fp32 graph, taken before bias correction edits the biases for int8 weights:
    # the reference that analyze, the budget and the self-check compare int8 layers against
    observed = copy.deepcopy(prepared)
    if means is not None and (n := correct_biases(means, qmap.global_qconfig.weight)):
        notes.append(f"bias correction: {n} conv/linear biases corrected for int8 weight rounding")
    if "clamp-ranges" in config.cleanup and (n := clamp_ranges(prepared)):
        notes.append(f"clean-up: {n} activations quantized over their ReLU/ReLU6/clamp range")
    try:
        converted = convert_fx(prepared)
    except Exception as exc:
        raise QuantizationError(
            f"convert_fx failed: {exc}".splitlines()[0], "keep the failing layer in fp32 with --skip"
        ) from exc
    return converted, observed


@register("fx")
class FxEngine:
    name = "fx"
    suffix = ".pt"

    def quantize(
        self,
        model: nn.Module,
        calibrate: Callable[[Callable[..., Any]], int],
        example_args: tuple[Any, ...],
        config: QuantConfig,
        backend: str,
    ) -> EngineResult:
        activate(backend)
        work = copy.deepcopy(model).eval()
        notes: list[str] = []
        kept, layers = keep_fp32(work, config, backend)
        notes.extend(kept)
        try:
            notes.extend(make_traceable(work, config.strict))
        except TraceError as exc:  # the top-level forward is untraceable: quantize what it calls
            if getattr(exc, "failure", None) is None:
                raise
            wrap_modules(work, layers)
            from ptsq.engines.fx.split import quantize_split

            with quiet():
                return quantize_split(work, calibrate, example_args, config, backend, exc.failure, notes)  # type: ignore[attr-defined]
        work, cleaned = cleanup(work, config.cleanup)
        notes.extend(cleaned)
        wrap_modules(work, {n: r for n, r in layers.items() if _resolves(work, n)})
        if config.speed_guard > 0:
            slow = slow_layers(work, example_args, backend, config.speed_guard)
            wrap_modules(work, slow)
            if slow:
                notes.append(f"speed guard: {len(slow)} layer(s) kept in fp32, their int8 kernel is slower here")
        with quiet():
            converted, observed = _calibrate_and_convert(work, calibrate, example_args, config, backend, notes)
            rows = precision_map(converted, example_args, backend)
        return EngineResult(
            module=converted,
            precision=rows,
            notes=notes,
            details={"capture": "torch.fx symbolic trace", "qconfig": qconfig_name(backend), "freeze": config.freeze},
            debug={"observed": observed},
        )

    def save(self, result: EngineResult, path: Path, manifest_json: str, example_args: tuple[Any, ...]) -> nn.Module:
        with quiet(), torch.no_grad():
            try:
                scripted = torch.jit.trace(result.module, example_args, check_trace=False, strict=False)
            except Exception as exc:
                raise QuantizationError(
                    f"TorchScript tracing of the int8 model failed: {exc}".splitlines()[0],
                    "keep the offending layer in fp32 with --skip, or report the model",
                ) from exc
            if result.details.get("freeze", True):
                try:
                    scripted = torch.jit.freeze(scripted.eval())
                    result.details["frozen"] = True
                except Exception:  # freezing is an optimisation; the unfrozen module is still right
                    result.details["frozen"] = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.save deprecation: TorchScript is the artifact
            buf = io.BytesIO()  # in memory: a fixed archive name, and a full disk raises OSError (see reproducible.py)
            torch.jit.save(scripted, buf, _extra_files={MANIFEST_NAME: manifest_json.encode()})
        Path(path).write_bytes(pin_serialization_id(buf.getvalue()))
        return scripted

    def can_load(self, path: Path) -> bool:
        return _is_torchscript(path)

    def load(self, path: Path) -> tuple[nn.Module, str]:
        files = {MANIFEST_NAME: b""}
        data = Path(path).read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=files)
        manifest = files[MANIFEST_NAME]
        return module, manifest.decode() if isinstance(manifest, bytes) else str(manifest)

"""FX graph mode post-training static quantization on torch.ao.quantization.

Capture (symbolic trace, untraceable parts kept fp32) -> rewrites FX would get wrong (``rewrites``) ->
clean-up (steps that break the model left out, ``recover``) -> a rehearsal on the example that keeps
failing ops fp32 (``recover``) -> prepare_fx with the backend's QConfigMapping -> calibrate -> convert_fx
-> TorchScript artifact with the manifest inside, proven against the in-memory model (``save``).
"""

from __future__ import annotations

import copy
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from ptsq import artifact, legacy
from ptsq.algorithms.bias_correction import InputMeans, correct_biases
from ptsq.algorithms.cleanup import clamp_ranges
from ptsq.algorithms.keep_float import wrap_modules
from ptsq.backends import activate, qconfig_name
from ptsq.config import QuantConfig
from ptsq.engines import register
from ptsq.engines.base import EngineResult, LayerPrecision, LayerTiming
from ptsq.engines.common import quiet
from ptsq.engines.fx.capture import make_traceable
from ptsq.engines.fx.context import keep_fp32 as keep_layers_fp32
from ptsq.engines.fx.context import layer_times
from ptsq.engines.fx.fixed_inputs import free_fixed_inputs
from ptsq.engines.fx.islands import convert_island_leaves, fix_layouts, prepare_island_leaves, public_name
from ptsq.engines.fx.precision import precision_map
from ptsq.engines.fx.qconfig import keep_fp32, qconfig_mapping
from ptsq.engines.fx.recover import recover, safe_cleanup
from ptsq.engines.fx.rewrites import functionalize
from ptsq.engines.fx.save import to_torchscript
from ptsq.engines.fx.speed import slow_layers
from ptsq.errors import QuantizationError, TraceError
from ptsq.reproducible import pin_serialization_id

MANIFEST_NAME = "ptsq_manifest.json"


def views_to_reshapes(gm: fx.GraphModule) -> int:
    """``x.view(n, -1)`` fails on the channels-last outputs of quantized convs; ``reshape`` copies then."""
    changed = 0
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target == "view":
            node.target = "reshape"
            changed += 1
    if changed:
        gm.recompile()
    return changed


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
    if n := views_to_reshapes(prepared):
        notes.append(f"{n} view(s) run as reshape (int8 tensors may be channels-last, where view fails)")
    leaves = prepare_island_leaves(prepared, qmap.global_qconfig)
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
    if leaves := convert_island_leaves(prepared, leaves):
        notes.append(f"{len(leaves)} conv/linear layer(s) inside untraceable fp32 islands quantized on their own: "
                     + ", ".join(public_name(n) for n in leaves[:4]) + (" …" if len(leaves) > 4 else ""))  # fmt: skip
    try:
        converted = convert_fx(prepared)
    except Exception as exc:
        raise QuantizationError(
            f"convert_fx failed: {exc}".splitlines()[0], "keep the failing layer in fp32 with --skip"
        ) from exc
    converted.meta["ptsq_island_leaves"] = leaves
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
        legacy.require("the fx engine", "use --engine pt2e (the default without it), onnx or openvino")
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
        work, rewritten = functionalize(work, example_args)  # what FX would drop or wrongly observe
        notes.extend(rewritten)
        work, cleaned = safe_cleanup(work, config.cleanup, example_args)  # a step that breaks the model is left out
        notes.extend(cleaned)
        wrap_modules(work, {n: r for n, r in layers.items() if _resolves(work, n)})
        if config.speed_guard > 0:
            slow = slow_layers(work, example_args, backend, config.speed_guard, config.speed.threads)
            wrap_modules(work, slow)
            if slow:
                notes.append(f"speed guard: {len(slow)} layer(s) kept in fp32, their int8 kernel is slower here")

        def rehearsal(m: nn.Module, feed: Callable[[nn.Module], Any]) -> fx.GraphModule:
            return _calibrate_and_convert(m, feed, example_args, config, backend, [])[0]

        with quiet():
            # rehearse on the example first: an op whose int8 path fails is kept fp32 before the data streams
            work, recovered = recover(work, rehearsal, example_args)
            notes.extend(recovered)
            converted, observed = _calibrate_and_convert(work, calibrate, example_args, config, backend, notes)
            notes.extend(fix_layouts(converted, example_args, config.speed.threads[0], measure=config.speed_guard > 0))
            rows = precision_map(converted, example_args, backend)
            for n in converted.meta.get("ptsq_island_leaves", []):  # int8 leaves of untraceable fp32 islands
                op = "Conv2d" if "Conv" in type(converted.get_submodule(n).module).__name__ else "Linear"
                rows.append(LayerPrecision(public_name(n), op, "int8"))
        return EngineResult(
            module=converted,
            precision=rows,
            notes=notes,
            details={"capture": "torch.fx symbolic trace", "qconfig": qconfig_name(backend), "freeze": config.freeze},
            debug={"observed": observed, "backend": backend},
        )

    # --- the whole-model speed check's hooks (ptsq.engines.base.SpeedHooks)
    def fix_layout(self, result: EngineResult, example_args: tuple[Any, ...], threads: int) -> list[str]:
        return fix_layouts(result.module, example_args, threads, measure=True)

    def layer_times(self, result: EngineResult, example_args: tuple[Any, ...], threads: int) -> list[LayerTiming]:
        return layer_times(result, example_args, threads)

    def keep_fp32(self, result: EngineResult, layers: list[LayerTiming], reason: str, threads: int) -> list[str]:
        return keep_layers_fp32(result, layers, reason, result.debug.get("backend", "x86"), threads)

    def save(self, result: EngineResult, path: Path, manifest_json: str, example_args: tuple[Any, ...]) -> nn.Module:
        checks = result.debug.get("check_batches", ())
        with quiet():
            freeze = result.details.get("freeze", True)
            scripted, facts = to_torchscript(result.module, example_args, checks, freeze=freeze)
        result.details.update(facts)
        if facts["torchscript"] != "trace":  # the manifest says how the artifact was made
            manifest_json = artifact.seal({**json.loads(manifest_json), "save": facts})
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

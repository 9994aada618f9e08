"""FX graph mode post-training static quantization on torch.ao.quantization.

Capture (symbolic trace, untraceable parts kept fp32) -> prepare_fx with the backend's
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
from ptsq.algorithms.observers import activation_observers
from ptsq.backends import activate, qconfig_name
from ptsq.config import QuantConfig
from ptsq.engines import register
from ptsq.engines.base import EngineResult, LayerPrecision
from ptsq.engines.capture import try_trace
from ptsq.engines.fx_cleanup import clamp_ranges, cleanup
from ptsq.engines.fx_fixed_inputs import free_fixed_inputs
from ptsq.engines.fx_speed import slow_layers
from ptsq.engines.keep_float import KeepFloat, broken_kernels, wrap_modules
from ptsq.errors import ConfigError, QuantizationError, TraceError
from ptsq.reproducible import pin_serialization_id

MANIFEST_NAME = "ptsq_manifest.json"
MAX_FALLBACKS = 64

# Ops that move or reshape data without computing: not listed in the precision map.
_PLUMBING = {
    "quantize_per_tensor", "quantize_per_channel", "dequantize", "getattr", "getitem", "size", "dim",
    "flatten", "reshape", "view", "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "chunk",
    "split", "expand", "to", "float", "type", "t", "numel", "detach",
}  # fmt: skip


def _quiet() -> warnings.catch_warnings:
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # quantized scalars traced as constants
    return ctx


def _skip_targets(model: nn.Module, config: QuantConfig) -> dict[str, str]:
    """Qualified names the user's skip rules keep in fp32; a rule that matches nothing is an error."""
    chosen: dict[str, str] = {}
    for rule in config.skip:
        hits = [
            name
            for name, mod in model.named_modules()
            if name and rule.matches(name, f"{type(mod).__module__}.{type(mod).__qualname__}")
        ]
        if not hits:
            raise ConfigError(
                f"skip rule '{rule}' matches no layer of the model",
                "check the layer names with 'ptsq quantize ... --json' (precision map) and fix the rule",
            )
        for name in hits:
            chosen.setdefault(name, f"kept in fp32 by skip rule '{rule}'")
    return _outermost(chosen)


_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)  # subclasses too (static-"same"-padding convs)


def keep_fp32(work: nn.Module, config: QuantConfig, backend: str) -> tuple[list[str], dict[str, str]]:
    """Wrap in KeepFloat what the skip rules name and what has a measured-wrong int8 kernel.

    Returns (notes, layers): conv/linear layers the rules name are returned unwrapped, to be wrapped
    after the graph clean-up (as the speed guard does), so their BatchNorm folds and padding splits
    as in the all-int8 model and their int8 neighbours are quantized exactly as without the rule.
    """
    notes: list[str] = []
    fallback = _skip_targets(work, config)
    if config.probe_kernels:
        for cls, score in broken_kernels(work, backend).items():
            reason = f"int8 {cls.__name__} kernel measured wrong ({score:.1f} dB on a probe), kept in fp32"
            notes.append(reason)
            for name, mod in work.named_modules():
                if type(mod) is cls:
                    fallback.setdefault(name, reason)
    fallback = _outermost(fallback)
    layers = {n: r for n, r in fallback.items() if isinstance(work.get_submodule(n), _LAYERS)}
    wrap_modules(work, {n: r for n, r in fallback.items() if n not in layers})
    return notes, layers


def _resolves(model: nn.Module, name: str) -> bool:
    """Whether ``name`` is still a submodule (not when it sits inside a part kept fp32 as untraceable)."""
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _outermost(names: dict[str, str]) -> dict[str, str]:
    """Drop names nested inside another chosen name (the outer wrapper keeps them fp32 already)."""
    keep = {}
    for name, reason in names.items():
        parts = name.split(".")
        if not any(".".join(parts[:i]) in names for i in range(1, len(parts))):
            keep[name] = reason
    return keep


def _capture(model: nn.Module, strict: bool) -> list[str]:
    """Make ``model`` traceable by keeping untraceable submodules fp32; return notes."""
    notes: list[str] = []
    for _ in range(MAX_FALLBACKS):
        failure = try_trace(model)
        if failure is None:
            return notes
        if failure.module == "" or strict:
            where = f"module '{failure.module}'" if failure.module else "the model's top-level forward"
            hint = (
                "move the untraceable code into a submodule (ptsq keeps such submodules in fp32), "
                "avoid Python control flow on tensor values, wrap plain functions with torch.fx.wrap, "
                "or try --engine pt2e (torch.export) or --engine onnx"
            )
            if strict and failure.module:
                hint = "drop --strict to keep untraceable submodules in fp32 and quantize the rest"
            err = TraceError(f"FX cannot trace {where}: {failure.describe()}", hint)
            err.failure = failure if not strict else None  # type: ignore[attr-defined]  # fx_split retries
            raise err
        wrap_modules(model, {failure.module: f"cannot be traced: {failure.describe()}"})
        notes.append(f"'{failure.module}' kept in fp32: FX cannot trace it: {failure.describe()}")
    raise TraceError("too many untraceable submodules", "try --engine pt2e or simplify the model's forward")


def _views_to_reshapes(gm: fx.GraphModule) -> None:
    """``x.view(n, -1)`` fails on the channels-last outputs of quantized convs; ``reshape`` copies then."""
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target == "view":
            node.target = "reshape"
            changed = True
    if changed:
        gm.recompile()


def _op_label(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        inner = mod.inner if isinstance(mod, KeepFloat) else mod
        return type(inner).__name__
    target = node.target
    return getattr(target, "__name__", None) or str(target).split(".")[-1]


class _Recorder(fx.Interpreter):
    """Run the converted graph once and record whether each node's output is quantized."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.quantized: dict[str, bool] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.quantized[n.name] = out.is_quantized
        return out


def precision_map(gm: fx.GraphModule, example_args: tuple[Any, ...], backend: str) -> list[LayerPrecision]:
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(*example_args)
    rows: list[LayerPrecision] = []
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method") or node.name not in rec.quantized:
            continue
        label = _op_label(node, gm)
        if node.op != "call_module" and label in _PLUMBING:
            continue
        name = str(node.target) if node.op == "call_module" else node.name
        if rec.quantized[node.name]:
            rows.append(LayerPrecision(name, label, "int8"))
            continue
        reason = f"no int8 kernel for {label} in the {backend} backend"
        if node.op == "call_module":
            mod = gm.get_submodule(str(node.target))
            if isinstance(mod, KeepFloat):
                reason = mod.reason
        rows.append(LayerPrecision(name, label, "fp32", reason))
    return rows


def qconfig_mapping(config: QuantConfig, backend: str) -> tuple[Any, Any]:
    """The backend's QConfigMapping with ptsq's observer and weight choices, and the prepare config
    that keeps ``KeepFloat`` layers opaque and fp32 (shared by the whole-model and split paths)."""
    from torch.ao.quantization import get_default_qconfig, get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.observer import default_weight_observer
    from torch.ao.quantization.qconfig import QConfig

    qmap = get_default_qconfig_mapping(qconfig_name(backend))
    if not config.per_channel:
        base = get_default_qconfig(qconfig_name(backend))
        qmap = qmap.set_global(QConfig(activation=base.activation, weight=default_weight_observer))
    qmap = activation_observers(qmap, config.observer).set_object_type(KeepFloat, None)
    return qmap, PrepareCustomConfig().set_non_traceable_module_classes([KeepFloat])


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


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
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        activate(backend)
        work = copy.deepcopy(model).eval()
        notes: list[str] = []

        kept, layers = keep_fp32(work, config, backend)
        notes.extend(kept)
        try:
            notes.extend(_capture(work, config.strict))
        except TraceError as exc:  # the top-level forward is untraceable: quantize what it calls
            if getattr(exc, "failure", None) is None:
                raise
            wrap_modules(work, layers)
            from ptsq.engines.fx_split import quantize_split

            ctx = _quiet()
            try:
                return quantize_split(work, calibrate, example_args, config, backend, exc.failure, notes)  # type: ignore[attr-defined]
            finally:
                ctx.__exit__(None, None, None)
        work, cleaned = cleanup(work, config.cleanup)
        notes.extend(cleaned)
        wrap_modules(work, {n: r for n, r in layers.items() if _resolves(work, n)})
        if config.speed_guard > 0:
            slow = slow_layers(work, example_args, backend, config.speed_guard)
            wrap_modules(work, slow)
            if slow:
                notes.append(f"speed guard: {len(slow)} layer(s) kept in fp32, their int8 kernel is slower here")

        qmap, custom = qconfig_mapping(config, backend)

        ctx = _quiet()
        try:
            try:
                prepared = prepare_fx(work, qmap, example_args, prepare_custom_config=custom)
            except Exception as exc:
                raise QuantizationError(
                    f"prepare_fx failed: {exc}".splitlines()[0], "report this model to ptsq"
                ) from exc
            _views_to_reshapes(prepared)
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
            rows = precision_map(converted, example_args, backend)
        finally:
            ctx.__exit__(None, None, None)
        return EngineResult(
            module=converted,
            precision=rows,
            notes=notes,
            details={"capture": "torch.fx symbolic trace", "qconfig": qconfig_name(backend), "freeze": config.freeze},
            debug={"observed": observed},
        )

    def save(self, result: EngineResult, path: Path, manifest_json: str, example_args: tuple[Any, ...]) -> nn.Module:
        ctx = _quiet()
        try:
            with torch.no_grad():
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
        finally:
            ctx.__exit__(None, None, None)
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

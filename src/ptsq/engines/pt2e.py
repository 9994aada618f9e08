"""PT2E static quantization: torch.export -> torchao prepare_pt2e/convert_pt2e -> inductor.

Capture with ``torch.export`` (strict first: non-strict export breaks the x86 inductor quantizer on
torchvision ResNets, whose blocks call one ReLU module twice), annotate with torchao's
``X86InductorQuantizer`` (u8 activations, s8 per-channel weights), calibrate, correct conv/linear biases
for int8 weight rounding (``bias-correction``, as the FX engine does), convert. The artifact is
a ``torch.export`` program (.pt2) with the manifest inside; loading compiles it with inductor with
freezing on (without freezing the int8 graph is slower than fp32) and a persistent compile cache
under ``~/.cache/ptsq/inductor`` so the second load of the same artifact is fast. Inductor needs a
C++ compiler; ``PTSQ_PT2E_EAGER=1`` runs the program without compiling (correct, slow).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import os
import re
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from ptsq.algorithms.bias_correction import ChannelMeans, bias_shift, fake_quantize
from ptsq.config import QuantConfig
from ptsq.engines import register
from ptsq.engines.base import EngineResult, LayerPrecision
from ptsq.engines.common import quiet, skip_reason, skip_targets
from ptsq.engines.common import reduce_range as reduce_range_choice
from ptsq.errors import QuantizationError, TraceError, first_line

MANIFEST_NAME = "ptsq_manifest.json"
NO_COMPILE_ENV = "PTSQ_PT2E_EAGER"  # =1: run loaded programs without inductor (no C++ compiler, debugging)

# aten ops that compute (listed in the precision map); everything else moves data or is a q/dq pair
_COMPUTE = {
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution",
    "linear", "matmul", "bmm", "mm", "addmm", "embedding", "embedding_bag", "add", "add_", "mul", "relu", "relu_",
    "hardtanh", "hardtanh_", "prelu", "gelu", "silu", "sigmoid",
    "hardswish", "tanh", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean", "cat", "layer_norm",
    "batch_norm", "_native_batch_norm_legit_no_training", "softmax", "leaky_relu", "elu", "hardsigmoid",
}  # fmt: skip
_WEIGHTED = {
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution",
    "linear", "matmul", "mm", "bmm", "addmm",
}  # fmt: skip
_FUSABLE = {"relu", "relu_", "hardtanh", "hardtanh_", "hardswish", "silu", "add", "add_"}
_DQ = {"dequantize_per_tensor", "dequantize_per_channel", "dequantize_affine"}
_Q = {"quantize_per_tensor", "quantize_affine"}
_BIASED = {"conv1d", "conv2d", "linear"}  # layers whose bias is corrected for int8 weight rounding


class BiasCorrection:
    """Bias correction (:mod:`ptsq.algorithms.bias_correction`) on the prepared aten graph.

    Rounding weights to int8 shifts each output channel's mean by (W_q - W) E[x] (~1.7 dB on
    EfficientNet-Lite0). Forward pre-hooks on the (torchao) input observers record E[x] during calibration;
    :meth:`apply` then subtracts the shift from the fp32 bias, W_q from the layer's own weight observer.
    Layers without a bias (rare after BN folding) are left as they are.
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.inputs = ChannelMeans()
        self.layers: list[tuple[str, fx.Node, fx.Node, fx.Node]] = []  # (input observer, weight obs, weight, bias)
        # one observer instance can sit at several call sites (shared qparams): count calls per instance
        calls = Counter(id(gm.get_submodule(str(n.target))) for n in gm.graph.nodes if n.op == "call_module")
        hooked: set[str] = set()
        self._hooks: list[Any] = []
        for node in gm.graph.nodes:
            if _base(node) not in _BIASED or len(node.args) < 3:
                continue
            x, w, b = node.args[:3]
            if not (isinstance(x, fx.Node) and isinstance(w, fx.Node) and isinstance(b, fx.Node)):
                continue
            # both operands observed (an int8 layer), a bias, and an observer that sees only this input
            if x.op != "call_module" or w.op != "call_module" or b.op != "get_attr":
                continue
            if calls[id(gm.get_submodule(str(x.target)))] != 1:
                continue
            if not (w.args and isinstance(w.args[0], fx.Node) and w.args[0].op == "get_attr"):
                continue
            self.layers.append((str(x.target), w, w.args[0], b))
            if str(x.target) not in hooked:
                hooked.add(str(x.target))
                channel = -1 if _base(node) == "linear" else 1
                obs = gm.get_submodule(str(x.target))
                self._hooks.append(obs.register_forward_pre_hook(self._hook(str(x.target), channel)))

    def _hook(self, key: str, channel: int) -> Callable[..., None]:
        def hook(_mod: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.dim() >= 2:
                self.inputs.add(key, x, channel % x.dim())

        return hook

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _tensor(self, node: fx.Node) -> torch.Tensor:
        return functools.reduce(getattr, str(node.target).split("."), self.gm)

    def apply(self) -> int:
        """Subtract (W_q - W) E[x] from every recorded layer's bias; returns how many changed."""
        count = 0
        means = self.inputs.means()
        with torch.no_grad():
            for key, w_obs, w_node, b_node in self.layers:
                if key not in means:
                    continue
                mu, w, bias = means[key], self._tensor(w_node), self._tensor(b_node)
                dw = fake_quantize(w, self.gm.get_submodule(str(w_obs.target))) - w
                if mu.numel() % dw.shape[1] or bias.shape != dw.shape[:1]:
                    continue
                bias.sub_(bias_shift(dw, mu, mu.numel() // dw.shape[1]).to(bias.dtype))
                count += 1
        return count


def cache_dir() -> Path:
    """Where compiled kernels are kept between loads (``$PTSQ_CACHE_DIR`` or ``~/.cache/ptsq``)."""
    from ptsq.cache import cache_root

    return cache_root() / "inductor"


def _batch2(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Export with batch 2: a batch of 1 would be specialised and later batches rejected."""
    return tuple(torch.cat([a[:1], a[:1]]) if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)


def _dynamic(args: tuple[Any, ...]) -> tuple[Any, ...]:
    auto = torch.export.Dim.AUTO
    return tuple({0: auto} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in args)


def export_explanation(exc: BaseException) -> str:
    """The first line of an exporter error that says something, plus the user's line it points at."""
    text = str(exc)
    head = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)[:200]
    m = re.search(r'File "([^"]+)", line (\d+), in \w+, code: (.+)', text) or re.search(
        r'File "([^"]+)", line (\d+), in \w+\n\s+(.+)', text
    )
    if m and "site-packages" not in m.group(1):
        head += f" at {m.group(1)}:{m.group(2)}: {m.group(3).strip()}"
    return head


def capture(model: nn.Module, example_args: tuple[Any, ...]) -> tuple[torch.export.ExportedProgram, str]:
    """``torch.export`` the model: strict first, non-strict if strict cannot; returns (program, mode)."""
    args = _batch2(example_args)
    errors: list[str] = []
    for strict in (True, False):
        logging.disable(logging.WARNING)  # the exporter logs graphs and advice; ptsq reports one line
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # failed exports print the partial graph
                ep = torch.export.export(model, args, dynamic_shapes=_dynamic(args), strict=strict)
            return ep, "strict" if strict else "non-strict"
        except Exception as exc:  # exporter errors come in many types
            errors.append(export_explanation(exc))
        finally:
            logging.disable(logging.NOTSET)
    raise TraceError(
        f"torch.export cannot capture the model: {errors[0]}",
        "try --engine fx (FX keeps untraceable submodules in fp32), or make forward export-friendly",
    )


def _op_name(node: fx.Node) -> str:
    target = node.target
    name = getattr(target, "__name__", None) or str(target)
    return name.split(".")[0] if "." in name and not name.startswith("aten") else name.split(".")[-1]


def _base(node: Any) -> str:
    if not isinstance(node, fx.Node) or node.op != "call_function":
        return ""
    return str(getattr(node.target, "__name__", node.target)).split(".")[0]


def _module_path(node: fx.Node) -> tuple[str, str]:
    """(qualified module name, module type) that produced ``node``, from export's nn_module_stack."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    name = str(path).replace("L['self'].", "").replace("L__self___", "")
    cls_name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
    return name, cls_name


def precision_map(gm: fx.GraphModule, skipped: dict[str, str]) -> list[LayerPrecision]:
    """Which compute ops of the converted graph run in int8 (input dequantized from int8) or fp32."""
    rows: list[LayerPrecision] = []
    seen: dict[str, int] = {}
    int8_nodes: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        op = _base(node)
        if op not in _COMPUTE:
            continue
        inputs = [a for a in node.args if isinstance(a, fx.Node)]
        if op == "cat" and node.args and isinstance(node.args[0], (list, tuple)):
            inputs = [a for a in node.args[0] if isinstance(a, fx.Node)]
        in_q = bool(inputs) and _base(inputs[0]) in _DQ
        out_q = any(_base(u) in _Q for u in node.users)
        if op in _FUSABLE and inputs and inputs[0].name in int8_nodes and out_q:
            int8_nodes.add(node.name)  # a post-op fused into the int8 conv/linear before it: no row
            continue
        if op in _WEIGHTED:  # activation and weight both dequantized from int8
            int8 = in_q and len(inputs) > 1 and _base(inputs[1]) in _DQ
        else:
            int8 = in_q and out_q
        if int8:
            int8_nodes.add(node.name)
        mod, cls = _module_path(node)
        name = mod or node.name
        if name in seen:  # one module called twice, or several ops in one module
            seen[name] += 1
            name = f"{name}#{seen[name]}"
        else:
            seen[name] = 0
        label = cls if mod else op
        if int8:
            rows.append(LayerPrecision(name, label, "int8"))
            continue
        reason = skip_reason(mod, skipped) or f"the x86 inductor quantizer leaves {op} in fp32"
        rows.append(LayerPrecision(name, label, "fp32", reason))
    return rows


def _is_pt2(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("archive_format" in n for n in names) and not any(n.endswith("constants.pkl") for n in names)


class CompiledProgram(nn.Module):
    """An exported int8 program compiled with inductor (freezing on); compiles on the first call."""

    def __init__(self, program: nn.Module, record: dict[str, Any] | None = None) -> None:
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        super().__init__()
        self.program = allow_exported_model_train_eval(program)  # .eval() on exported graphs otherwise raises
        self.compiled: Any = None
        self.compile_seconds: float | None = None
        self._record = record  # gets "compile_seconds" when the first compile finishes

    def forward(self, *args: Any) -> Any:
        if self.compiled is None and os.environ.get(NO_COMPILE_ENV, "") not in ("", "0"):
            self.compiled = self.program  # eager reference kernels: right, but slow
        if self.compiled is None:
            self.compile_now(args)
        with torch.no_grad():
            return self.compiled(*args)

    def compile_now(self, args: tuple[Any, ...]) -> float:
        """Compile for inputs like ``args`` now; returns the seconds it took (cache hits are fast)."""
        import torch._inductor.config as inductor_config

        cache = cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))
        inductor_config.freezing = True  # int8 is only fast with constant weights folded in
        inductor_config.fx_graph_cache = True
        t0 = time.perf_counter()
        with quiet(all_user_warnings=True):
            self.compiled = torch.compile(self.program, dynamic=False)
            with torch.no_grad():
                self.compiled(*args)
        self.compile_seconds = round(time.perf_counter() - t0, 2)
        if self._record is not None:
            self._record.setdefault("compile_seconds", self.compile_seconds)
        return self.compile_seconds


def _import_torchao() -> None:
    """Import torchao's PT2E modules without the deprecation chatter they log at import time."""
    logging.disable(logging.WARNING)
    try:
        import torchao.quantization.pt2e.quantize_pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
    finally:
        logging.disable(logging.NOTSET)


def reduce_range(config: QuantConfig) -> bool:
    """7-bit activations unless the CPU has VNNI (``pt2e_reduce_range``: auto/on/off).

    Without VNNI oneDNN multiplies u8 x s8 pairs into saturating int16; 7-bit activations keep the sum
    in range. The reference (eager) kernels do not saturate, so only the compiled program shows it.
    """
    return reduce_range_choice(config.pt2e.reduce_range)


def _quantizer(config: QuantConfig, skipped: dict[str, str]) -> Any:
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    q = X86InductorQuantizer()
    q.set_global(get_default_x86_inductor_quantization_config(reduce_range=reduce_range(config)))
    for name in skipped:
        q.set_module_name_qconfig(name, None)
    return q


@register("pt2e")
class Pt2eEngine:
    name = "pt2e"
    suffix = ".pt2"

    def quantize(
        self,
        model: nn.Module,
        calibrate: Callable[[Callable[..., Any]], int],
        example_args: tuple[Any, ...],
        config: QuantConfig,
        backend: str,
    ) -> EngineResult:
        _import_torchao()
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        work = copy.deepcopy(model).eval()
        skipped = skip_targets(work, config)
        notes = [f"'{n}' {r}" for n, r in skipped.items()]
        if not config.per_channel:
            notes.append("the x86 inductor quantizer has per-channel weights only; --per-tensor ignored")
        with quiet(all_user_warnings=True):
            ep, mode = capture(work, example_args)
            if mode == "non-strict":
                notes.append("strict torch.export failed; captured with non-strict export")
            try:
                prepared = prepare_pt2e(ep.module(), _quantizer(config, skipped))
            except Exception as exc:
                hint = "try --engine fx or --engine onnx"
                raise QuantizationError(f"prepare_pt2e failed: {first_line(exc)}", hint) from exc
            bias = BiasCorrection(prepared) if "bias-correction" in config.cleanup else None
            try:
                with torch.no_grad():
                    calibrate(prepared)
            finally:
                if bias is not None:
                    bias.remove()
            observed = copy.deepcopy(prepared)  # the fp32 reference, taken before the biases change
            if bias is not None and (n := bias.apply()):
                notes.append(f"bias correction: {n} conv/linear biases corrected for int8 weight rounding")
            try:
                converted = convert_pt2e(prepared)
            except Exception as exc:
                raise QuantizationError(
                    f"convert_pt2e failed: {first_line(exc)}", "keep the failing layer in fp32 with --skip"
                ) from exc
        rows = precision_map(converted, skipped)
        converted = allow_exported_model_train_eval(converted)
        details: dict[str, Any] = {
            "capture": f"torch.export ({mode})",
            "quantizer": "torchao X86InductorQuantizer",
            "reduce_range": reduce_range(config),
            "runtime": "inductor (freezing)",
        }
        module: nn.Module = converted
        if config.pt2e.compile:
            # the self-check then runs (and times the compile of) what users will run
            module = CompiledProgram(converted, record=details).eval()
        return EngineResult(module=module, precision=rows, notes=notes, details=details, debug={"observed": observed})

    def save(self, result: EngineResult, path: Path, manifest_json: str, example_args: tuple[Any, ...]) -> nn.Module:
        args = _batch2(example_args)
        with quiet(all_user_warnings=True):
            module = result.module.program if isinstance(result.module, CompiledProgram) else result.module
            try:
                ep = torch.export.export(module, args, dynamic_shapes=_dynamic(args), strict=False)
            except Exception as exc:
                raise QuantizationError(
                    f"torch.export of the int8 program failed: {export_explanation(exc)}", "try --engine fx"
                ) from exc
            buf = io.BytesIO()
            torch.export.save(ep, buf, extra_files={MANIFEST_NAME: manifest_json})
        Path(path).write_bytes(buf.getvalue())
        return result.module

    def deployed(self, result: EngineResult) -> nn.Module | None:
        """What the speed check times: the compiled program (loading an artifact compiles the same one);
        None without ``pt2e.compile``, when only the uncompiled reference kernels exist here."""
        return result.module if isinstance(result.module, CompiledProgram) else None

    def can_load(self, path: Path) -> bool:
        return _is_pt2(path)

    def load(self, path: Path) -> tuple[nn.Module, str]:
        _import_torchao()  # registers the quantized_decomposed ops the program calls

        files = {MANIFEST_NAME: ""}
        with quiet(all_user_warnings=True):
            ep = torch.export.load(io.BytesIO(Path(path).read_bytes()), extra_files=files)
            program = ep.module()
        return CompiledProgram(program).eval(), files[MANIFEST_NAME]

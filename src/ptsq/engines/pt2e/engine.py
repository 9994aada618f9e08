"""The PT2E engine: torch.export -> torchao prepare_pt2e/convert_pt2e -> ptsq passes -> inductor."""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.config import QuantConfig
from ptsq.engines import register
from ptsq.engines.base import EngineResult, LayerTiming
from ptsq.engines.common import quiet, skip_reason, skip_targets
from ptsq.engines.pt2e.artifact import is_pt2, open_program, read_program, save_program
from ptsq.engines.pt2e.bias import BiasCorrection
from ptsq.engines.pt2e.hooks import keep_fp32, layer_times
from ptsq.engines.pt2e.islands import capture_with_islands, island_rows
from ptsq.engines.pt2e.layers import Pt2eFloatLayers
from ptsq.engines.pt2e.passes import drop_unused_tensors, sink_dequantize
from ptsq.engines.pt2e.precision import precision_rows
from ptsq.engines.pt2e.quantizer import import_torchao, make_quantizer, reduce_range
from ptsq.engines.pt2e.runtime import CompiledProgram, eager_only
from ptsq.engines.pt2e.speed import slow_layers
from ptsq.errors import QuantizationError, first_line


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
        import_torchao()
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        work = copy.deepcopy(model).eval()
        skipped = skip_targets(work, config)
        notes = [f"'{n}' {r}" for n, r in skipped.items()]
        if config.speed_guard > 0:
            slow = {
                n: r
                for n, r in slow_layers(work, example_args, config.speed_guard).items()
                if not skip_reason(n, skipped)
            }
            if slow:
                notes.append(f"speed guard: {len(slow)} layer(s) kept in fp32, their int8 kernel is slower here")
            skipped = {**skipped, **slow}
        if not config.per_channel:
            notes.append("the x86 inductor quantizer has per-channel weights only; --per-tensor ignored")
        with quiet(all_user_warnings=True):
            ep, mode, islands = capture_with_islands(work, example_args)
            notes.extend(
                f"{', '.join(repr(n) for n in i.modules)} ({i.cls}) kept in fp32, run as TorchScript inside the "
                f"program: torch.export cannot capture it: {i.reason}"
                for i in islands
            )
            if mode == "non-strict":
                notes.append("strict torch.export failed; captured with non-strict export")
            quantizer, qnotes = make_quantizer(config, skipped)
            notes.extend(qnotes)
            try:
                prepared = prepare_pt2e(ep.module(), quantizer)
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
            if n := sink_dequantize(converted):
                notes.append(f"clean-up: {n} data-movement ops run on int8 values")
            drop_unused_tensors(converted)
        pairs = island_rows(precision_rows(converted, skipped), islands)
        rows = [row for _node, row in pairs]
        converted = allow_exported_model_train_eval(converted)
        details: dict[str, Any] = {
            "capture": f"torch.export ({mode})",
            "quantizer": "torchao X86InductorQuantizer + ptsq (conv1d, int8 data movement)",
            "reduce_range": reduce_range(config),
            "runtime": "inductor (freezing)",
        }
        if islands:
            details["fp32_islands"] = [{"modules": i.modules, "class": i.cls, "op": i.op} for i in islands]
        module: nn.Module = converted
        if config.pt2e.compile:
            # the self-check then runs (and times the compile of) what users will run
            module = CompiledProgram(converted).eval()
        # analyze and the accuracy budget put int8 layers back to fp32 through this, with no re-calibration
        debug = {
            "observed": observed, "float_layers": Pt2eFloatLayers(converted, observed, pairs), "example": example_args,
            "islands": islands,
        }  # fmt: skip
        return EngineResult(module=module, precision=rows, notes=notes, details=details, debug=debug)

    def save(self, result: EngineResult, path: Path, manifest_json: str, example_args: tuple[Any, ...]) -> nn.Module:
        module = result.module.program if isinstance(result.module, CompiledProgram) else result.module
        save_program(module, path, manifest_json, example_args, result.debug.get("islands", []))
        return result.module

    def can_load(self, path: Path) -> bool:
        return is_pt2(path)

    def load(self, path: Path) -> tuple[nn.Module, str]:
        data, manifest = open_program(path)
        program = functools.partial(read_program, data)  # read when first needed: a cached package skips it
        try:  # the digest names the program's cached AOTInductor packages
            digest = json.loads(manifest).get("program_sha256") if manifest else None
        except ValueError:
            digest = None
        return CompiledProgram(program, digest if isinstance(digest, str) else None).eval(), manifest

    # --- the whole-model speed check's hooks (ptsq.engines.base.SpeedHooks; see .hooks)
    def deployed(self, result: EngineResult) -> nn.Module | None:
        """What the speed check times: the program saved as a .pt2 and loaded back, compiled on its first call
        as a user's load compiles it. None when nothing compiled runs here (``pt2e.compile`` off, or
        ``PTSQ_PT2E_EAGER``): the reference kernels would time what no user runs."""
        if not isinstance(result.module, CompiledProgram) or eager_only():
            return None
        with tempfile.TemporaryDirectory(prefix="ptsq-pt2e-speed-") as d:
            path = Path(d) / "int8.pt2"
            self.save(result, path, "{}", result.debug["example"])
            module, _ = self.load(path)
        if isinstance(module, CompiledProgram):  # compiled in process: an AOTInductor package costs ~1.5x the
            module.digest = None  # compile and each round's program is another one, which no user loads
        return module

    def fix_layout(self, result: EngineResult, example_args: tuple[Any, ...], threads: int) -> list[str]:
        return []  # inductor lays the compiled program's tensors out itself

    def layer_times(self, result: EngineResult, example_args: tuple[Any, ...], threads: int) -> list[LayerTiming]:
        return layer_times(result, example_args, threads)

    def keep_fp32(self, result: EngineResult, layers: list[LayerTiming], reason: str, threads: int) -> list[str]:
        return keep_fp32(result, layers, reason)

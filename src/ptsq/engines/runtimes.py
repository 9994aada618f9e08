"""The same fp32 model on other runtimes: the fp32 that int8 must beat is the fastest one available.

For EfficientNet-Lite1 here, ONNX Runtime's plain fp32 model (40.3 ms) was as fast as ptsq's best int8
artifact (39.5 ms) while eager PyTorch fp32 took 117 ms: a speed-up over eager alone overstates what int8
buys. ``ptsq bench --fp32-runtimes onnxruntime,openvino`` times these beside torch eager. Each module
follows ``torch.get_num_threads()`` at call time, so the benchmark's thread counts apply to them too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ptsq.errors import ConfigError, TraceError, first_line

FP32_RUNTIMES = ("onnxruntime", "openvino")
_PACKAGES = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("openvino",)}


def parse_runtimes(text: str) -> list[str]:
    """``onnxruntime,openvino`` or ``all`` -> names; unknown names are an error listing the known ones."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(FP32_RUNTIMES)
    unknown = [n for n in names if n not in FP32_RUNTIMES]
    if unknown or not names:
        raise ConfigError(
            f"unknown fp32 runtime {unknown[0] if unknown else text!r}", f"choose from: {', '.join(FP32_RUNTIMES)}, all"
        )
    return names


def _require(name: str) -> None:
    import importlib.util

    missing = [p for p in _PACKAGES[name] if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(
            f"the {name} fp32 runtime needs {', '.join(missing)}, which is not installed",
            "pip install 'ptsq[engines]'",
        )


def fp32_module(name: str, model: nn.Module, example_args: tuple[Any, ...]) -> nn.Module:
    """``model`` (fp32) converted for runtime ``name``, runnable like a torch module."""
    _require(name)
    model = model.eval()
    if name == "onnxruntime":
        from ptsq.engines.onnx import OrtModule, export_fp32

        data, _ = export_fp32(model, example_args)
        return OrtModule(data).eval()
    import openvino as ov

    from ptsq.engines.openvino import OpenVinoModule

    try:
        converted = ov.convert_model(model, example_input=example_args)
    except Exception as exc:  # the converter raises many types
        raise TraceError(
            f"OpenVINO could not convert the fp32 model: {first_line(exc)}", "leave out openvino"
        ) from None
    with tempfile.TemporaryDirectory(prefix="ptsq-fp32-") as d:
        xml = Path(d) / "model.xml"
        ov.save_model(converted, str(xml), compress_to_fp16=False)
        return OpenVinoModule(xml.read_bytes(), xml.with_suffix(".bin").read_bytes()).eval()


__all__ = ["FP32_RUNTIMES", "fp32_module", "parse_runtimes"]

"""The ONNX Runtime engine: export to ONNX, then onnxruntime's static (``static``) or dynamic (``dynamic``)
quantizer; ``export`` holds the exporters and the onnxruntime-backed module both use.

Only this package imports its modules; the rest of ptsq uses the names exported here.
"""

from ptsq.engines.onnx.dynamic import quantize_onnx_dynamic
from ptsq.engines.onnx.export import OrtModule, export_fp32
from ptsq.engines.onnx.static import OnnxEngine

__all__ = ["OnnxEngine", "OrtModule", "export_fp32", "quantize_onnx_dynamic"]

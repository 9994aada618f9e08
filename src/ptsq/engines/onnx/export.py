"""Export a torch model to ONNX, and run ONNX models with onnxruntime behind a torch module.

The dynamo exporter is tried first and the TorchScript-based exporter second; the batch axis (or every
axis, for sequence models) is dynamic. Shared by the static and dynamic ONNX paths.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ptsq.errors import TraceError, first_line

MANIFEST_KEY = "ptsq_manifest"
OPSET = 18
EXPORTERS = ("dynamo", "torchscript")


def _batch2(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(torch.cat([a[:1], a[:1]]) if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)


def unsupported_operator(text: str) -> str | None:
    """The operator an exporter error complains about (``aten::foo``, ``aten.foo.default``…), if named."""
    m = re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'", text)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    for pat in (
        r"unrecognized namespace ([\w:.]+)",
        r"Unsupported FX nodes: \{'call_function': \['([\w.:]+)'",
        r"[Uu]nsupported[^\n]*?((?:aten|prims|torch\.ops\.\w+)[.:]+[\w.]+)",
        r"((?:aten|prims)::\w+)",
        r"(aten\.\w+(?:\.\w+)?)",
        r"operator[^\n]*?'([\w:.]+)'",
    ):
        m = re.search(pat, text)
        if m:
            return m.group(1)
    return None


def _export_dynamo(model: nn.Module, args: tuple[Any, ...], names: list[str], all_dims: bool = False) -> bytes:
    def spec(a: Any) -> dict[int, Any] | None:
        if not isinstance(a, torch.Tensor) or a.dim() == 0:
            return None
        return {i: torch.export.Dim.AUTO for i in range(a.dim() if all_dims else 1)}

    dims = tuple(spec(a) for a in args)
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            model, args, dynamo=True, dynamic_shapes=dims, input_names=names, opset_version=OPSET, verbose=False
        )
    return program.model_proto.SerializeToString()


def _export_torchscript(model: nn.Module, args: tuple[Any, ...], names: list[str], all_dims: bool = False) -> bytes:
    buf = io.BytesIO()
    axes = {
        n: ({i: f"{n}_dim{i}" for i in range(a.dim())} if all_dims else {0: "batch"})
        for n, a in zip(names, args)
        if isinstance(a, torch.Tensor) and a.dim() > 0
    }
    torch.onnx.export(
        model, args, buf, dynamo=False, input_names=names, dynamic_axes=axes, opset_version=17, verbose=False
    )
    return buf.getvalue()


def export_fp32(
    model: nn.Module, example_args: tuple[Any, ...], exporter: str = "dynamo", *, all_dims: bool = False
) -> tuple[bytes, str]:
    """Export ``model`` to ONNX bytes with a dynamic batch axis (``all_dims``: every axis dynamic,
    e.g. sequence length); returns (bytes, exporter used)."""
    args = _batch2(example_args)
    names = [f"input_{i}" for i in range(len(args))]
    order = [exporter] + [e for e in EXPORTERS if e != exporter]
    errors: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in order:
            try:
                fn = _export_dynamo if name == "dynamo" else _export_torchscript
                return fn(model, args, names, all_dims), name
            except Exception as exc:  # exporter errors come in many types
                errors.append(f"{exc}")
    op = next((o for o in map(unsupported_operator, errors) if o), None)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", errors[0])
    what = f"operator {op} is not supported by the ONNX exporter" if op else first_line(RuntimeError(plain))
    raise TraceError(f"ONNX export failed: {what}", "try --engine fx or --engine pt2e, or keep the op out of forward")


def node_module(node: Any) -> str:
    """The qualified name of the torch module an ONNX node came from ('' if unknown)."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                break
            scopes = [s for s in scopes if s]  # [..., module, op name]
            return str(scopes[-2]) if len(scopes) >= 2 else ""
    parts = [p for p in node.name.split("/") if p]  # TorchScript exporter: /features/features.0/Conv
    return parts[-2] if len(parts) >= 2 else ""


class OrtModule(nn.Module):
    """Runs an ONNX model with onnxruntime; takes and returns torch tensors.

    ``threads`` sets onnxruntime's intra-op threads; ``None`` follows ``torch.get_num_threads()``
    at call time (so ``ptsq bench --threads`` and ``torch.set_num_threads`` apply to it too).
    """

    def __init__(self, model_bytes: bytes, threads: int | None = None) -> None:
        super().__init__()
        self.model_bytes = model_bytes
        self.threads = threads
        self._session: Any = None
        self._session_threads = 0

    def session(self) -> Any:
        import onnxruntime as ort

        n = self.threads or torch.get_num_threads()
        if self._session is None or n != self._session_threads:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(self.model_bytes, opts, providers=["CPUExecutionProvider"])
            self._inputs = [i.name for i in self._session.get_inputs()]
            self._session_threads = n
        return self._session

    def forward(self, *args: Any) -> Any:
        sess = self.session()
        feed = {
            name: (a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a))
            for name, a in zip(self._inputs, args)
        }
        outs = [torch.from_numpy(o) for o in sess.run(None, feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __getstate__(self) -> dict[str, Any]:  # sessions do not pickle or deep-copy
        state = self.__dict__.copy()
        state["_session"] = None
        return state


@contextlib.contextmanager
def no_logging() -> Iterator[None]:
    """onnxruntime's quantizer logs advice through the root logger; ptsq reports through its own notes."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def excluded_nodes(model: Any, skipped: dict[str, str]) -> list[str]:
    """ONNX node names that come from torch modules the skip rules keep fp32."""
    from ptsq.engines.common import skip_reason

    out = []
    for n in model.graph.node:
        mod = node_module(n)
        if mod and skip_reason(mod, skipped) is not None:
            out.append(n.name)
    return out


__all__ = ["EXPORTERS", "MANIFEST_KEY", "OrtModule", "excluded_nodes", "export_fp32", "no_logging", "node_module"]

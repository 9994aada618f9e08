"""Find what stops FX symbolic tracing, so the rest of the model can still be quantized.

Tracing is tried on the whole model; when it fails, the traceback is searched for the innermost
submodule whose ``forward`` was running. That submodule is kept in fp32 as an opaque leaf and
tracing is retried, until it succeeds or the failure is in the top-level ``forward`` itself.
"""

from __future__ import annotations

import linecache
import os
import sysconfig
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import fx, nn

from ptsq.algorithms.keep_float import KeepFloat
from ptsq.errors import first_line

_TORCH_DIR = os.path.dirname(torch.__file__)
_PTSQ_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STDLIB = sysconfig.get_paths()["stdlib"]
# Library code a forward may call into: the failing line reported is the user's call, not theirs.
_LIBRARIES = ("torch", "numpy", "scipy", "ptsq", "typing_extensions")


def _is_user_code(module: str, fname: str) -> bool:
    if fname.startswith((_TORCH_DIR, _PTSQ_DIR)) or fname.startswith("<"):
        return False
    if module.split(".")[0] in _LIBRARIES or module.startswith(_LIBRARIES):
        return False
    return not (fname.startswith(_STDLIB) and "site-packages" not in fname)


@dataclass
class TraceFailure:
    module: str  # qualified name of the innermost submodule running when tracing failed; "" = root
    error: str  # first line of the tracer's error
    location: str  # "file:line: code" of the innermost user code involved, if found

    def describe(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"{self.error}{where}"


class LeafTracer(fx.Tracer):
    """The leaf rule of torch.ao's QuantizationTracer, plus ptsq's KeepFloat wrappers."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, KeepFloat) or super().is_leaf_module(m, module_qualified_name)

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        try:
            return super().trace(root, concrete_args)
        finally:
            if isinstance(root, nn.Module):
                _drop_proxies(root)


def _drop_proxies(model: nn.Module) -> None:
    """Forget proxies a forward cached on its modules while being traced.

    timm's LeViT caches attention biases per device in a dict during eval forward; traced, the cache
    holds a proxy of that trace's graph, and the next trace fails ("does not belong to this Graph").
    """
    for m in model.modules():
        for key, value in list(vars(m).items()):
            if isinstance(value, fx.Proxy):
                delattr(m, key)
            elif isinstance(value, dict) and key not in ("_parameters", "_buffers", "_modules"):
                for k in [k for k, v in value.items() if isinstance(v, fx.Proxy)]:
                    del value[k]


def locate(exc: BaseException, model: nn.Module) -> TraceFailure:
    names = {id(m): n for n, m in model.named_modules()}
    module = ""
    location = ""
    tb: TracebackType | None = exc.__traceback__
    for frame, lineno in traceback.walk_tb(tb):
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names and frame.f_code.co_name == "forward":
            module = names[id(owner)]
        fname = frame.f_code.co_filename
        if _is_user_code(frame.f_globals.get("__name__", ""), fname):
            code = linecache.getline(fname, lineno).strip()
            location = f"{fname}:{lineno}: {code}"
    return TraceFailure(module=module, error=f"{type(exc).__name__}: {first_line(exc)}", location=location)


def try_trace(model: nn.Module) -> TraceFailure | None:
    """Trace ``model`` with the quantization leaf rules; None on success."""
    try:
        LeafTracer().trace(model)
    except Exception as exc:  # any tracer failure is data for the caller
        return locate(exc, model)
    return None

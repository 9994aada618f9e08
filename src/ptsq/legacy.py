"""torch.ao.quantization, the deprecated stack: is it here, and a mode that takes it away.

PyTorch is deleting ``torch.ao.quantization`` (FX ``prepare_fx``/``convert_fx``, eager
``quantize_dynamic``, the quantized ``nn`` modules). ``PTSQ_NO_TORCH_AO=1`` (or ``pytest --no-torch-ao``)
simulates that day: an import hook, installed when ptsq is imported, makes the stack unimportable for
ptsq and for any code outside torch and torchao, which keep (or will carry their own copies of) what they
need — torch 2.14's inductor imports ``torch.ao.quantization.fx._decomposed`` for its quantize/dequantize
ops, and torchao 0.18's ``convert_pt2e`` builds on ``torch.ao.quantization.fx``. A module those two
already imported is still refused to everyone else: the hook checks who imports, not just what.

In this mode ``ptsq quantize`` picks the PT2E engine by default, and a feature that needs the deprecated
stack raises :class:`ptsq.errors.TorchAoUnavailable` (one line, exit code 2) naming the feature.
This module imports nothing heavy (not torch): ``import ptsq`` stays cheap.
"""

from __future__ import annotations

import builtins
import functools
import importlib.abc
import os
import sys
from typing import Any

BLOCK_ENV = "PTSQ_NO_TORCH_AO"
# the deprecated stack and its aliases
BLOCKED = (
    "torch.ao.quantization", "torch.quantization", "torch.ao.nn.quantized", "torch.ao.nn.intrinsic",
    "torch.ao.nn.qat", "torch.ao.ns", "torch.nn.quantized", "torch.nn.intrinsic", "torch.nn.qat",
)  # fmt: skip
KEEPERS = ("torch", "torchao", "torchvision")  # PyTorch's own packages: they keep or vendor what they need
_LAZY_LOADERS = ("torch.ao", "torch.ao.nn")  # packages whose __getattr__ imports submodules

_original_import = builtins.__import__
_installed = False


def blocked() -> bool:
    """Whether this process simulates a PyTorch without torch.ao.quantization."""
    return os.environ.get(BLOCK_ENV, "") not in ("", "0") or _installed


@functools.cache
def _present() -> bool:
    """Whether the installed torch ships torch.ao.quantization (a file check: torch is not imported)."""
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return False
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    return origin is not None and (origin.parent / "ao" / "quantization" / "__init__.py").is_file()


def available() -> bool:
    """Whether ptsq may use torch.ao.quantization here (installed, and not blocked)."""
    return not blocked() and _present()


def _is_blocked(name: str) -> bool:
    return any(name == b or name.startswith(b + ".") for b in BLOCKED)


def _keeper(module: str) -> bool:
    return any(module == k or module.startswith(k + ".") for k in KEEPERS)


def _machinery(name: str) -> bool:
    """Frames that import on someone else's behalf: importlib, lazy package loaders, the stack itself."""
    return (
        name.startswith(("importlib", "_frozen_importlib"))
        or name in _LAZY_LOADERS
        or name == __name__
        or _is_blocked(name)  # the stack importing its own submodules: ask who imported the stack
    )


def _requester() -> str:
    """The module whose code asked for the import."""
    frame = sys._getframe(1)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if not _machinery(name):
            return name
        frame = frame.f_back
    return ""


def _refuse(name: str, requester: str) -> ImportError:
    who = f" (imported by {requester})" if requester else ""
    return ImportError(f"{name} is unavailable{who}: {BLOCK_ENV} simulates a PyTorch without torch.ao.quantization")


class _Finder(importlib.abc.MetaPathFinder):
    """Refuses first imports of the deprecated stack unless torch or torchao asks for them."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if _is_blocked(fullname):
            requester = _requester()
            if not _keeper(requester):
                raise _refuse(fullname, requester)
        return None  # let the normal finders import it


def _guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    """``import`` statements outside torch/torchao: refuse the stack even when it is already imported."""
    if level == 0 and name.startswith("torch"):
        requester = str((globals or {}).get("__name__", ""))
        wanted = [name, *(f"{name}.{f}" for f in (fromlist or ()) if isinstance(f, str))]
        if not _keeper(requester) and any(_is_blocked(w) for w in wanted):
            raise _refuse(name, requester)
    return _original_import(name, globals, locals, fromlist, level)


def install() -> None:
    """Make torch.ao.quantization unimportable for everything but torch and torchao (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    sys.meta_path.insert(0, _Finder())
    builtins.__import__ = _guarded_import


def require(feature: str, instead: str) -> None:
    """Raise :class:`TorchAoUnavailable` naming ``feature`` when torch.ao.quantization is not usable."""
    if available():
        return
    from ptsq.errors import TorchAoUnavailable

    why = f"{BLOCK_ENV} is set" if blocked() else "this PyTorch does not have it"
    raise TorchAoUnavailable(f"{feature} needs the deprecated torch.ao.quantization ({why})", instead)


def default_engine(mode: str = "static") -> str:
    """``fx`` while torch.ao.quantization is here; once it is gone ``pt2e``, and ``onnx`` for dynamic mode.

    Dynamic mode: PT2E's compiled dynamic int8 Linear lost fidelity here (a Linear-GELU-Linear block with
    a residual: mean cosine 0.982 vs 0.9999 eagerly and on the FX path), onnxruntime's did not.
    """
    if available():
        return "fx"
    if mode == "dynamic":
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is not None:
            return "onnx"
    return "pt2e"


def install_if_requested() -> None:
    if os.environ.get(BLOCK_ENV, "") not in ("", "0"):
        install()

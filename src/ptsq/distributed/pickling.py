"""Pickle models for Ray workers: the user's own code travels with them, int8 modules included.

- Code: a class whose module is not installed (a ``file.py:Net`` spec, a folder on the driver's
  ``PYTHONPATH``, the repository's examples) is pickled *by value*, so workers need not import it.
  Installed packages (torch, timm, …) stay references and must be installed on every node; a worker
  that lacks one fails with a one-line error naming the missing module.
- int8 modules: torch's quantized conv modules cannot be unpickled as they are (their ``__setstate__``
  assigns attributes before ``nn.Module.__init__`` has run; torch 2.14: "'ConvReLU2d' object has no
  attribute '_modules'"), so they are rebuilt the way their own ``__deepcopy__`` does it.
- Artifacts (:class:`ptsq.quantized.ArtifactModel`) pickle as their file's bytes (their ``__reduce__``).
"""

from __future__ import annotations

import contextlib
import io
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

_NEVER_BY_VALUE = ("ptsq", "torch", "builtins", "__main__")  # ptsq is shipped; __main__ is by value anyway


@lru_cache(maxsize=1)
def _installed_dirs() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    dirs = {paths["stdlib"], paths["purelib"], paths["platlib"]}
    with contextlib.suppress(AttributeError):
        dirs.update(site.getsitepackages())
    return tuple(str(Path(d).resolve()) for d in dirs if d)


def _user_module(name: str) -> Any:
    """The module ``name`` if it is the user's own code (not installed), else None."""
    if name.split(".")[0] in _NEVER_BY_VALUE:
        return None
    mod = sys.modules.get(name)
    path = getattr(mod, "__file__", None)
    if mod is None or not path or str(Path(path).resolve()).startswith(_installed_dirs()):
        return None
    return mod


def _by_value(cloudpickle: Any, names: list[str]) -> None:
    for name in names:
        mod = _user_module(name)
        if mod is not None:
            with contextlib.suppress(ValueError):  # already registered
                cloudpickle.register_pickle_by_value(mod)


def rebuild_module(cls: type, state: Any) -> Any:
    """Unpickle one quantized conv module (what its ``__deepcopy__`` does)."""
    import torch

    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    module.__setstate__(state)
    return module


def dumps(obj: Any) -> bytes:
    """cloudpickle bytes of ``obj`` that a Ray worker can load (see the module docstring)."""
    from ray import cloudpickle

    try:
        from torch.ao.nn.quantized.modules.conv import _ConvNd as qconv
    except ImportError:  # a torch without quantized modules has nothing to rebuild
        qconv = None
    seen: set[type] = set()

    class Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, o: Any) -> Any:
            cls = type(o)
            if cls not in seen:  # the first object of each class: ship its code if it is the user's
                seen.add(cls)
                _by_value(cloudpickle, [b.__module__ for b in cls.__mro__])
            if isinstance(o, (type, types.FunctionType)):  # a class or function referred to directly
                _by_value(cloudpickle, [getattr(o, "__module__", "") or ""])
            if qconv is not None and isinstance(o, qconv):
                return rebuild_module, (cls, o.__getstate__())
            return super().reducer_override(o)

    buf = io.BytesIO()
    Pickler(buf, protocol=5).dump(obj)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    from ray import cloudpickle

    return cloudpickle.loads(data)


__all__ = ["dumps", "loads", "rebuild_module"]

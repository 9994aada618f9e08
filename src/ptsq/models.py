"""Load the user's fp32 model from a spec string, safely.

Specs: ``torchvision:NAME`` (architecture; weights from ``weights``), ``package.module:callable``
(imported from the current folder first, then the installed packages, as ``python -m`` would)
or ``path/to/file.py:callable`` (a class or factory; ``weights`` is its state_dict), or a file
holding a whole pickled model (only with ``trust_pickle``). Files are read with
``torch.load(weights_only=True)`` unless the user opts in.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import os
import pickle
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.data.preprocess import Preprocess, preset
from ptsq.data.spec import from_model
from ptsq.errors import ModelLoadError, UnsafeFileError, WeightsMismatchError, first_line

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "params", "ema")


@dataclass
class LoadedModel:
    model: nn.Module
    spec: str
    weights: str | None = None
    weights_sha256: str | None = None
    preprocess: Preprocess | None = None  # the input spec the model carries, if any (ptsq.data.spec)
    notes: list[str] = field(default_factory=list)
    preprocess_source: str | None = None  # where ``preprocess`` came from


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def unpickle_detail(exc: BaseException) -> str:
    """`` (it would load posix.system)`` from torch's weights-only refusal, or ``""``."""
    import re

    m = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f" (it would load {m.group(1)})" if m else ""


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _safe_load(path: Path, trust_pickle: bool, what: str) -> Any:
    if not path.exists():
        raise ModelLoadError(f"{what} file '{path}' does not exist", "check the path")
    if path.is_dir():
        raise ModelLoadError(f"{what} '{path}' is a folder, not a file", "give the .pt/.pth file")
    if is_torchscript(path):
        raise ModelLoadError(
            f"'{path}' is a TorchScript file, which cannot be re-captured for quantization",
            "pass the original Python model (e.g. torchvision:resnet18 --weights w.pth or pkg.module:factory)",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise UnsafeFileError(
                f"'{path}' contains pickled Python objects that could run code when loaded{unpickle_detail(exc)}",
            ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = first_line(exc)
        if isinstance(exc, EOFError) or (_starts_with(path, b"PK") and not zipfile.is_zipfile(path)):
            reason = "the file is truncated or damaged (an incomplete archive)"
        raise ModelLoadError(f"cannot read {what} file '{path}': {reason}", "check that the file is complete") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the user opted in; still report failures as one line
        raise ModelLoadError(
            f"cannot unpickle '{path}': {exc}".splitlines()[0], "check the file and its code"
        ) from None


def extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state_dict inside a checkpoint (the usual keys), stripping DataParallel prefixes."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(
            f"'{path}' holds no state_dict (looked at the top level and keys {', '.join(STATE_DICT_KEYS)})",
            "save weights with torch.save(model.state_dict(), path)",
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def apply_weights(model: nn.Module, path: Path, trust_pickle: bool = False) -> str:
    """Load a state_dict file into ``model`` strictly; returns the file's sha256."""
    sd = extract_state_dict(_safe_load(path, trust_pickle, "weights"), path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{', …' if len(unexpected) > 3 else ''})"
            )
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} of other shape (e.g. {k}: file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
            )
        raise WeightsMismatchError(
            f"weights '{path}' do not match the model: " + "; ".join(parts),
            "check that the weights belong to this architecture (and its num_classes)",
        )
    model.load_state_dict(sd, strict=True)
    return file_sha256(path)


def _torchvision(name: str) -> tuple[nn.Module, Preprocess | None]:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ModelLoadError("torchvision is not installed", "pip install torchvision") from None
    names = tvm.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        raise ModelLoadError(
            f"unknown torchvision model {name!r}",
            f"did you mean: {', '.join(close)}?" if close else "see torchvision.models.list_models()",
        )
    model = tvm.get_model(name, weights=None)
    pre = None
    try:  # the weights' metadata holds the input size without downloading anything
        t = tvm.get_model_weights(name).DEFAULT.transforms()
        crop = int(t.crop_size[0])
        resize = int(t.resize_size[0])
        pre = preset("imagenet", size=(crop, crop), crop_pct=round(crop / resize, 4))
    except Exception:  # models without weights metadata keep the caller's default
        pre = None
    return model, pre


def _search_path() -> list[str]:
    """Where ``import`` looks for a spec's module: the current folder first (as ``python -m`` does), then
    the installed packages. The console script alone would not look in the current folder."""
    cwd = os.getcwd()
    rest = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != cwd]
    return [cwd, *rest]


@contextlib.contextmanager
def _current_folder_first() -> Iterator[None]:
    """Put the current folder first on ``sys.path`` while the user's module is imported and built.

    Only for that span: a library caller's import path is theirs (changes the module makes to it stay).
    Submodules the package imports later still resolve through the package's own ``__path__``.
    """
    cwd = os.getcwd()
    added = not sys.path or os.path.abspath(sys.path[0] or ".") != cwd
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)  # the first occurrence: the one put there above


def _not_found(mod_name: str, exc: ModuleNotFoundError) -> bool:
    """Whether ``exc`` says the spec's own module (or a parent package) is missing, not one it imports."""
    return exc.name is not None and (mod_name == exc.name or mod_name.startswith(exc.name + "."))


def _import_module(mod_name: str) -> Any:
    try:
        with _current_folder_first():
            return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if not _not_found(mod_name, exc):
            raise
        searched = [p for p in _search_path() if os.path.isdir(p)]
        parent, _, _ = exc.name.rpartition(".")
        hint = (
            f"check the module name after '{parent}.'"
            if parent
            else f"run ptsq from the folder that holds '{exc.name}', add that folder to PYTHONPATH, "
            "or give a file spec such as path/to/model.py:Net"
        )
        raise ModelLoadError(
            f"cannot import '{mod_name}': no module named '{exc.name}' in the current folder or the installed "
            f"packages (searched {', '.join(searched)})",
            hint,
        ) from None


def _import_file(path: Path) -> Any:
    if not path.exists():
        raise ModelLoadError(f"python file '{path}' does not exist", "check the MODEL path")
    mod_spec = importlib.util.spec_from_file_location(path.stem, path)
    if mod_spec is None or mod_spec.loader is None:
        raise ModelLoadError(f"cannot import '{path}'", "give a .py file")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules.setdefault(path.stem, module)
    mod_spec.loader.exec_module(module)
    return module


def _import_callable(spec: str) -> Any:
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py") or "/" in mod_name:
            module = _import_file(Path(mod_name))
        else:
            module = _import_module(mod_name)
    except ModelLoadError:
        raise
    except Exception as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        raise ModelLoadError(
            f"cannot import '{mod_name}': {type(exc).__name__}: {exc}".splitlines()[0],
            f"'{mod_name}' needs '{missing}': install it" if missing else "fix the error in that module",
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            choices = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(part, choices, n=3)
            raise ModelLoadError(
                f"'{mod_name}' has no attribute {attr!r}",
                f"did you mean: {', '.join(close)}?" if close else "check the name after ':'",
            )
        obj = getattr(obj, part)
    return obj


def load_model(spec: str, *, weights: str | None = None, trust_pickle: bool = False) -> LoadedModel:
    """Build the fp32 model described by ``spec`` in eval mode (see module docstring)."""
    pre: Preprocess | None = None
    spec = spec.strip()
    if spec.startswith("torchvision:"):
        model, pre = _torchvision(spec.split(":", 1)[1])
    elif ":" in spec and not Path(spec).exists():
        obj = _import_callable(spec)
        if isinstance(obj, nn.Module):
            model = obj
        elif callable(obj):
            try:
                with _current_folder_first():  # a factory may import more of the user's code
                    model = obj()
            except Exception as exc:
                raise ModelLoadError(
                    f"calling '{spec}' failed: {type(exc).__name__}: {exc}".splitlines()[0],
                    "MODEL must name a class or factory callable with no arguments",
                ) from None
        else:
            raise ModelLoadError(f"'{spec}' is not a class, factory or module", "name an nn.Module class or factory")
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"'{spec}' returned a {type(model).__name__}, not a torch.nn.Module", "fix MODEL")
    else:
        path = Path(spec)
        if not path.exists():
            raise ModelLoadError(
                f"model {spec!r} is neither an existing file nor a 'torchvision:NAME' / 'module:callable' spec",
                "use e.g. torchvision:resnet18, mypkg.models:build, or a checkpoint file with --trust-pickle",
            )
        obj = _safe_load(path, trust_pickle, "model")
        if isinstance(obj, nn.Module):
            model = obj
        else:
            raise ModelLoadError(
                f"'{path}' holds weights only (a state_dict), not a model",
                "give the architecture as MODEL (e.g. torchvision:resnet18) and this file as --weights",
            )
    sha = None
    if weights:
        sha = apply_weights(model, Path(weights), trust_pickle)
    model.eval()
    source = "torchvision weight metadata" if pre is not None else None
    if pre is None:
        pre, source = from_model(model)
    return LoadedModel(model=model, spec=spec, weights=weights, weights_sha256=sha, preprocess=pre,
                       preprocess_source=source)  # fmt: skip

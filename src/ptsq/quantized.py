"""QuantizedModel (fresh from ``quantize``) and ArtifactModel (from ``load``)."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq import artifact
from ptsq.backends import activate
from ptsq.engines import available_engines, get_engine, missing_packages
from ptsq.engines.base import EngineResult
from ptsq.errors import ArtifactError, first_line


def precision_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    c = Counter(r["precision"] for r in rows)
    return {"int8": c.get("int8", 0), "fp32": c.get("fp32", 0)}


class QuantizedModel:
    """The int8 model in memory, its manifest, and how to save it.

    Call it like the original model. ``precision`` maps each layer to int8 or fp32 (with the
    reason for fp32); ``summary()`` is what the CLI prints.
    """

    def __init__(self, result: EngineResult, manifest: dict[str, Any], example_args: tuple[Any, ...]) -> None:
        self.result = result
        self.module = result.module
        self.manifest = manifest
        self.example_args = example_args
        self.path: Path | None = None
        self.stats: dict[str, Any] = {}
        self.held_back: list[tuple[Any, ...]] = []  # the self-check's samples (in this process only)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return self.module(*args, **kwargs)

    @property
    def precision(self) -> dict[str, dict[str, str]]:
        return {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in self.manifest["precision"]}

    @property
    def fidelity(self) -> dict[str, Any]:
        return self.manifest["check"]

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the artifact atomically; refuses to overwrite unless ``force``."""
        out = Path(path)
        engine = get_engine(self.manifest["engine"])
        text = artifact.seal(self.manifest)
        artifact.write(out, lambda tmp: engine.save(self.result, tmp, text, self.example_args), force=force)
        self.path = out
        self.stats["int8_bytes"] = out.stat().st_size
        return out

    def serialized_size(self) -> int:
        """Bytes the artifact takes (written to memory if not saved yet)."""
        if self.path is not None and self.path.exists():
            return self.path.stat().st_size
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "artifact"
            get_engine(self.manifest["engine"]).save(self.result, p, artifact.seal(self.manifest), self.example_args)
            return p.stat().st_size

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "engine": m["engine"],
            "backend": m["backend"],
            "layers": precision_counts(m["precision"]),
            "fp32_layers": [r for r in m["precision"] if r["precision"] == "fp32"],
            "calibration": m["calibration"],
            "check": m["check"],
            "speed": m.get("speed"),
            "preprocess": m.get("preprocess"),
            "notes": m.get("notes", []),
            **self._compile_time(),
            **self.stats,
        }

    def _compile_time(self) -> dict[str, Any]:
        """Seconds the first compile took and its route (engines that compile: PT2E's inductor); kept out of the
        manifest, whose content must not change with the machine's load."""
        seconds = getattr(self.module, "compile_seconds", None)
        if seconds is None:  # a cached package loads in ~0.0 s: still say so
            return {}
        return {"compile_seconds": seconds, "compile_route": getattr(self.module, "route", None)}


class ArtifactModel(nn.Module):
    """A loaded ptsq artifact: a runnable module plus its manifest. Needs no model code."""

    def __init__(self, module: Any, manifest: dict[str, Any], path: Path) -> None:
        super().__init__()
        self.module = module
        self.manifest = manifest
        self.path = path

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @property
    def input_shapes(self) -> list[list[int]]:
        return self.manifest.get("input", {}).get("shapes", [])

    def info(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.path.stat().st_size, **self.manifest}

    def __reduce__(self) -> tuple[Any, ...]:
        # TorchScript modules and runtime sessions do not pickle: an artifact travels (to a Ray worker) as
        # its file's bytes and is loaded, manifest verified, on the other side
        return load_bytes, (self.path.name, self.path.read_bytes())


def from_artifact(path: str | os.PathLike[str], example_args: tuple[Any, ...]) -> QuantizedModel:
    """A QuantizedModel for an artifact quantized elsewhere (e.g. by a Ray worker for ``engine="auto"``).

    It runs like the fresh model; ``save`` writes the same int8 model again with the manifest as it is then
    (the engine's own loader and saver, the same round trip for every engine). There is no calibrated fp32
    graph in ``result.debug``: per-layer analysis needs the model quantized in this process.
    """
    from ptsq.engines.base import LayerPrecision

    art = load(path)
    rows = [LayerPrecision(r["name"], r["op"], r["precision"], r.get("reason", "")) for r in art.manifest["precision"]]
    # the module is frozen already (FX); freezing it again on save would fail and is not needed
    details = {**art.manifest.get("details", {}), "freeze": False}
    result = EngineResult(art.module, rows, list(art.manifest.get("notes", [])), details)
    return QuantizedModel(result, art.manifest, tuple(example_args))


_BYTES_DIR: list[str] = []  # one private folder per process for artifacts received as bytes


def load_bytes(name: str, data: bytes) -> ArtifactModel:
    """Load an artifact from the bytes of a file called ``name`` (see ``ArtifactModel.__reduce__``)."""
    if not _BYTES_DIR:
        import atexit
        import shutil

        _BYTES_DIR.append(tempfile.mkdtemp(prefix="ptsq-artifacts-"))
        atexit.register(shutil.rmtree, _BYTES_DIR[0], True)
    folder = Path(tempfile.mkdtemp(dir=_BYTES_DIR[0]))
    path = folder / Path(name).name
    path.write_bytes(data)
    return load(path)


def load(path: str | os.PathLike[str]) -> ArtifactModel:
    """Load a ptsq artifact; verifies its manifest and sets the quantized engine it was built for."""
    p = artifact.check_readable(path)
    for name in available_engines():
        if name == "auto" or missing_packages(name):  # auto is a strategy, not a format
            continue
        engine = get_engine(name)
        if engine.can_load(p):
            break
    else:
        raise ArtifactError(
            f"'{p}' is not a ptsq artifact (truncated, or not a file ptsq wrote)",
            "re-create it with 'ptsq quantize'",
        )
    try:
        module, text = engine.load(p)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(
            f"'{p}' cannot be loaded: {first_line(exc)}",
            "the file may be truncated or corrupt; re-create it with 'ptsq quantize'",
        ) from None
    manifest = artifact.unseal(text, p)
    backend = manifest.get("backend")
    if backend:
        activate(backend)
    if isinstance(module, nn.Module):
        module.eval()
    return ArtifactModel(module, manifest, p)


def manifest_of(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify only the manifest: the model is not deserialised and no runtime is loaded."""
    from ptsq.manifest_file import read_manifest

    return read_manifest(path)


__all__ = ["ArtifactModel", "QuantizedModel", "from_artifact", "load", "load_bytes", "manifest_of"]

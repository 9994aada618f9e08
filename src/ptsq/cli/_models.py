"""Load the MODEL / ARTIFACT arguments of bench and eval: fp32 specs and ptsq artifacts, in any mix."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ptsq.data.preprocess import Preprocess


@dataclass
class Loaded:
    label: str
    module: nn.Module
    kind: str  # "fp32" or "int8 (<engine>)"
    size_bytes: int | None
    source: dict[str, Any]  # how a child process can load it again (for peak memory)
    preprocess: Preprocess | None  # a known default (torchvision metadata), fp32 only
    input_shape: list[int] | None  # from an artifact's manifest

    @property
    def runner(self) -> Any:
        """What to time: the bare int8 module for artifacts (no wrapper call), else the model."""
        return getattr(self.module, "module", self.module) if self.kind != "fp32" else self.module


def is_artifact(path: Path) -> bool:
    """A file in a format some engine writes (read without loading it; a plain TorchScript file counts, so
    loading it says that it has no ptsq manifest)."""
    from ptsq.errors import ArtifactError
    from ptsq.manifest_file import read_manifest_text

    if not path.is_file():
        return False
    try:
        read_manifest_text(path)
    except ArtifactError:
        return False
    return True


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (or, in old versions, a pickle starting with the PROTO opcode)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def load_one(spec: str, weights: str | None, trust_pickle: bool) -> Loaded:
    from ptsq.errors import ModelLoadError
    from ptsq.models import load_model
    from ptsq.quantized import load

    path = Path(spec)
    if is_artifact(path):
        art = load(path)
        shapes = art.input_shapes
        return Loaded(
            path.name, art, f"int8 ({art.manifest.get('engine', '?')})", path.stat().st_size,
            {"artifact": str(path.resolve())}, None, list(shapes[0]) if shapes else None,
        )  # fmt: skip
    if path.is_file() and not _looks_like_torch_file(path):
        raise ModelLoadError(
            f"'{spec}' is neither a ptsq artifact nor a PyTorch model file",
            "give an artifact written by 'ptsq quantize', or a model spec such as torchvision:resnet18",
        )
    loaded = load_model(spec, weights=weights, trust_pickle=trust_pickle)
    size = Path(weights).stat().st_size if weights else (path.stat().st_size if path.is_file() else None)
    source = {"spec": spec, "weights": str(Path(weights).resolve()) if weights else None, "trust_pickle": trust_pickle}
    return Loaded(spec, loaded.model, "fp32", size, source, loaded.preprocess, None)


def load_all(specs: list[str], weights: str | None, trust_pickle: bool) -> list[Loaded]:
    return [load_one(s, weights, trust_pickle) for s in specs]

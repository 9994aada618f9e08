"""Typed errors for every situation a user can cause and fix.

Each error carries a one-line message naming the problem and a hint naming the fix;
the CLI prints ``error: <message>`` and ``hint: <hint>`` and exits with code 2.
"""

from __future__ import annotations

import os
from pathlib import Path


class PtsqError(Exception):
    """Base class: a problem the user can fix. ``hint`` says how."""

    default_hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class ConfigError(PtsqError, ValueError):
    """A configuration or option value is invalid."""


class TorchAoUnavailable(ConfigError):
    """A feature needs the deprecated torch.ao.quantization, which this PyTorch lacks (or PTSQ_NO_TORCH_AO hides)."""


class BackendError(PtsqError):
    """The requested quantized backend is unknown or unsupported by this PyTorch build."""


class ModelLoadError(PtsqError):
    """The model spec, its weights or its checkpoint cannot be loaded."""


class UnsafeFileError(ModelLoadError):
    """Loading the file would execute pickled code and the user has not opted in."""

    default_hint = "only if you trust the file's origin, pass --trust-pickle (trust_pickle=True)"


class WeightsMismatchError(ModelLoadError):
    """A weights file does not match the model architecture."""


class DataError(PtsqError):
    """Calibration or evaluation data is missing, empty, unreadable or malformed."""


class ImageDecodeError(DataError):
    """One image file cannot be decoded; ``path`` names the file and ``reason`` says why, briefly."""

    def __init__(
        self, message: str, hint: str | None = None, *, path: str | os.PathLike[str] | None = None, reason: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.path = Path(path) if path is not None else None
        self.reason = reason or message


class InputShapeError(PtsqError):
    """The model rejects inputs of the given shape."""


class TraceError(PtsqError):
    """The model cannot be captured as a graph."""


class QuantizationError(PtsqError):
    """Quantization itself failed (prepare, calibrate or convert)."""


class ArtifactError(PtsqError):
    """An artifact is missing, truncated, tampered with, or from an incompatible version."""


class OutputPathError(PtsqError):
    """The output path cannot be written (missing folder, exists without --force, read-only, full)."""


class ClusterError(PtsqError):
    """Ray is missing, a cluster cannot be reached or used, or a job on it failed."""


class Interrupted(PtsqError):
    """The user interrupted a long operation; nothing was written."""

    default_hint = "run the command again; no partial output was left behind"


class SlowerThanFp32Error(PtsqError):
    """The int8 model is not faster than fp32 where it will run, and the user did not accept that.

    The CLI exits with :attr:`exit_code` (3), not 2: the inputs were fine, the result is not worth having.
    """

    exit_code = 3
    default_hint = "pass --allow-slower to keep it anyway, or try another engine (--engine auto)"


class QuantizationWarning(UserWarning):
    """The int8 model's self-check found it far from fp32."""


class SpeedWarning(UserWarning):
    """The int8 model is not faster than fp32 (or not by ``speed.min_speedup``) at the deployment thread count."""


__all__ = [
    "ArtifactError",
    "BackendError",
    "ClusterError",
    "ConfigError",
    "DataError",
    "ImageDecodeError",
    "InputShapeError",
    "Interrupted",
    "ModelLoadError",
    "OutputPathError",
    "PtsqError",
    "QuantizationError",
    "QuantizationWarning",
    "SlowerThanFp32Error",
    "SpeedWarning",
    "TraceError",
    "UnsafeFileError",
    "WeightsMismatchError",
]


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type name), cut to ``limit`` characters."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__

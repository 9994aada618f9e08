"""How raw pixels become model inputs: one small, serialisable spec.

A pixel value ``x`` in [0, 255] becomes ``(x * scale - mean[c]) / std[c]`` after a resize of the
shorter side to ``round(size / crop_pct)`` and a centre crop to ``size``. The spec is stored in
the artifact's manifest so evaluation and benchmarking reuse it without retyping.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ptsq.errors import ConfigError, first_line

CHANNEL_ORDERS = ("rgb", "bgr", "gray")


@dataclass(frozen=True)
class Preprocess:
    """Resize, crop and normalisation applied to every image (see module docstring)."""

    size: tuple[int, int] = (224, 224)
    crop_pct: float = 0.875
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channels: str = "rgb"
    preset: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        try:
            self._validate()
        except ConfigError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:  # wrong types from a dict or a manifest
            raise ConfigError(
                f"invalid preprocessing value ({type(exc).__name__}: {first_line(exc, 80)})",
                "size: [h, w] integers; crop_pct, scale: numbers; mean, std: lists of numbers; channels: rgb|bgr|gray",
            ) from None

    def _validate(self) -> None:
        if isinstance(self.size, (str, bytes)) or not hasattr(self.size, "__iter__"):
            raise ConfigError(f"input size {self.size!r} is invalid", "give [height, width], e.g. [224, 224]")
        size = tuple(int(s) for s in self.size)
        if len(size) != 2 or min(size) < 1 or max(size) > 8192:
            raise ConfigError(
                f"input size {self.size!r} is invalid",
                "give one or two positive integers up to 8192, e.g. --input-size 224 or 240x320",
            )
        object.__setattr__(self, "size", size)
        if not (0.05 <= float(self.crop_pct) <= 1.0):
            raise ConfigError(f"crop_pct {self.crop_pct!r} must be in [0.05, 1]", "use e.g. --crop-pct 0.875")
        if self.channels not in CHANNEL_ORDERS:
            raise ConfigError(
                f"channel order {self.channels!r} is unknown",
                f"use one of: {', '.join(CHANNEL_ORDERS)}",
            )
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        nch = 1 if self.channels == "gray" else 3
        for name, vals in (("mean", mean), ("std", std)):
            if len(vals) not in (1, nch):
                raise ConfigError(
                    f"{name} has {len(vals)} values but the images have {nch} channel(s)",
                    f"give 1 or {nch} comma-separated values to --{name}",
                )
            if not all(math.isfinite(v) for v in vals):
                raise ConfigError(f"{name} {vals!r} contains NaN or infinity", f"give finite --{name} values")
        if any(s == 0 for s in std):
            raise ConfigError("std contains 0", "every --std value must be non-zero")
        if not math.isfinite(float(self.scale)) or float(self.scale) == 0:
            raise ConfigError(f"scale {self.scale!r} must be a finite non-zero number", "e.g. --scale 0.00392")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "crop_pct", float(self.crop_pct))

    @property
    def num_channels(self) -> int:
        return 1 if self.channels == "gray" else 3

    @property
    def resize_to(self) -> tuple[int, int]:
        """Size (h, w) after the resize, before the centre crop."""
        return (round(self.size[0] / self.crop_pct), round(self.size[1] / self.crop_pct))

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.num_channels, self.size[0], self.size[1])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        if not isinstance(d, dict):
            raise ConfigError(f"preprocessing must be a dictionary, not {type(d).__name__}", "see Preprocess.to_dict()")
        known = {"size", "crop_pct", "scale", "mean", "std", "channels", "preset"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown preprocessing keys: {sorted(unknown)}", f"known keys: {sorted(known)}")
        kw = dict(d)
        if isinstance(kw.get("size"), (list, tuple)):
            kw["size"] = tuple(kw["size"])
        return cls(**kw)

    def with_overrides(self, **kw: Any) -> Preprocess:
        d = self.to_dict()
        d.update({k: v for k, v in kw.items() if v is not None})
        return Preprocess.from_dict(d)


PRESETS: dict[str, dict[str, Any]] = {
    # torchvision / timm ImageNet models
    "imagenet": dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875),
    # (x - 127.5) / 127.5: many face models, MobileNet-style TF ports
    "minus1to1": dict(scale=1.0, mean=(127.5,), std=(127.5,), crop_pct=1.0),
    # x / 255
    "unit": dict(scale=1 / 255, mean=(0.0,), std=(1.0,), crop_pct=1.0),
    # EfficientNet-Lite (TF weights): (x - 127) / 128, resized without a border crop
    "effnet-lite": dict(scale=1.0, mean=(127.0,), std=(128.0,), crop_pct=1.0),
    # MTCNN-style face nets: (x - 127.5) / 128
    "mtcnn": dict(scale=1.0, mean=(127.5,), std=(128.0,), crop_pct=1.0),
    # MNIST-style grayscale digits
    "mnist": dict(scale=1 / 255, mean=(0.1307,), std=(0.3081,), crop_pct=1.0, channels="gray", size=(28, 28)),
}


def preset(name: str, **overrides: Any) -> Preprocess:
    """Build a :class:`Preprocess` from a named preset, with optional overrides (None = keep)."""
    key = name.lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}", f"choose one of: {', '.join(PRESETS)}")
    kw: dict[str, Any] = dict(PRESETS[key])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return Preprocess(preset=key, **kw)


def parse_input_sizes(text: str, channels: int = 3) -> list[tuple[int, int, int]]:
    """Per-input sizes as (C, H, W): ``3x224x224,3x112x112`` (several inputs: comma-separated, each
    with an ``x``), or one input as :func:`parse_size` reads it (``224``, ``240,320``, ``3x224x224``)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) < 2 or not all("x" in p.lower() for p in parts):
        parts = [text]
    shapes = []
    for part in parts:
        h, w = parse_size(part)
        dims = [d for d in part.lower().replace("*", "x").split("x") if d.strip()]
        c = int(dims[0]) if len(dims) == 3 and dims[0].strip().isdigit() else channels
        if not 1 <= c <= 64:
            raise ConfigError(f"input size {part!r} has {c} channels", "use e.g. 3x224x224 (1..64 channels)")
        shapes.append((c, h, w))
    return shapes


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``224``, ``224x224``, ``240,320`` or ``3x224x224`` (channels ignored) into (h, w)."""
    raw = text.strip().lower().replace("*", "x").replace(",", "x")
    parts = [p for p in raw.split("x") if p.strip()]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"input size {text!r} is not a number", "use e.g. --input-size 224 or 240x320") from None
    if len(nums) == 1:
        nums = nums * 2
    elif len(nums) == 3:
        nums = nums[1:]
    if len(nums) != 2 or min(nums) < 1 or max(nums) > 8192:
        raise ConfigError(f"input size {text!r} is invalid", "use e.g. --input-size 224 or 240x320 (1..8192)")
    return (nums[0], nums[1])


def _number(text: str) -> float:
    """``0.5``, ``1e-3`` or a fraction such as ``1/255`` (ValueError or ZeroDivisionError otherwise)."""
    num, slash, den = text.strip().partition("/")
    return float(num) / float(den) if slash else float(num)


def parse_number(text: str, what: str) -> float:
    """Parse one finite number, also written as a fraction: ``0.00392``, ``1/255``."""
    try:
        value = _number(text)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            f"--{what} {text!r} is not a number or a fraction", f"give e.g. --{what} 1/255 or --{what} 0.0039"
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"--{what} {text!r} is not finite", f"give a finite number to --{what}")
    return value


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """Parse a comma-separated list of finite numbers (fractions allowed), e.g. ``0.485,0.456,0.406``."""
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"--{what} is empty", f"give comma-separated numbers, e.g. --{what} 0.5,0.5,0.5")
    try:
        vals = tuple(_number(p) for p in parts)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            f"--{what} {text!r} is not a list of numbers", f"give comma-separated numbers, e.g. --{what} 0.5,0.5,0.5"
        ) from None
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"--{what} {text!r} contains NaN or infinity", f"give finite numbers to --{what}")
    return vals

"""QuantConfig: every choice the quantize pipeline makes, as one validated, serialisable object."""

from __future__ import annotations

import json
import math
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ptsq.errors import ConfigError

CONFIG_VERSION = 1
MODES = ("static", "dynamic", "qat")


@dataclass(frozen=True)
class SkipRule:
    """Keep matching layers in fp32. ``kind`` is one of name (exact or prefix), regex, type."""

    kind: str
    pattern: str

    KINDS = ("name", "regex", "type")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ConfigError(f"skip rule kind {self.kind!r} is unknown", f"use one of: {', '.join(self.KINDS)}")
        if not self.pattern:
            raise ConfigError("skip rule has an empty pattern", "write e.g. --skip name:features.0")
        if self.kind == "regex":
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ConfigError(
                    f"skip rule regex {self.pattern!r} is invalid: {e}", "fix the regular expression"
                ) from None

    @classmethod
    def parse(cls, text: str) -> SkipRule:
        """``name:features.3``, ``regex:.*classifier.*``, ``type:PReLU``; a bare value is a name."""
        kind, sep, pattern = text.partition(":")
        if not sep:
            return cls("name", text.strip())
        return cls(kind.strip().lower(), pattern.strip())

    def matches(self, qualified_name: str, type_name: str) -> bool:
        if self.kind == "name":
            return qualified_name == self.pattern or qualified_name.startswith(self.pattern + ".")
        if self.kind == "regex":
            return re.fullmatch(self.pattern, qualified_name) is not None
        return type_name == self.pattern or type_name.split(".")[-1] == self.pattern

    def __str__(self) -> str:
        return f"{self.kind}:{self.pattern}"


def _check_field_types(obj: Any) -> None:
    """Each field must have its default's type (ints pass for floats; lists for tuples), else ConfigError."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            kind = "a finite number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        elif isinstance(default, tuple):
            ok = isinstance(value, (tuple, list)) and all(isinstance(v, (str, SkipRule)) for v in value)
            kind = "a list of strings"
        elif isinstance(default, dict):
            ok, kind = isinstance(value, dict), "a dictionary"
        else:
            continue
        if not ok:
            raise ConfigError(
                f"config field {f.name!r} must be {kind}, not {type(value).__name__} {_short_repr(value)}",
                f"fix {f.name} (default: {default!r})",
            )


def _short_repr(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize. Defaults are the ones ptsq recommends; every field is validated."""

    engine: str = "fx"
    mode: str = "static"
    backend: str = "auto"
    per_channel: bool = True
    skip: tuple[SkipRule, ...] = ()
    strict: bool = False  # fail on untraceable parts instead of keeping them in fp32
    probe_kernels: bool = True  # measure suspect int8 kernels and keep broken ones in fp32
    check_batches: int = 2  # calibration batches held back for the post-convert self-check
    warn_sqnr_db: float = 15.0
    warn_agreement: float = 0.9
    freeze: bool = True
    speed_guard: float = 1.5  # keep a layer fp32 if its int8 kernel is this many times slower here; 0 = off
    cleanup: tuple[str, ...] = (
        "conv-modules", "fold-pad", "fold-bn", "equalize", "clamp-ranges", "bias-correction",
    )  # see engines/fx_cleanup.py; defaults measured in docs/accuracy.md  # fmt: skip
    observer: str = "histogram"  # activation range setting, see ptsq/algorithms (docs/accuracy.md)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ptsq.engines import available_engines

        _check_field_types(self)
        if self.engine not in available_engines() and self.engine != "auto":
            raise ConfigError(f"engine {self.engine!r} is unknown", f"choose one of: {', '.join(available_engines())}")
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is unknown", f"choose one of: {', '.join(MODES)}")
        if not isinstance(self.check_batches, int) or not (0 <= self.check_batches <= 100):
            raise ConfigError(f"check_batches {self.check_batches!r} must be an integer in [0, 100]", "use e.g. 2")
        steps = ("conv-modules", "fold-pad", "fold-bn", "equalize", "clamp-ranges", "bias-correction")
        from ptsq.algorithms import OBSERVER_NAMES

        if self.observer not in OBSERVER_NAMES:
            raise ConfigError(f"observer {self.observer!r} is unknown", f"choose one of: {', '.join(OBSERVER_NAMES)}")
        unknown = [c for c in self.cleanup if c not in steps]
        if unknown:
            raise ConfigError(f"unknown clean-up step(s) {unknown}", f"choose from: {', '.join(steps)}")
        object.__setattr__(self, "cleanup", tuple(self.cleanup))
        rules = tuple(r if isinstance(r, SkipRule) else SkipRule.parse(str(r)) for r in self.skip)
        object.__setattr__(self, "skip", rules)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skip"] = [str(r) for r in self.skip]
        return {"type": "QuantConfig", "version": CONFIG_VERSION, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a dictionary, not {type(d).__name__}", 'write e.g. {"backend": "x86"}')
        d = dict(d)
        kind = d.pop("type", "QuantConfig")
        version = d.pop("version", CONFIG_VERSION)
        if kind != "QuantConfig":
            raise ConfigError(f"config type {kind!r} is not a QuantConfig", "write a QuantConfig dictionary")
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise ConfigError(
                f"config version {version!r} is newer than this ptsq understands ({CONFIG_VERSION})",
                "upgrade ptsq (pip install -U ptsq)",
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {unknown}", f"known keys: {sorted(known)}")
        if isinstance(d.get("skip"), (list, tuple)):  # anything else fails the type check with a clear message
            d["skip"] = tuple(SkipRule.parse(s) if isinstance(s, str) else s for s in d["skip"])
        return cls(**d)

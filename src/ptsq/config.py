"""QuantConfig: every choice that changes an artifact, as one validated, serialisable object.

Common choices are fields of :class:`QuantConfig`; what only one engine or mode reads lives in a small
frozen options class per engine (``fx``, ``onnx``, ``openvino``, ``pt2e``), per strategy (``auto``) and
per mode (``calibration``, ``dynamic``, ``qat``). Every field is checked when the object is built: a
value outside a field's choices or of the wrong type is a :class:`~ptsq.errors.ConfigError` that lists
what is accepted, and an unknown key in a dictionary or recipe file names the closest valid key.

The dictionary form (``to_dict``/``from_dict``, one section per options class) is what recipe files
hold (``ptsq quantize --config recipe.yaml``, JSON or YAML) and what every artifact's manifest records.
The table of all options in docs/options.md is generated from these classes (``python -m ptsq.config``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from ptsq.errors import ConfigError
from ptsq.legacy import default_engine

CONFIG_VERSION = 3
MODES = ("static", "dynamic", "qat")
BACKENDS = ("auto", "x86", "fbgemm", "onednn", "qnnpack")
BUILTIN_ENGINES = ("fx", "pt2e", "onnx", "openvino")
CLEANUP_STEPS = ("conv-modules", "fold-pad", "fold-bn", "equalize", "clamp-ranges", "bias-correction")
OBSERVER_NAMES = ("minmax", "moving-average", "histogram", "mse", "percentile", "entropy")
OUTPUT_KINDS = ("auto", "scores", "probabilities", "values")

_engines: list[str] = list(BUILTIN_ENGINES)  # ptsq.engines.register() adds third-party engines


def known_engines() -> list[str]:
    """Engine names a config may choose (besides ``auto``)."""
    return sorted(_engines)


def add_engine(name: str) -> None:
    if name not in _engines:
        _engines.append(name)


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and the one line of help the options table shows."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("options hold immutable defaults")
    return field(default=default, metadata={"help": help})


def _closest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? valid keys: {', '.join(valid)}" if close else f"valid keys: {', '.join(valid)}"


def _short(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def _coerce(where: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the type ``hint`` (Literal, bool, int, float, str, tuple[str, ...], Options)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"unknown {where} {_short(value)}", f"choose one of: {', '.join(choices)}")
        return value
    if isinstance(hint, type) and issubclass(hint, Options):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return hint.from_dict(value, where)
        raise ConfigError(f"{where} must be a {hint.__name__} or a dictionary, not {type(value).__name__}",
                          f"write e.g. {where}: {{...}}")  # fmt: skip
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {_short(value)}", f"fix {where}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, not {_short(value)}", f"fix {where}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, not {_short(value)}", f"fix {where}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {_short(value)}", f"fix {where}")
        return value
    if origin is tuple:
        if typing.get_args(hint)[0] is int:
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise ConfigError(f"{where} must be a list of integers, not {_short(value)}", f"fix {where}")
            return tuple(value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, SkipRule)) for v in value):
            raise ConfigError(f"{where} must be a list of strings, not {_short(value)}", f"fix {where}")
        return tuple(value)
    return value


def _check_fields(obj: Any, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        if f.name.startswith("_"):
            continue
        value = _coerce(f"{where}{f.name}", hints[f.name], getattr(obj, f.name))
        object.__setattr__(obj, f.name, value)


class Options:
    """Base of the per-engine and per-mode option groups: frozen, validated, round-trips through dicts."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check_fields(self, f"{self.section}.")
        self.validate()

    def validate(self) -> None:
        """Checks that involve more than one field's type (ranges, combinations)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | None = None) -> Any:
        where = where or cls.section
        valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = [k for k in data if k not in valid]
        if unknown:
            raise ConfigError(f"unknown option '{where}.{unknown[0]}'", _closest(str(unknown[0]), valid))
        return cls(**data)


def _range(where: str, value: float, lo: float, hi: float, example: str) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{where} {value:g} is outside [{lo:g}, {hi:g}]", f"use e.g. {example}")


@dataclass(frozen=True)
class FxOptions(Options):
    """FX engine (torch.ao.quantization FX graph mode)."""

    section: ClassVar[str] = "fx"
    observer: Literal["minmax", "moving-average", "histogram", "mse", "percentile", "entropy"] = option(
        "histogram", "activation range setting (docs/accuracy.md)"
    )
    probe_kernels: bool = option(True, "measure suspect int8 kernels on a probe and keep wrong ones fp32")


@dataclass(frozen=True)
class OnnxOptions(Options):
    """ONNX Runtime engine (static and dynamic)."""

    section: ClassVar[str] = "onnx"
    format: Literal["qdq", "qoperator"] = option("qdq", "quantized graph format")
    calibration: Literal["minmax", "entropy", "percentile"] = option("minmax", "onnxruntime's range method")
    activations: Literal["uint8", "int8"] = option("uint8", "activation type (U8S8 is the fast one on x86)")
    exporter: Literal["dynamo", "torchscript"] = option("dynamo", "ONNX exporter tried first")
    weights: Literal["int8", "uint8"] = option("int8", "weight type (uint8 never saturates, but is slow)")
    reduce_range: Literal["auto", "on", "off"] = option("auto", "7-bit weights; auto = on without VNNI")
    saturation: Literal["pairs", "reduce-range"] = option(
        "pairs", "how weights avoid int16 saturation when reduce_range is on"
    )


@dataclass(frozen=True)
class OpenVinoOptions(Options):
    """OpenVINO engine (NNCF post-training quantization)."""

    section: ClassVar[str] = "openvino"
    preset: Literal["performance", "mixed"] = option("performance", "symmetric (performance) or asymmetric activations")
    bias_correction: Literal["fast", "accurate", "off"] = option("fast", "NNCF's bias correction")
    model_type: Literal["cnn", "transformer"] = option("cnn", "NNCF's scheme (transformer: SmoothQuant)")
    overflow_fix: Literal["auto", "first_layer", "all", "off"] = option(
        "auto", "7-bit weights where u8 x s8 saturates (auto: all layers without VNNI)"
    )
    depthwise: Literal["fp32", "int8"] = option("fp32", "depthwise convs int8 or kept fp32 (more accurate)")


@dataclass(frozen=True)
class Pt2eOptions(Options):
    """PT2E engine (torch.export + torchao + inductor)."""

    section: ClassVar[str] = "pt2e"
    compile: bool = option(True, "run (and self-check) the inductor-compiled program")
    reduce_range: Literal["auto", "on", "off"] = option("auto", "7-bit activations; auto = on without VNNI")
    extend: bool = option(True, "ptsq's additions to torchao's recipe: conv1d, int8 data movement")


@dataclass(frozen=True)
class AutoOptions(Options):
    """``engine: auto``: try engines, keep the fastest faithful one."""

    section: ClassVar[str] = "auto"
    engines: tuple[str, ...] = option((), "engines to try (empty: every installed engine)")
    margin_db: float = option(1.0, "an engine passes within this many dB of the best SQNR")
    threads: int = option(0, "threads to time at (0: the current torch thread count)")
    runs: int = option(20, "timed runs per engine")

    def validate(self) -> None:
        unknown = [e for e in self.engines if e not in known_engines()]
        if unknown:
            raise ConfigError(
                f"auto.engines names unknown engine {unknown[0]!r}", f"choose from: {', '.join(known_engines())}"
            )
        _range("auto.margin_db", self.margin_db, 0.0, 100.0, "1.0")
        _range("auto.threads", self.threads, 0, 1024, "0 (current) or 1")
        _range("auto.runs", self.runs, 1, 10_000, "20")


@dataclass(frozen=True)
class SpeedOptions(Options):
    """Whole-model speed check: int8 against fp32 at the thread counts the model will run at."""

    section: ClassVar[str] = "speed"
    threads: tuple[int, ...] = option((1,), "thread counts the model will run at (speed guard and speed check)")
    check: bool = option(True, "time fp32 against the saved int8 model after convert, and fix what is slow")
    min_speedup: float = option(1.0, "the int8 model must be at least this many times faster than fp32")
    rounds: int = option(3, "at most this many fix / move-to-fp32 / re-time rounds when int8 is too slow")
    runs: int = option(30, "timed runs per model and thread count (fewer when a run takes long)")

    def validate(self) -> None:
        if not self.threads:
            raise ConfigError("speed.threads is empty", "give at least one thread count, e.g. 1")
        for t in self.threads:
            _range("speed.threads", t, 1, 1024, "1 or 1,2")
        if len(set(self.threads)) != len(self.threads):
            raise ConfigError(f"speed.threads {list(self.threads)} repeats a thread count", "list each count once")
        _range("speed.min_speedup", self.min_speedup, 0.0, 1000.0, "1.0 (faster than fp32) or 1.5")
        _range("speed.rounds", self.rounds, 0, 20, "3")
        _range("speed.runs", self.runs, 3, 10_000, "30")


@dataclass(frozen=True)
class CalibrationOptions(Options):
    """Model inputs drawn from a folder, tensor file or text file (the CLI; the API takes batches as given)."""

    section: ClassVar[str] = "calibration"
    num: int = option(300, "samples to calibrate on (a seeded random subset)")
    batch_size: int = option(32, "calibration batch size")
    tokenizer: str = option("", "local Hugging Face tokenizer folder that turns a .txt file's lines into inputs")
    max_length: int = option(128, "tokens per sentence at most (with tokenizer)")

    def validate(self) -> None:
        _range("calibration.num", self.num, 1, 10**9, "300")
        _range("calibration.batch_size", self.batch_size, 1, 10**6, "32")
        _range("calibration.max_length", self.max_length, 1, 10**6, "128")


@dataclass(frozen=True)
class DynamicOptions(Options):
    """``mode: dynamic``: int8 weights, activation ranges measured at run time."""

    section: ClassVar[str] = "dynamic"
    min_cosine: float = option(0.99, "keep layers fp32 until the mean output cosine reaches this (0: off)")
    full_range: bool = option(True, "8-bit (not 7-bit) activations for dynamic Linear layers")

    def validate(self) -> None:
        _range("dynamic.min_cosine", self.min_cosine, 0.0, 1.0, "0.99")


@dataclass(frozen=True)
class QatOptions(Options):
    """``mode: qat``: fine-tune with fake quantization, then convert."""

    section: ClassVar[str] = "qat"
    epochs: int = option(1, "fine-tuning epochs")
    lr: float = option(1e-4, "SGD learning rate (momentum 0.9, cosine decay to 0)")
    batch_size: int = option(32, "training batch size (folders of labelled images)")
    freeze_bn_at: float = option(0.3, "fraction of the steps after which BatchNorm statistics freeze")
    freeze_observers_at: float = option(0.6, "fraction of the steps after which quantization ranges freeze")
    calibration_batches: int = option(8, "batches that set the ranges before training (0: none)")
    max_steps: int = option(0, "stop after this many steps (0: no limit)")

    def validate(self) -> None:
        _range("qat.epochs", self.epochs, 1, 10_000, "1")
        if self.lr <= 0:
            raise ConfigError(f"qat.lr {self.lr:g} must be positive", "use e.g. 1e-4")
        _range("qat.batch_size", self.batch_size, 1, 10**6, "32")
        _range("qat.freeze_bn_at", self.freeze_bn_at, 0.0, 1.0, "0.3")
        _range("qat.freeze_observers_at", self.freeze_observers_at, 0.0, 1.0, "0.6")
        _range("qat.calibration_batches", self.calibration_batches, 0, 10**6, "8")
        _range("qat.max_steps", self.max_steps, 0, 10**9, "0")


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


SECTIONS: dict[str, type[Options]] = {
    c.section: c
    for c in (
        FxOptions,
        OnnxOptions,
        OpenVinoOptions,
        Pt2eOptions,
        AutoOptions,
        SpeedOptions,
        CalibrationOptions,
        DynamicOptions,
        QatOptions,
    )
}


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize. Defaults are the ones ptsq recommends; every field is validated."""

    engine: str = field(  # fx while torch.ao.quantization is here, pt2e once it is gone (ptsq.legacy)
        default_factory=default_engine,
        metadata={"help": "fx | pt2e | onnx | openvino | auto (try all, keep the fastest faithful one)", "shown": "fx"},
    )
    mode: Literal["static", "dynamic", "qat"] = option("static", "static PTQ, dynamic int8, or QAT fine-tuning")
    backend: Literal["auto", "x86", "fbgemm", "onednn", "qnnpack"] = option("auto", "quantized CPU kernels")
    per_channel: bool = option(True, "per-channel weights (False: per-tensor)")
    skip: tuple[SkipRule, ...] = option((), "layers kept fp32: name:PREFIX, regex:RE, type:CLASS")
    strict: bool = option(False, "fail on untraceable submodules instead of keeping them fp32")
    check_samples: int = option(
        0, "samples held back from calibration for the self-check (0: 32 or an eighth, at most a quarter of the data)"
    )
    check_output: Literal["auto", "scores", "probabilities", "values"] = option(
        "auto", "what the output is, for the self-check's metrics (docs/accuracy.md); auto: from its values"
    )
    warn_sqnr_db: float = option(15.0, "self-check: warn below this output SQNR (dB); outputs other than class scores")
    warn_agreement: float = option(
        0.9, "self-check: warn below this agreement (class scores: top-1 apart from near-ties; probabilities: at 0.5)"
    )
    freeze: bool = option(True, "freeze the TorchScript artifact (constants folded)")
    speed_guard: float = option(1.5, "keep a layer fp32 if its int8 kernel is this many times slower (0: off)")
    cleanup: tuple[str, ...] = option(CLEANUP_STEPS, "graph clean-up steps (docs/accuracy.md)")
    seed: int = option(0, "seed for calibration subsets and any randomness")
    fx: FxOptions = option(FxOptions(), "FX engine options")
    onnx: OnnxOptions = option(OnnxOptions(), "ONNX Runtime engine options")
    openvino: OpenVinoOptions = option(OpenVinoOptions(), "OpenVINO engine options")
    pt2e: Pt2eOptions = option(Pt2eOptions(), "PT2E engine options")
    auto: AutoOptions = option(AutoOptions(), "engine selection options")
    speed: SpeedOptions = option(SpeedOptions(), "whole-model speed check")
    calibration: CalibrationOptions = option(CalibrationOptions(), "calibration sampling")
    dynamic: DynamicOptions = option(DynamicOptions(), "dynamic mode options")
    qat: QatOptions = option(QatOptions(), "QAT options")

    def __post_init__(self) -> None:
        rules = self.skip
        _check_fields(self, "")
        if self.engine not in known_engines() and self.engine != "auto":
            raise ConfigError(
                f"engine {self.engine!r} is unknown", f"choose one of: {', '.join(known_engines())}, auto"
            )
        if not 0 <= self.check_samples <= 10**6:
            raise ConfigError(
                f"check_samples {self.check_samples!r} must be an integer in [0, 1000000]", "use e.g. 32 (0: auto)"
            )
        unknown = [c for c in self.cleanup if c not in CLEANUP_STEPS]
        if unknown:
            raise ConfigError(f"unknown clean-up step(s) {unknown}", f"choose from: {', '.join(CLEANUP_STEPS)}")
        if self.speed_guard < 0:
            raise ConfigError(f"speed_guard {self.speed_guard:g} is negative", "use e.g. 1.5, or 0 to turn it off")
        object.__setattr__(self, "skip", tuple(r if isinstance(r, SkipRule) else SkipRule.parse(str(r)) for r in rules))

    def replace(self, **changes: Any) -> QuantConfig:
        """A copy with ``changes``; dotted keys (``"onnx.format"``) change one option of a section."""
        top: dict[str, Any] = {}
        for key, value in changes.items():
            section, dot, name = key.partition(".")
            if dot:
                if section not in SECTIONS:
                    raise ConfigError(f"unknown option section {section!r}", _closest(section, list(SECTIONS)))
                current = top.get(section, getattr(self, section))
                top[section] = SECTIONS[section].from_dict({**current.to_dict(), name: value}, section)
            else:
                top[key] = value
        valid = [f.name for f in fields(self)]
        unknown = [k for k in top if k not in valid]
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}", _closest(unknown[0], valid))
        return dataclasses.replace(self, **top)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "QuantConfig", "version": CONFIG_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Options):
                d[f.name] = value.to_dict()
                for k, v in d[f.name].items():
                    if isinstance(v, tuple):
                        d[f.name][k] = list(v)
            elif f.name == "skip":
                d[f.name] = [str(r) for r in value]
            else:
                d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

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
        if version < 2:
            d = _from_v1(d)
        if version < 3:
            d = _from_v2(d)
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in d if k not in valid]
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}", _closest(str(unknown[0]), valid))
        if isinstance(d.get("skip"), (list, tuple)):  # anything else fails the type check with a clear message
            d["skip"] = tuple(SkipRule.parse(s) if isinstance(s, str) else s for s in d["skip"])
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> QuantConfig:
        """A recipe file: QuantConfig's dictionary form as JSON (``.json``) or YAML (anything else)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the --config recipe '{p}': {exc.strerror or exc}", "check the path"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"recipe '{p}' is not UTF-8 text", "save it as UTF-8 YAML or JSON") from None
        return cls.from_dict(parse_recipe(text, p))


def parse_recipe(text: str, path: Path) -> dict[str, Any]:
    """The dictionary in a JSON or YAML recipe file; one clear error for a malformed one."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"recipe '{path}' is not valid JSON ({exc.msg}, line {exc.lineno})", "fix the file"
            ) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"recipe '{path}' is not valid YAML{where}", "fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe '{path}' holds a {type(data).__name__}, not a mapping", "write key: value pairs")
    return data


_V1_EXTRA = {  # version-1 ``extra`` keys -> (section, option)
    **{
        f"onnx_{k}": ("onnx", k)
        for k in ("format", "calibration", "activations", "exporter", "weights", "reduce_range", "saturation")
    },
    **{
        f"openvino_{k}": ("openvino", k)
        for k in ("preset", "bias_correction", "model_type", "overflow_fix", "depthwise")
    },
    "pt2e_compile": ("pt2e", "compile"),
    "pt2e_reduce_range": ("pt2e", "reduce_range"),
    **{f"auto_{k}": ("auto", k) for k in ("engines", "margin_db", "threads", "runs")},
}


def _from_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Read the version-1 layout (engine options in a free ``extra`` dict) that older artifacts record."""
    sections: dict[str, dict[str, Any]] = {}
    for key in ("observer", "probe_kernels"):
        if key in d:
            sections.setdefault("fx", {})[key] = d.pop(key)
    for key, value in (d.pop("extra", None) or {}).items():
        if key not in _V1_EXTRA:
            raise ConfigError(f"unknown engine option {key!r} in a version-1 config", _closest(key, sorted(_V1_EXTRA)))
        section, name = _V1_EXTRA[key]
        sections.setdefault(section, {})[name] = 0 if value is None and name == "threads" else value
    return {**d, **sections}


def _from_v2(d: dict[str, Any]) -> dict[str, Any]:
    """Version 2 held back whole batches (``check_batches``); version 3 holds back samples."""
    d = dict(d)
    batches = d.pop("check_batches", None)
    if isinstance(batches, int) and not isinstance(batches, bool) and batches not in (0, 2):  # 2 was the default
        size = (d.get("calibration") or {}).get("batch_size", 32)
        d["check_samples"] = batches * (size if isinstance(size, int) else 32)
    return d


def options_table() -> str:
    """The Markdown table of every option (docs/options.md is this text; a test keeps them equal)."""
    lines = [
        "# Options",
        "",
        "Generated from `ptsq/config.py` by `python -m ptsq.config > docs/options.md`; a test fails when it is stale.",
        "Recipe files (`ptsq quantize --config recipe.yaml`) use these keys; `ptsq quantize ... --save-config FILE`",
        "writes one, and `ptsq info --recipe ARTIFACT` prints the one an artifact was made with.",
        "",
        "| key | type | default | what |",
        "|---|---|---|---|",
    ]

    def rows(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            hint = hints[f.name]
            if isinstance(hint, type) and issubclass(hint, Options):
                continue
            if typing.get_origin(hint) is Literal:
                kind = " \\| ".join(str(a) for a in typing.get_args(hint))
            elif typing.get_origin(hint) is tuple:
                kind = "list"
            else:
                kind = getattr(hint, "__name__", str(hint))
            default = f.metadata.get("shown", f.default)  # a default_factory's value depends on the machine
            shown = json.dumps(list(default) if isinstance(default, tuple) else default)
            what = f.metadata.get("help", "").replace("|", "\\|")
            lines.append(f"| `{prefix}{f.name}` | {kind} | `{shown}` | {what} |")

    rows(QuantConfig, "")
    for name, cls in SECTIONS.items():
        lines.append(f"| **{name}:** | | | {cls.__doc__.strip().splitlines()[0]} |")
        rows(cls, f"{name}.")
    return "\n".join(lines) + "\n"


__all__ = [
    "BACKENDS",
    "BUILTIN_ENGINES",
    "CLEANUP_STEPS",
    "CONFIG_VERSION",
    "MODES",
    "OBSERVER_NAMES",
    "OUTPUT_KINDS",
    "SECTIONS",
    "AutoOptions",
    "CalibrationOptions",
    "DynamicOptions",
    "FxOptions",
    "OnnxOptions",
    "OpenVinoOptions",
    "Options",
    "Pt2eOptions",
    "QatOptions",
    "QuantConfig",
    "SkipRule",
    "SpeedOptions",
    "known_engines",
    "options_table",
]

if __name__ == "__main__":
    print(options_table(), end="")

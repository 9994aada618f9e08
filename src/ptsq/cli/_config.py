"""From command-line flags (and a recipe file) to one QuantConfig, and back to a recipe file.

A recipe file (``--config recipe.yaml`` or ``.json``) is QuantConfig's dictionary form. A flag given on
the command line overrides the file even when it equals its default; a flag left out leaves the file's
value. Skip rules add up: the file's first, then the command line's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from ptsq.config import CLEANUP_STEPS, QuantConfig
from ptsq.errors import ConfigError
from ptsq.legacy import default_engine

ConfigOpt = Annotated[
    str | None, typer.Option("--config", help="Recipe file (YAML or JSON, QuantConfig's keys); flags given win.")
]
SaveConfigOpt = Annotated[
    str | None, typer.Option("--save-config", help="Write the recipe of this run (YAML, or JSON for .json).")
]
ObserverOpt = Annotated[
    str | None,
    typer.Option(
        "--observer", help="Activation ranges: minmax | moving-average | histogram | mse | percentile | entropy."
    ),
]
CleanupOpt = Annotated[
    str | None,
    typer.Option("--cleanup", help="Comma-separated clean-up steps to run (replaces the default list); 'none' = off."),
]
NoCleanupOpt = Annotated[
    list[str] | None, typer.Option("--no-cleanup", help="Turn one clean-up step off (repeatable), e.g. equalize.")
]


def _steps(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip() and s.strip() != "none")


def _threads(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(p) for p in str(text).replace(" ", "").split(",") if p)
    except ValueError:
        raise ConfigError(
            f"--threads {text!r} is not a list of integers", "e.g. --threads 1 or --threads 1,2"
        ) from None
    if not vals or any(v < 1 for v in vals):
        raise ConfigError(f"--threads {text!r} must list thread counts of at least 1", "e.g. --threads 1")
    return vals


# command-line parameter -> (config key, conversion of the flag's value)
FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "engine": ("engine", str),
    "mode": ("mode", str),
    "backend": ("backend", str),
    "per_tensor": ("per_channel", lambda v: not v),
    "strict": ("strict", bool),
    "seed": ("seed", int),
    "speed_guard": ("speed_guard", float),
    "threads": ("speed.threads", _threads),
    "min_speedup": ("speed.min_speedup", float),
    "no_speed_check": ("speed.check", lambda v: not v),
    "check_samples": ("check_samples", int),
    "observer": ("fx.observer", str),
    "cleanup": ("cleanup", _steps),
    "num_calib": ("calibration.num", int),
    "batch_size": ("calibration.batch_size", int),
    "tokenizer": ("calibration.tokenizer", str),
    "max_length": ("calibration.max_length", int),
    "epochs": ("qat.epochs", int),
    "lr": ("qat.lr", float),
    "min_cosine": ("dynamic.min_cosine", float),
}


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def build_config(ctx: typer.Context, params: Mapping[str, Any]) -> QuantConfig:
    """The recipe file (``params["config_file"]``) or the defaults, then every flag given on the command line."""
    path = params.get("config_file")
    base = QuantConfig.from_file(path) if path else QuantConfig()
    changes: dict[str, Any] = {}
    for name, (key, convert) in FLAGS.items():
        if name in params and _given(ctx, name) and params[name] is not None:
            changes[key] = convert(params[name])
    if "calibration.batch_size" in changes:  # one --batch-size for calibration and training
        changes["qat.batch_size"] = changes["calibration.batch_size"]
    if params.get("skip"):
        changes["skip"] = tuple(str(r) for r in base.skip) + tuple(params["skip"])
    config = base.replace(**changes)
    if params.get("no_cleanup"):
        unknown = [s for s in params["no_cleanup"] if s not in CLEANUP_STEPS]
        if unknown:
            raise ConfigError(f"unknown clean-up step(s) {unknown}", f"choose from: {', '.join(CLEANUP_STEPS)}")
        config = config.replace(cleanup=tuple(s for s in config.cleanup if s not in params["no_cleanup"]))
    if not ("engine" in changes or (path and _recipe_names_engine(path))) and config.engine != default_engine(
        config.mode
    ):
        config = config.replace(engine=default_engine(config.mode))  # without torch.ao: onnx for dynamic mode
    return config


def _recipe_names_engine(path: str) -> bool:
    """Whether the recipe file itself sets ``engine`` (its dictionary form always has one once loaded)."""
    import json

    text = Path(path).read_text()
    try:
        import yaml

        data = yaml.safe_load(text) if not path.endswith(".json") else json.loads(text)
    except Exception:  # the recipe was already parsed once by from_file: unreadable here means no
        return False
    return isinstance(data, dict) and "engine" in data


def save_config(config: QuantConfig, path: str, force: bool = True) -> Path:
    """Write ``config`` as a recipe file, atomically (JSON for ``.json``, else YAML)."""
    from ptsq.artifact import write

    target = Path(path)
    text = config.to_json() if target.suffix.lower() == ".json" else config.to_yaml()
    write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), force=force)
    return target


__all__ = ["FLAGS", "build_config", "save_config"]

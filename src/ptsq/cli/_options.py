"""Options shared by several commands, defined once."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from ptsq.data.preprocess import (
    CHANNEL_ORDERS,
    Preprocess,
    parse_floats,
    parse_input_sizes,
    parse_number,
    preset,
)
from ptsq.data.spec import Chosen, choose
from ptsq.errors import ConfigError


def checked(check: Callable[[str], Any]) -> Callable[[str], str]:
    """A parser that checks a value while the command line is parsed, so a malformed value fails before any
    work (and a test can check help examples without running them); the text passes on unchanged."""

    def parse(text: str) -> str:
        check(text)
        return text

    return parse


def _channels(text: str) -> None:
    if text.lower() not in CHANNEL_ORDERS:
        raise ConfigError(f"--channels {text!r} is unknown", f"use one of: {', '.join(CHANNEL_ORDERS)}")


F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout; no progress bars.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but warnings and errors.")]
WeightsOpt = Annotated[
    str | None, typer.Option("--weights", "-w", help="state_dict file for MODEL (read with weights_only=True).")
]
TrustOpt = Annotated[
    bool,
    typer.Option("--trust-pickle", help="Allow unpickling full Python objects. Only for files you trust: runs code."),
]
InputSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-size",
        help="HxW or one number, e.g. 224 or 240x320; bench: one per input, 3x224x224,3x112x112.",
        parser=checked(parse_input_sizes),
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option("--preset", help="imagenet | minus1to1 | unit | effnet-lite | mtcnn | mnist", parser=checked(preset)),
]
MeanOpt = Annotated[
    str | None,
    typer.Option(
        "--mean",
        help="Per-channel mean after scaling, e.g. 0.485,0.456,0.406",
        parser=checked(lambda t: parse_floats(t, "mean")),
    ),
]
StdOpt = Annotated[
    str | None,
    typer.Option(
        "--std",
        help="Per-channel std after scaling, e.g. 0.229,0.224,0.225",
        parser=checked(lambda t: parse_floats(t, "std")),
    ),
]
ScaleOpt = Annotated[
    float | None,
    typer.Option(
        "--scale",
        metavar="NUMBER",
        help="Multiply pixels (0..255) by this first, e.g. 1/255 or 0.0039.",
        parser=lambda t: parse_number(t, "scale"),
    ),
]
ChannelsOpt = Annotated[str | None, typer.Option("--channels", help="rgb | bgr | gray", parser=checked(_channels))]
NumCalibOpt = Annotated[int, typer.Option("--num-calib", help="Images to calibrate on (seeded subset).")]
CalibBatchOpt = Annotated[int, typer.Option("--batch-size", help="Calibration batch size.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for the calibration subset.")]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray", help="Run on Ray: 'auto' starts a local instance, HOST:PORT joins a cluster (needs ptsq[ray])."
    ),
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="With --ray: at most this many workers at once (default: every CPU).")
]
CropOpt = Annotated[float | None, typer.Option("--crop-pct", help="Centre-crop fraction (1 = resize only).")]


PREPROCESS_OPTIONS: dict[str, Any] = {
    "input_size": InputSizeOpt,
    "preset_name": PresetOpt,
    "mean": MeanOpt,
    "std": StdOpt,
    "scale": ScaleOpt,
    "channels": ChannelsOpt,
    "crop_pct": CropOpt,
}


def with_preprocess_options(fn: F) -> F:
    """Give a command the preprocessing options, defined once here; they reach it in its ``**pre``."""
    sig = inspect.signature(fn, eval_str=True)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
             for n, a in PREPROCESS_OPTIONS.items()]  # fmt: skip
    fn.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
    fn.__annotations__.update(PREPROCESS_OPTIONS)
    return fn


def chosen_preprocess(
    default: Preprocess | None,
    params: Mapping[str, Any],
    *,
    source: str | None = None,
    needed: bool = True,
    size_only: bool = False,
) -> Chosen:
    """The model's input spec (``default``, from ``source``) overridden by the command's flags; never a silent
    default: with no spec, ``needed`` (the command decodes images) makes missing flags an error."""
    return choose(default, source, params, needed=needed, size_only=size_only)


def preprocess_from(default: Preprocess | None, params: Mapping[str, Any], *, source: str | None = None) -> Preprocess:
    """:func:`chosen_preprocess` for commands that always decode images."""
    pre = chosen_preprocess(default, params, source=source, needed=True).preprocess
    assert pre is not None  # needed=True raises instead
    return pre


ReportOpt = Annotated[
    str | None,
    typer.Option(
        "--report", help="Also write a report of these results: one self-contained HTML file (.md: Markdown)."
    ),
]

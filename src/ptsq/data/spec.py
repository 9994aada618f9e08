"""The input spec a model carries, and the preprocessing a command line asks for: never a silent default.

Where a model's preprocessing comes from, first match wins:

1. its own ``input_spec`` attribute: a :class:`~ptsq.data.preprocess.Preprocess` or its dictionary
   (``size``, ``scale``, ``mean``, ``std``, ``crop_pct``, ``channels``; e.g. ``{"size": [240, 240],
   "scale": 1.0, "mean": [127.0], "std": [128.0], "crop_pct": 1.0}``) — the convention for your own models;
2. timm's ``pretrained_cfg`` (or the older ``default_cfg``): ``input_size`` (C, H, W), ``mean``/``std`` on
   0-1 pixels, ``crop_pct``;
3. torchvision's weight metadata (read by ``ptsq.models`` without downloading anything).

Without one, a command that decodes images needs ``--preset`` (with ``--input-size`` unless the preset has
one) or all of ``--mean``, ``--std``, ``--scale`` and ``--input-size``; otherwise it stops with one line
naming them. ``--preset`` and ``--mean/--std/--scale`` together are a conflict (two normalisations).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ptsq.data.preprocess import PRESETS, Preprocess, parse_floats, parse_size, preset
from ptsq.errors import ConfigError

FLAGS_HINT = (
    "pass --preset NAME (" + ", ".join(PRESETS) + ") with --input-size, or --mean, --std, --scale and --input-size"
)


def from_model(model: Any) -> tuple[Preprocess | None, str | None]:
    """The preprocessing ``model`` declares (its ``input_spec``, timm's ``pretrained_cfg``), and where from."""
    own = getattr(model, "input_spec", None)
    if isinstance(own, Preprocess):
        return own, "the model's input_spec"
    if isinstance(own, Mapping):
        try:
            return Preprocess.from_dict(dict(own)), "the model's input_spec"
        except ConfigError as exc:
            raise ConfigError(f"the model's input_spec is invalid: {exc.message}", exc.hint) from None
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, Mapping) and cfg.get("input_size") and cfg.get("mean") and cfg.get("std"):
            pre = _from_timm(cfg)
            if pre is not None:
                return pre, f"timm {attr}"
    return None, None


def _from_timm(cfg: Mapping[str, Any]) -> Preprocess | None:
    try:
        c, h, w = (int(v) for v in cfg["input_size"])
        return Preprocess(
            size=(h, w),
            crop_pct=float(cfg.get("crop_pct") or 1.0),
            scale=1 / 255,
            mean=tuple(float(m) for m in cfg["mean"]),
            std=tuple(float(s) for s in cfg["std"]),
            channels="gray" if c == 1 else "rgb",
        )
    except (TypeError, ValueError, ConfigError):
        return None


@dataclass(frozen=True)
class Chosen:
    """The preprocessing a command uses, and where it came from (printed in every quantize summary)."""

    preprocess: Preprocess | None
    source: str  # "the model's input_spec", "--preset effnet-lite", "--mean/--std/--scale", ...

    def describe(self) -> str:
        p = self.preprocess
        if p is None:
            return f"none ({self.source})"
        name = f"{p.preset}: " if p.preset else ""
        mean = ",".join(f"{m:g}" for m in p.mean)
        std = ",".join(f"{s:g}" for s in p.std)
        return (f"{name}{p.channels} {p.size[0]}x{p.size[1]}, crop {p.crop_pct:g}, (x·{p.scale:.6g} − {mean}) / {std}"
                f" — from {self.source}")  # fmt: skip


def choose(
    model_default: Preprocess | None,
    default_source: str | None,
    params: Mapping[str, Any],
    *,
    needed: bool,
    size_only: bool = False,
) -> Chosen:
    """The preprocessing from the model's spec and the command-line flags in ``params``.

    Flags override the model's spec (``--preset`` its normalisation, ``--input-size`` its size). With no
    spec, ``needed`` decides: a command that decodes images fails with one line naming the flags; one that
    does not (a tensor file) gets None. ``size_only``: only an input size is needed (random example inputs).
    """
    name, size = params.get("preset_name"), params.get("input_size")
    mean, std, scale = params.get("mean"), params.get("std"), params.get("scale")
    channels, crop = params.get("channels"), params.get("crop_pct")
    overrides = dict(
        size=parse_size(size) if size else None,
        mean=parse_floats(mean, "mean") if mean else None,
        std=parse_floats(std, "std") if std else None,
        scale=scale,
        channels=channels.lower() if channels else None,
        crop_pct=crop,
    )
    if name and name.lower() not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}", f"choose one of: {', '.join(PRESETS)}")
    norm = [f for f, v in (("--mean", mean), ("--std", std), ("--scale", scale)) if v is not None]
    if name and norm:
        raise ConfigError(
            f"--preset {name} and {'/'.join(norm)} both set the normalisation",
            "give --preset alone, or --mean, --std and --scale without it",
        )
    flags = [f for f, v in (("--preset " + str(name), name), ("--input-size", size), *((f, 1) for f in norm)) if v]
    if model_default is not None:
        base = model_default
        if name:
            base = preset(name, size=model_default.size if "size" not in PRESETS[name.lower()] else None)
        source = default_source or "the model"
        return Chosen(base.with_overrides(**overrides), source + (f", then {', '.join(flags)}" if flags else ""))
    if name:
        if not size and "size" not in PRESETS[name.lower()]:
            if needed:
                raise ConfigError(
                    f"--preset {name} has no input size and the model carries no input spec: --input-size is missing",
                    "add --input-size, e.g. --input-size 224",
                )
            return Chosen(None, f"--preset {name} without --input-size (the inputs are tensors)")
        return Chosen(preset(name).with_overrides(**overrides), ", ".join(flags))
    if size_only and size and not norm:
        sized = Preprocess(size=overrides["size"], crop_pct=1.0, scale=1.0, mean=(0.0,), std=(1.0,),
                           channels=overrides["channels"] or "rgb")  # fmt: skip
        return Chosen(sized, "--input-size (random inputs of that size)")
    if norm or size:
        given = (("--mean", mean), ("--std", std), ("--scale", scale), ("--input-size", size))
        missing = [f for f, v in given if v is None]
        if missing:
            if not needed and not norm:
                return Chosen(None, "no preprocessing: the inputs are tensors")
            raise ConfigError(
                f"the model carries no input spec and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                "missing",
                f"give {', '.join(missing)} too, or a --preset",
            )
        # an explicit spec resizes without cropping unless --crop-pct says otherwise: no hidden ImageNet crop
        base = Preprocess(size=overrides["size"], mean=overrides["mean"], std=overrides["std"], scale=float(scale),
                          crop_pct=1.0)  # fmt: skip
        return Chosen(base.with_overrides(channels=overrides["channels"], crop_pct=crop), ", ".join(flags))
    if needed and size_only:  # random example inputs: only their shape is missing, and it may not be an image's
        raise ConfigError(
            "the model has no example_inputs() and no inputs were given to take an example from",
            "pass --calib inputs.pt (torch.save of its input tensors), --calib sentences.txt --tokenizer DIR for "
            "text, --input-size for an image model, or give the model an example_inputs() method",
        )
    if needed:
        raise ConfigError("the model carries no input spec (size, mean/std) and no preprocessing was given", FLAGS_HINT)
    return Chosen(None, "no preprocessing: the inputs are tensors")


__all__ = ["FLAGS_HINT", "Chosen", "choose", "from_model"]

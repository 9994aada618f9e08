"""The dynamic and QAT branches of ``ptsq quantize`` (the static branch lives in quantize.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ptsq.data.preprocess import Preprocess
from ptsq.errors import ConfigError


def example_for(model: nn.Module, pre: Preprocess) -> tuple[Any, ...]:
    """The model's own ``example_inputs()`` if it has one, else one image-shaped input from ``pre``."""
    fn = getattr(model, "example_inputs", None)
    if callable(fn):
        ex = fn()
        return tuple(ex) if isinstance(ex, (tuple, list)) else (ex,)
    channels = 1 if pre.channels == "gray" else 3
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, channels, *pre.size, generator=g),)


def run_dynamic(
    model: nn.Module, pre: Preprocess, config: Any, calib: str | None, num_calib: int, batch_size: int,
    seed: int, max_images: int, min_cosine: float | None,
) -> Any:  # fmt: skip
    from ptsq.modes.dynamic import quantize_dynamic

    example = example_for(model, pre)
    checks: list[tuple[Any, ...]] | None = None
    source: dict[str, Any] = {}
    if calib:
        from ptsq.data.images import CalibrationImages

        images = CalibrationImages(
            calib, pre, num=min(num_calib, 64), batch_size=batch_size, seed=seed, max_images=max_images
        )
        checks = [(b,) for b in images]
        source = {"check_source": str(calib)}
    elif hasattr(model, "example_inputs"):
        g = torch.Generator().manual_seed(seed)
        checks = [example] + [
            tuple(torch.randn(a.shape, generator=g) if a.is_floating_point() else a for a in example) for _ in range(3)
        ]
    return quantize_dynamic(
        model, example_inputs=example, config=config, check_inputs=checks, min_cosine=min_cosine, source=source
    )


def run_qat(
    model: nn.Module, pre: Preprocess, config: Any, train_data: str | None, epochs: int, lr: float,
    batch_size: int, seed: int, max_images: int, progress: bool,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    import ptsq.qat
    from ptsq.modes.finetune import LabelledFolder, check_classes, finetune

    if not train_data:
        raise ConfigError(
            "--mode qat needs labelled training data (or a training function)",
            "pass --train-data DIR with one sub-folder per class, or call ptsq.qat.prepare/convert "
            "from Python with your own training loop",
        )
    data = LabelledFolder(train_data, pre, max_images=max_images)
    example = example_for(model, pre)
    check_classes(model, example, data.classes, f"--train-data '{train_data}'")
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, generator=g, drop_last=False)
    prepared = ptsq.qat.prepare(model, example, backend=config.backend, config=config)
    history = finetune(prepared, loader, epochs=epochs, lr=lr, progress=progress)
    checks = [(x,) for x, _ in list(torch.utils.data.DataLoader(data, batch_size=batch_size))[:2]]
    qm = ptsq.qat.convert(prepared, check_inputs=checks, source={"train_source": str(train_data)})
    qm.manifest["training"] = {**history, "classes": data.classes, "images": len(data)}
    return qm, qm.manifest["training"]


def advice_for(model: nn.Module, pre: Preprocess, mode: str) -> str | None:
    from ptsq.modes.advice import advise

    try:
        example = example_for(model, pre)
    except Exception:  # advice is best effort
        return None
    return advise(model, example, mode)


def run(mode: str, model: nn.Module, pre: Preprocess, config: Any, out: Any, **kw: Any) -> Any:
    """Quantize ``model`` in ``mode`` (dynamic or qat) for ``ptsq quantize``."""
    allowed = ("fx", "onnx", "auto") if mode == "dynamic" else ("fx", "auto")
    if config.engine not in allowed:
        raise ConfigError(
            f"--mode {mode} runs on the {' or '.join(allowed[:-1])} engine, not {config.engine!r}",
            f"drop --engine (or use --engine {' / '.join(allowed)})",
        )
    if mode == "dynamic":
        return run_dynamic(
            model, pre, config, kw["calib"], kw["num_calib"], kw["batch_size"], kw["seed"], kw["max_images"],
            kw["min_cosine"] or None,
        )  # fmt: skip
    qm, _ = run_qat(
        model, pre, config, kw["train_data"], kw["epochs"], kw["lr"], kw["batch_size"], kw["seed"],
        kw["max_images"], out.progress,
    )  # fmt: skip
    return qm

"""The front door: ``quantize(model, data, config)`` dispatches on ``config.mode``; ``load`` reads an artifact.

- ``static`` (:mod:`ptsq.modes.static`): ``data`` is calibration batches;
- ``dynamic`` (:mod:`ptsq.modes.dynamic`): ``data`` is input batches to check int8 against fp32 on (optional);
- ``qat`` (:mod:`ptsq.modes.qat`): ``data`` is labelled training batches ``(inputs, labels)``.

``config.engine == "auto"`` quantizes with every engine that fits the mode and keeps the fastest faithful
one (:mod:`ptsq.select`); every engine sees the same batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ptsq import select
from ptsq.calibration import as_args, example_from_batch
from ptsq.config import QuantConfig
from ptsq.data.preprocess import Preprocess
from ptsq.errors import ConfigError, DataError, QuantizationWarning
from ptsq.modes.dynamic import DYNAMIC_ENGINES
from ptsq.quantized import QuantizedModel, load


def _check_model(model: Any) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(
            "a TorchScript module cannot be re-captured for quantization", "pass the original Python nn.Module"
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model is a {type(model).__name__}, not a torch.nn.Module", "pass an nn.Module")


def _run_mode(
    model: nn.Module,
    data: Any,
    config: QuantConfig,
    *,
    example_inputs: Any,
    progress: bool,
    transform: Callable[[Any], Any] | None,
    preprocess: Preprocess | None,
    source: dict[str, Any] | None,
    labelled: bool | None = None,
) -> QuantizedModel:
    if config.mode == "dynamic":
        from ptsq.modes.dynamic import quantize_dynamic

        batches = None if data is None else [transform(b) if transform else b for b in data]
        return quantize_dynamic(model, batches, config, example_inputs=example_inputs, source=source, labelled=labelled)
    if config.mode == "qat":
        from ptsq.modes.qat import quantize_qat

        if config.engine not in ("fx", "pt2e"):
            raise ConfigError(
                f"QAT runs on the fx or pt2e engine, not {config.engine!r}", "drop --engine (or use --engine fx / pt2e)"
            )
        return quantize_qat(model, data, config, example_inputs=example_inputs, progress=progress, source=source)
    from ptsq.modes.static import quantize_static

    if data is None:
        raise DataError("static quantization needs calibration data", "pass batches of inputs (CLI: --calib)")
    return quantize_static(
        model, data, config, example_inputs=example_inputs, progress=progress, transform=transform,
        preprocess=preprocess, source=source, labelled=labelled,
    )  # fmt: skip


def quantize(
    model: nn.Module,
    data: Iterable[Any] | None = None,
    config: QuantConfig | None = None,
    *,
    example_inputs: Any = None,
    progress: bool = True,
    transform: Callable[[Any], Any] | None = None,
    preprocess: Preprocess | None = None,
    source: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    labelled: bool | None = None,
    ray: Any = None,
    workers: int | None = None,
) -> QuantizedModel:
    """Quantize ``model`` to int8 as ``config`` says (default: static PTQ on the FX engine), checked against fp32.

    ``data`` is any iterable of batches: tensors, tuples of tensors, a DataLoader's ``(inputs, labels)``,
    or dicts of named inputs; ``transform`` maps a batch to model inputs. Batches are taken as given: a
    pair is ``(inputs, labels)`` only when ``forward`` takes one input or ``labelled=True``. In static mode
    the last batches are held back for the self-check (``summary()["check"]``). The input model is never
    modified.
    ``log`` receives one-line progress notes (e.g. which engine ``auto`` is trying).
    ``ray`` (``"auto"``, a cluster address or a Cluster): with ``engine="auto"``, every engine quantizes in its
    own Ray worker (``workers`` at once); the driver then times the results interleaved, as without.
    """
    _check_model(model)
    config = config or QuantConfig()
    if ray is not None and config.engine != "auto":
        raise ConfigError(
            "ray= runs the engine trials of engine='auto' in parallel; one engine has nothing to spread",
            "use --engine auto with --ray, or drop --ray",
        )
    kw = dict(example_inputs=example_inputs, progress=progress, transform=transform, preprocess=preprocess,
              source=source, labelled=labelled)  # fmt: skip
    if config.engine != "auto":
        return _run_mode(model, data, config, **kw)
    if config.mode == "qat":
        raise ConfigError("QAT runs on one engine at a time", "drop --engine auto (or use --engine fx / pt2e)")
    if isinstance(data, (torch.Tensor, str, bytes)):
        raise DataError(
            f"calibration data must be an iterable of batches, not a single {type(data).__name__}",
            "pass a list of tensors, a DataLoader, or ptsq.data.CalibrationImages(folder, preprocess)",
        )
    # every engine sees the same batches (so every self-check runs on the same held-back data)
    batches = None if data is None else [as_args(transform(b) if transform else b, model, labelled) for b in data]
    if batches is not None and not batches:
        raise DataError("the calibration data is empty", "give at least one batch of inputs")
    kw["transform"], kw["labelled"] = None, False  # labels are gone from these batches
    dynamic = config.mode == "dynamic"
    names = select.engines_to_try(config, DYNAMIC_ENGINES if dynamic else None)
    example = example_inputs if example_inputs is not None else (batches[0] if dynamic and batches else None)
    if example is None:
        example = example_from_batch(model, batches[0])[0] if batches else model.example_inputs()  # type: ignore[operator]
    example = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    from ptsq.distributed.cluster import using

    with using(ray, workers) as cluster:
        run = (
            (lambda name: _run_mode(model, batches, config.replace(engine=name), **kw))
            if cluster is None
            else _trials_on(cluster, names, (model, batches, config, {**kw, "progress": False}), example, progress)
        )
        qm = select.choose(
            names, run, fp32=model, example=example, config=config,
            criterion=select.DYNAMIC if dynamic else select.STATIC, progress=progress, say=log,
        )  # fmt: skip
    if cluster is not None:
        qm = _speed_here(qm, model, batches, config, kw, example, log or (lambda _m: None))
    # the trials' warnings were held back (a poor engine is a row in the table); the chosen one's are said
    from ptsq.modes.check import warn_if_poor
    from ptsq.modes.speed import warn_if_slower

    warn_if_poor(qm.manifest.get("check") or {})
    warn_if_slower(qm.manifest.get("speed") or {})
    return qm


def _speed_here(
    qm: QuantizedModel,
    model: nn.Module,
    batches: Any,
    config: QuantConfig,
    kw: dict[str, Any],
    example: tuple[Any, ...],
    say: Callable[[str], None],
) -> QuantizedModel:
    """The chosen artifact's whole-model speed check, as one process makes it.

    On Ray every engine's speed check ran in a worker, beside the other trials. The chosen artifact is
    timed against fp32 again here, alone, with the same function and at ``speed.threads``; those figures
    are the ones reported. Where the verdict differs from the worker's (the worker was timed under its
    siblings' load, and its hooks may have moved layers for it), the chosen engine is quantized again in
    this process, exactly as without Ray, and that result is returned.
    """
    from ptsq.modes.speed import settle, time_pair

    speed = qm.manifest.get("speed") or {}
    if not config.speed.check or speed.get("verdict") not in ("faster", "slower"):
        return qm  # switched off, or the worker could not time it (it says why): nothing to confirm
    pairs = [time_pair(model, qm.result.module, example, t, config.speed.runs).to_dict() for t in config.speed.threads]
    here = settle(dict(speed), pairs, config.speed.min_speedup)
    table = qm.manifest["auto"]
    chosen = table["chosen"]
    if here["verdict"] == speed["verdict"]:
        here["where"] = "timed again in the driver process after the engine trials on Ray"
        qm.manifest["speed"] = here
        return qm
    say(f"{chosen}: the speed check in its Ray worker said {speed['verdict']}, here {here['verdict']}; "
        "quantizing it again in this process")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once, for the result, by the caller
        local = _run_mode(model, batches, config.replace(engine=chosen), **kw)
    table = {**table, "requantized_here": f"speed verdict {speed['verdict']} in the worker, {here['verdict']} here"}
    for row in table["engines"]:
        if row["engine"] == chosen:
            counts = local.summary()["layers"]
            row.update(sqnr_db=round(local.manifest["check"]["sqnr_db"], 2), int8_layers=counts["int8"],
                       fp32_layers=counts["fp32"])  # fmt: skip
    local.manifest["auto"] = table
    local.stats["auto"] = table
    return local


def engine_trial(ctx: tuple[nn.Module, Any, QuantConfig, dict[str, Any]], name: str) -> tuple[str, bytes, dict]:
    """One engine of ``engine="auto"``, in a Ray worker: quantize, save; the artifact's file name and bytes go back."""
    import tempfile
    import warnings
    from pathlib import Path

    model, batches, config, kw = ctx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a poor engine is reported in the table, not warned about
        qm = _run_mode(model, batches, config.replace(engine=name), **kw)
    with tempfile.TemporaryDirectory(prefix="ptsq-auto-") as d:
        path = qm.save(Path(d) / f"model.{name}")
        return path.name, path.read_bytes(), dict(qm.stats)


def _trials_on(
    cluster: Any, names: list[str], ctx: tuple[Any, ...], example: tuple[Any, ...], progress: bool
) -> Callable[[str], QuantizedModel]:
    """Run every engine's trial as a Ray task; ``run(name)`` then hands :func:`select.choose` its result.

    Each trial reserves one CPU but runs at this process's torch thread count: the speed guard's verdicts
    (which layers stay fp32) depend on it, and the results must be those of the sequential path.
    """
    import tempfile
    from pathlib import Path

    from ptsq.distributed.fanout import fan_out
    from ptsq.errors import QuantizationError
    from ptsq.quantized import from_artifact

    jobs = [(n, (n,)) for n in names]
    done = {o.key: o for o in fan_out(engine_trial, jobs, cluster, shared=ctx, torch_threads=torch.get_num_threads(),
                                      progress=progress, description="engines")}  # fmt: skip

    def run(name: str) -> QuantizedModel:
        out = done[name]
        if not out.ok:
            raise QuantizationError(str(out.error), f"run that engine alone (--engine {name}) to see the details")
        fname, data, stats = out.value
        with tempfile.TemporaryDirectory(prefix="ptsq-auto-") as d:
            (Path(d) / fname).write_bytes(data)
            qm = from_artifact(Path(d) / fname, example)
        qm.stats.update(stats)
        return qm

    return run


def quantize_dynamic(
    model: nn.Module, data: Iterable[Any] | None = None, config: QuantConfig | None = None, **kw: Any
) -> QuantizedModel:
    """:func:`quantize` in dynamic mode; ``data`` (or ``check_inputs=``) are inputs to check int8 against fp32 on."""
    if "check_inputs" in kw:
        data = kw.pop("check_inputs")
    return quantize(model, data, (config or QuantConfig()).replace(mode="dynamic"), **kw)


__all__ = ["QuantizationWarning", "engine_trial", "load", "quantize", "quantize_dynamic"]

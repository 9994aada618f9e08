"""ptsq quantize: model + folder of images -> int8 artifact, checked against fp32."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ptsq.cli import _accuracy as acc
from ptsq.cli import _config as cfg
from ptsq.cli import _options as o
from ptsq.cli import _report
from ptsq.cli._errors import guarded
from ptsq.cli._output import Output, human_bytes
from ptsq.engines import available_engines, output_help

EXAMPLES = """
Examples:

  ptsq quantize torchvision:resnet18 --weights resnet18.pth --calib images/ -o resnet18_int8.pt

  ptsq quantize mypkg.models:build_net --weights net.pth --calib faces/ --preset minus1to1 --input-size 112 -o net.pt

  ptsq quantize torchvision:mobilenet_v2 --calib images/ -o mnv2.pt --skip name:classifier --json

  ptsq quantize torchvision:mobilenet_v2 --calib images/ -o mnv2.pt --observer mse --no-cleanup equalize

  ptsq quantize torchvision:mobilenet_v2 --calib images/ -o mnv2.pt --min-agreement 0.98 --eval-data photos/

  ptsq quantize torchvision:resnet18 --calib images/ --engine onnx -o resnet18_int8.onnx

  ptsq quantize torchvision:resnet18 --calib images/ --engine auto -o resnet18_int8.bin

  ptsq quantize torchvision:resnet18 --calib images/ --engine auto --ray auto -o r18.bin   # engines in parallel

  ptsq quantize mypkg.text:build_encoder --mode dynamic --engine onnx -o encoder_int8.onnx

  ptsq quantize mypkg.text:encoder --mode dynamic --calib sentences.txt --tokenizer tokenizer_dir/ -o enc.pt

  ptsq quantize mypkg.audio:net --calib inputs.pt -o net.pt     # torch.save({"wave": x, "lengths": n}, "inputs.pt")
"""


def quantize_cmd(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="torchvision:NAME, package.module:callable, file.py:callable, or a file")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help=output_help())],
    calib: Annotated[
        str | None,
        typer.Option(
            "--calib",
            "-c",
            help="Folder of calibration images (searched recursively); a tensor file (.pt/.npy/.npz: a tensor, "
            "a tuple in forward's order or a dict naming forward's inputs, leading batch dimension); or a .txt "
            "file (one sentence per line) with --tokenizer. Required for --mode static; dynamic: the inputs int8 "
            "is checked on; qat: the example inputs.",
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", help="Local Hugging Face tokenizer folder for a text --calib file (offline)."),
    ] = None,
    max_length: Annotated[
        int, typer.Option("--max-length", help="--tokenizer: truncate sentences to this many tokens.")
    ] = 128,
    weights: o.WeightsOpt = None,
    trust_pickle: o.TrustOpt = False,
    backend: Annotated[str, typer.Option("--backend", help="auto | x86 | fbgemm | onednn | qnnpack")] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help=f"{' | '.join(available_engines())} | auto (try all, keep the fastest faithful one). "
            "Default fx; where torch.ao.quantization is gone pt2e (onnx in dynamic mode).",
        ),
    ] = "fx",
    num_calib: o.NumCalibOpt = 300,
    batch_size: o.CalibBatchOpt = 32,
    seed: o.SeedOpt = 0,
    max_images: Annotated[
        int, typer.Option("--max-images", help="Refuse folders with more images than this (guard).")
    ] = 1_000_000,
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", help="Keep layers in fp32: name:PREFIX, regex:RE or type:CLASS (repeatable)."),
    ] = None,
    per_tensor: Annotated[
        bool, typer.Option("--per-tensor", help="Per-tensor instead of per-channel weights.")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on untraceable submodules instead of fp32.")] = False,
    speed_guard: Annotated[
        float,
        typer.Option("--speed-guard", help="Keep a layer fp32 if its int8 kernel is this many times slower; 0 = off."),
    ] = 1.5,
    threads: Annotated[
        str,
        typer.Option(
            "--threads",
            help="Thread counts the model will run at, e.g. 1 or 1,2: the speed guard and "
            "the whole-model speed check measure at these.",
        ),
    ] = "1",
    min_speedup: Annotated[
        float, typer.Option("--min-speedup", help="int8 must be at least this many times faster than fp32.")
    ] = 1.0,
    allow_slower: Annotated[
        bool,
        typer.Option(
            "--allow-slower",
            help="Write the artifact even when int8 is not faster than fp32 (otherwise: exit code 3, nothing written).",
        ),
    ] = False,
    no_speed_check: Annotated[
        bool,
        typer.Option(
            "--no-speed-check", help="Skip the whole-model speed check (its timings make artifacts differ run to run)."
        ),
    ] = False,
    check_samples: Annotated[
        int,
        typer.Option(
            "--check-samples",
            help="Samples held back from calibration for the self-check (0: 32 or an eighth, at most a quarter).",
        ),
    ] = 0,
    mode: Annotated[
        str, typer.Option("--mode", help="static (calibrated PTQ) | dynamic (Linear/LSTM/GRU) | qat (fine-tune).")
    ] = "static",
    train_data: Annotated[
        str | None, typer.Option("--train-data", help="--mode qat: labelled images, one sub-folder per class.")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="--mode qat: fine-tuning epochs.")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="--mode qat: learning rate (SGD, momentum 0.9).")] = 1e-4,
    min_cosine: Annotated[
        float,
        typer.Option("--min-cosine", help="--mode dynamic (fx): keep layers fp32 until int8 cosine >= this; 0 = off."),
    ] = 0.99,
    observer: cfg.ObserverOpt = None,
    cleanup: cfg.CleanupOpt = None,
    no_cleanup: cfg.NoCleanupOpt = None,
    config_file: cfg.ConfigOpt = None,
    save_config: cfg.SaveConfigOpt = None,
    max_drop: acc.MaxDropOpt = None,
    eval_data: acc.EvalDataOpt = None,
    min_agreement: acc.MinAgreementOpt = None,
    min_sqnr: acc.MinSqnrOpt = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUTPUT if it exists.")] = False,
    report_file: o.ReportOpt = None,
    ray: o.RayOpt = None,
    workers: o.WorkersOpt = None,
    json_out: o.JsonOpt = False,
    quiet: o.QuietOpt = False,
    **pre: Any,
) -> None:
    params = dict(locals())
    _quantize(ctx, {**params, **params.pop("pre")})


def _quantize(ctx: typer.Context, p: dict[str, Any]) -> None:
    """Build the config from the flags (and recipe), load model and data, call the library, save, report."""
    from ptsq import artifact
    from ptsq.api import quantize
    from ptsq.data.inputs import mode_data
    from ptsq.models import load_model

    out = Output(json_mode=p["json_out"], quiet=p["quiet"])
    config = cfg.build_config(ctx, p)
    budget = acc.budget_requested(p["max_drop"], p["min_agreement"], p["min_sqnr"])
    acc.check_budget(p["max_drop"], p["min_agreement"], p["min_sqnr"], p["eval_data"])
    if p["ray"] is not None or p["workers"] is not None:
        _check_ray(p["ray"], p["workers"], budget, config.engine)
    if config.mode == "static" and not p["calib"]:
        from ptsq.errors import ConfigError

        raise ConfigError("--mode static needs calibration data (--calib)", "pass --calib DIR, or use --mode dynamic")
    from ptsq.modes.speed import check_threads

    target = artifact.check_output_path(p["output"], p["force"])
    report_path = _report.check_path(p["report_file"], (p["model"], p["calib"] or "", p["weights"] or "", p["output"]))
    check_threads(config.speed.threads)
    t0 = time.perf_counter()
    loaded = load_model(p["model"], weights=p["weights"], trust_pickle=p["trust_pickle"])
    random_inputs = config.mode == "dynamic" and not p["calib"]  # only their size matters
    chosen = o.chosen_preprocess(loaded.preprocess, p, source=loaded.preprocess_source, size_only=random_inputs,
                                 needed=_decodes_images(loaded.model, config, p))  # fmt: skip
    pre = chosen.preprocess
    advice = _advice(loaded.model, pre, config.mode)
    if advice:
        out.warn(advice)
    source = p["train_data"] if config.mode == "qat" else p["calib"]
    calib = p["calib"] if config.mode == "qat" else None  # QAT trains on --train-data; --calib gives its example
    data = mode_data(loaded.model, source, pre, config, max_images=p["max_images"], calib=calib)
    if config.mode == "static":
        out.info(f"quantizing {p['model']} with calibration data from {p['calib']}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if budget and config.mode == "static":
            qm = acc.run_budget(loaded.model, data.data, config, data.preprocess, out, max_drop=p["max_drop"],
                                min_agreement=p["min_agreement"], min_sqnr=p["min_sqnr"], eval_data=p["eval_data"],
                                batch_size=config.calibration.batch_size, max_images=p["max_images"],
                                ray=p["ray"], workers=p["workers"])  # fmt: skip
        else:
            ray = p["ray"] if config.engine == "auto" else None
            qm = quantize(loaded.model, data.data, config, example_inputs=data.example, progress=out.progress,
                          preprocess=data.preprocess, source=data.source, log=out.info, ray=ray,
                          workers=p["workers"] if ray else None)  # fmt: skip
    if data.calibration is not None:
        if warned := data.calibration.skipped_warning():
            out.warn(warned)
        if config.mode == "static":
            qm.manifest["calibration"].update(data.calibration.summary())
    for w in caught:
        if w.category.__name__ == "QuantizationWarning":
            out.warn(str(w.message))
    speed = qm.manifest.get("speed") or {}
    if speed.get("verdict") == "slower":
        line = _slower_line(speed)
        if not p["allow_slower"]:
            from ptsq.errors import SlowerThanFp32Error

            raise SlowerThanFp32Error(f"{line}; nothing written")
        out.warn(f"{line} (kept: --allow-slower)")
    qm.manifest["preprocess_source"] = chosen.source
    qm.manifest["model"] = {"spec": p["model"], "weights_sha256": loaded.weights_sha256}
    if p["save_config"]:
        cfg.save_config(config, p["save_config"])
    qm.save(target, force=p["force"])
    summary = _summary(qm, loaded.model, target, config.mode, time.perf_counter() - t0)
    _report.write(out, report_path, summary, artifacts=[target], quantize=summary)
    out.result(summary, render)


def _check_ray(ray: str | None, workers: int | None, budget: bool, engine: str) -> None:
    """--ray spreads the engine trials of --engine auto and a budget's layer trials; say so before any work."""
    from ptsq.distributed.cluster import check_workers, require_ray
    from ptsq.errors import ConfigError

    check_workers(workers)
    if ray is None:
        raise ConfigError("--workers needs --ray", "add --ray auto (a local Ray instance), or drop --workers")
    if engine != "auto" and not budget:
        raise ConfigError(
            "--ray spreads the engine trials of --engine auto and an accuracy budget's layer trials; "
            "this command has neither",
            "add --engine auto or --max-drop/--min-agreement/--min-sqnr, or drop --ray",
        )
    require_ray()


def _decodes_images(model: Any, config: Any, p: dict[str, Any]) -> bool:
    """Whether this run turns images into inputs (and so needs to know how): not for tensor or text files,
    nor for dynamic mode on a model that gives its own example inputs."""
    mode = config.mode
    path = p["train_data"] if mode == "qat" else p["calib"]
    if path and not Path(path).expanduser().exists():  # the more basic problem first
        from ptsq.errors import DataError

        what = "labelled data folder" if mode == "qat" else "calibration data"
        raise DataError(f"{what} '{path}' does not exist", "check the path")
    if path:
        return mode == "qat" or not (Path(path).expanduser().is_file() or config.calibration.tokenizer)
    return mode != "dynamic" or not callable(getattr(model, "example_inputs", None))


def _slower_line(speed: dict[str, Any]) -> str:
    from ptsq.modes.speed import speed_line

    want = speed.get("min_speedup", 1.0)
    goal = "faster than fp32" if want <= 1.0 else f"{want:g}x faster than fp32"
    return f"the int8 model is not {goal}: int8 {speed_line(speed)} ({speed.get('fp32')})"


def _advice(model: Any, pre: Any, mode: str) -> str | None:
    from ptsq.data.inputs import example_for
    from ptsq.modes.advice import advise

    try:
        example = example_for(model, pre)
    except Exception:  # advice is best effort
        return None
    return advise(model, example, mode)


def _summary(qm: Any, fp32: Any, target: Any, mode: str, seconds: float) -> dict[str, Any]:
    import torch

    buf = io.BytesIO()
    torch.save(fp32.state_dict(), buf)
    data: dict[str, Any] = {
        "output": str(target),
        "mode": mode,
        **({"training": qm.manifest["training"]} if "training" in qm.manifest else {}),
        **qm.summary(),
        **({"budget": qm.manifest["budget"]} if "budget" in qm.manifest else {}),
        "fp32_bytes": buf.tell(),
        "seconds": round(seconds, 2),
        "preprocess_source": qm.manifest.get("preprocess_source"),
    }
    data["size_ratio"] = round(data["fp32_bytes"] / max(1, data["int8_bytes"]), 2)
    return data


def render(console: Console, d: dict[str, Any]) -> None:
    from ptsq.modes.check import figures

    c = d["check"]
    t = Table(title=f"ptsq quantize → {d['output']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("engine / backend", f"{d['engine']} / {d['backend']}" + (f" ({d['mode']})" if d.get("mode") else ""))
    t.add_row("layers", f"{d['layers']['int8']} int8, {d['layers']['fp32']} fp32")
    t.add_row("size", f"fp32 {human_bytes(d['fp32_bytes'])} → int8 {human_bytes(d['int8_bytes'])} ({d['size_ratio']}x)")
    cal = d["calibration"]
    skipped = f", {cal.get('skipped', 0)} skipped" if cal.get("skipped") else ""
    if d.get("mode", "static") == "static":
        t.add_row("calibration", f"{cal.get('samples')} images from {cal.get('source', '?')}{skipped}")
    else:
        t.add_row("calibration", str(cal.get("source", "-")))
    if d.get("training"):
        last = d["training"]["epochs"][-1] if d["training"]["epochs"] else {}
        t.add_row("QAT", f"{d['training']['steps']} steps, last epoch loss {last.get('loss', 0):.3f} acc "
                         f"{last.get('accuracy', 0):.3f}")  # fmt: skip
    t.add_row("preprocessing", _preprocessing(d))
    verdict = {
        "good": "[green]GOOD[/green] ",
        "poor": "[red]POOR[/red] ",
        "too few samples": "[yellow]no verdict[/yellow] ",
    }
    t.add_row("int8 vs fp32", verdict.get(c.get("verdict", ""), "") + figures(c) + f" ({c.get('output', '?')})")
    if d.get("speed"):
        t.add_row("speed", _speed(d["speed"]))
    route = f", {d['compile_route']}" if d.get("compile_route") else ""
    compiled = f" (compile {d['compile_seconds']} s{route})" if d.get("compile_seconds") else ""
    t.add_row("time", f"{d['seconds']} s{compiled}")
    console.print(t)
    if d["fp32_layers"]:
        f = Table(title="kept in fp32", title_justify="left")
        f.add_column("layer")
        f.add_column("op")
        f.add_column("why")
        for r in d["fp32_layers"]:
            f.add_row(r["name"], r["op"], r.get("reason", ""))
        console.print(f)
    for note in d.get("notes", []):
        console.print(f"note: {note}", soft_wrap=True)
    if d.get("budget"):
        acc.render_budget(console, d["budget"])
    if d.get("auto"):
        render_auto(console, d["auto"])


def _preprocessing(d: dict[str, Any]) -> str:
    from ptsq.data.preprocess import Preprocess
    from ptsq.data.spec import Chosen

    p = d.get("preprocess")
    source = d.get("preprocess_source") or "?"
    return Chosen(Preprocess.from_dict(p) if p else None, source).describe()


def _speed(s: dict[str, Any]) -> str:
    from ptsq.modes.speed import speed_line

    if s.get("verdict") == "not checked":
        return "not checked (speed.check off)"
    tag = "[green]FASTER[/green]" if s["verdict"] == "faster" else "[red]SLOWER[/red]"
    how = ", ".join(sorted(set(s.get("method", {}).values())))
    changed = f"; {len(s['changes'])} change(s), see notes" if s.get("changes") else ""
    return f"{tag} int8 {speed_line(s)} vs {s.get('fp32')}, batch 1, {how}{changed}"


def render_auto(console: Console, a: dict[str, Any]) -> None:
    title = f"--engine auto: batch 1, {a['threads']} thread(s), fp32 eager {a['fp32_median_ms']:.2f} ms"
    t = Table(title=title, title_justify="left")
    for col in ("engine", "status", "SQNR dB", "int8/fp32 layers", "median ms", "speed-up", "size", "note"):
        t.add_column(col)
    for r in a["engines"]:
        ms = f"{r['median_ms']:.2f}" if r.get("median_ms") is not None else "-"
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") is not None else "-"
        layers = f"{r['int8_layers']}/{r['fp32_layers']}" if "int8_layers" in r else "-"
        sq = f"{r['sqnr_db']:.1f}" if "sqnr_db" in r else "-"
        note = "chosen" if r.get("chosen") else r.get("why", "")
        t.add_row(r["engine"], r["status"], sq, layers, ms, sp, human_bytes(r.get("bytes")), note)
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command(
        "quantize", help=f"Quantize a model to int8 (engines {', '.join(available_engines())} or auto).\n" + EXAMPLES
    )(guarded(o.with_preprocess_options(quantize_cmd)))

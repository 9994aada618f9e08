"""ptsq bench: latency of fp32 models and int8 artifacts, interleaved in one process."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ptsq.cli import _options as o
from ptsq.cli import _report
from ptsq.cli._errors import guarded
from ptsq.cli._output import Output, human_bytes

EXAMPLES = """
Examples:

  ptsq bench torchvision:resnet18 resnet18_int8.pt --threads 1

  ptsq bench torchvision:resnet18 resnet18_int8.pt --threads 1,2 --batch-size 1,8 --json

  ptsq bench torchvision:resnet18 resnet18_int8.pt --threads 1,2 --plot latency.png

  ptsq bench torchvision:resnet18 resnet18_int8.pt --fp32-runtimes onnxruntime,openvino

--fp32-runtimes also times each fp32 model on ONNX Runtime and/or OpenVINO (the engines extra): int8 is then
shown against the fastest fp32 too ("vs best fp32"), not only against eager PyTorch.

Peak memory: each model is loaded and run again in a fresh child process after the timing, at
every thread count and batch size; "peak RSS" is that process's resident peak while running at the
row's setting (Linux resets the peak before each), "above base" subtracts its resident memory right
after importing torch and ptsq. --no-memory skips it.
"""


def _ints(text: str, what: str) -> list[int]:
    from ptsq.errors import ConfigError

    try:
        vals = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise ConfigError(f"--{what} {text!r} is not a list of integers", f"e.g. --{what} 1,2") from None
    if not vals or any(v < 1 or v > 4096 for v in vals):
        raise ConfigError(f"--{what} {text!r} must list integers from 1 to 4096", f"e.g. --{what} 1,2")
    return vals


def bench_cmd(
    models: Annotated[list[str], typer.Argument(help="fp32 model specs and/or ptsq artifacts; the first is the base.")],
    threads: Annotated[str, typer.Option("--threads", help="Thread counts, e.g. 1 or 1,2.")] = "1",
    batch_size: Annotated[str, typer.Option("--batch-size", help="Batch sizes, e.g. 1 or 1,8.")] = "1",
    runs: Annotated[int, typer.Option("--runs", help="Timed runs per model and setting.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 10,
    input_size: o.InputSizeOpt = None,
    weights: o.WeightsOpt = None,
    trust_pickle: o.TrustOpt = False,
    allow_different: Annotated[
        bool, typer.Option("--allow-different-outputs", help="Compare models whose outputs differ in shape.")
    ] = False,
    plot: Annotated[
        str | None, typer.Option("--plot", help="Write a PNG of latency per model and thread count (matplotlib).")
    ] = None,
    no_memory: Annotated[
        bool, typer.Option("--no-memory", help="Skip peak memory (one child process per model).")
    ] = False,
    report_file: o.ReportOpt = None,
    fp32_runtimes: Annotated[
        str | None,
        typer.Option(
            "--fp32-runtimes",
            help="Also time each fp32 model on: onnxruntime, openvino (comma-separated) "
            "or all, to compare int8 with the fastest fp32.",
        ),
    ] = None,
    json_out: o.JsonOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    import torch

    from ptsq.bench import Candidate, benchmark
    from ptsq.cli._models import load_all
    from ptsq.engines.runtimes import fp32_module, parse_runtimes

    out = Output(json_mode=json_out, quiet=quiet)
    thread_list, batch_list = _ints(threads, "threads"), _ints(batch_size, "batch-size")
    plot_path = None
    if plot:
        from ptsq.artifact import check_output_path
        from ptsq.plot import require_matplotlib

        require_matplotlib()
        plot_path = check_output_path(plot, force=True)  # fail before minutes of timing
    report_path = _report.check_path(report_file, tuple(models))
    runtimes = parse_runtimes(fp32_runtimes) if fp32_runtimes else []
    items = load_all(models, weights, trust_pickle)
    cands = [Candidate(i.label, i.runner, i.size_bytes, kind=i.kind, source=i.source) for i in items]
    shapes = _input_shapes(items, input_size)
    gen = torch.Generator().manual_seed(0)
    bases = [torch.randn(max(batch_list), *s[1:], generator=gen) for s in shapes]

    def make_inputs(bs: int) -> tuple[Any, ...]:
        return tuple(b[:bs].contiguous() for b in bases)

    extra = []
    for item in items:
        if item.kind != "fp32":
            continue
        for name in runtimes:
            out.info(f"converting {item.label} to {name} (fp32)")
            extra.append(Candidate(f"{item.label} [{name}]", fp32_module(name, item.module, make_inputs(1)),
                                   kind=f"fp32 ({name})"))  # fmt: skip
    cands[1:1] = extra  # after the first model: the speed-up stays over eager fp32

    res = benchmark(
        cands,
        make_inputs,
        threads=thread_list,
        batch_sizes=batch_list,
        warmup=warmup,
        runs=runs,
        check_outputs=not allow_different,
        progress=out.progress,
        memory=not no_memory,
    )
    data = {"input_shape": shapes[0], **({"input_shapes": shapes} if len(shapes) > 1 else {}), **res.to_dict()}
    if extra:
        _against_best_fp32(data["timings"])
    skip = {c.label for c in extra}
    for m in res.memory:
        if m.get("error") and m["label"] not in skip:
            out.warn(f"peak memory of '{m['label']}' not measured: {m['error']}")
    if plot_path is not None:
        from ptsq.plot import plot_latency

        plot_latency(data, plot_path)
        data["plot"] = str(plot_path)
        out.info(f"wrote {plot_path}")
    arts = [s for s, i in zip(models, items) if i.kind != "fp32"]  # the runtimes' extra candidates are not artifacts
    _report.write(out, report_path, data, artifacts=arts, bench=data)
    out.result(data, render)


def _against_best_fp32(timings: list[dict[str, Any]]) -> None:
    """Each row's speed-up over the fastest fp32 (any runtime) at the same threads and batch size."""
    best: dict[tuple[int, int], dict[str, Any]] = {}
    for t in timings:
        key = (t["threads"], t["batch_size"])
        if t["kind"].startswith("fp32") and (key not in best or t["median_ms"] < best[key]["median_ms"]):
            best[key] = t
    for t in timings:
        b = best.get((t["threads"], t["batch_size"]))
        if b is not None:
            t["speedup_vs_best_fp32"] = round(b["median_ms"] / t["median_ms"], 3)
            t["best_fp32"] = b["label"]


def _input_shapes(items: list[Any], input_size: str | None) -> list[list[int]]:
    """One shape per model input, batch dimension first: --input-size, else the first model that knows."""
    from ptsq.data.preprocess import parse_input_sizes
    from ptsq.errors import ConfigError

    shapes: list[list[int]] | None = None
    for item in items:
        every = getattr(item.module, "input_shapes", None)  # an artifact records every input
        spec = getattr(item.module, "manifest", {}).get("input", {})
        flat = spec.get("keywords") or all(n.startswith("[") and n.count("[") == 1 for n in spec.get("names", []))
        if every and flat:
            shapes = [list(s) for s in every]
        else:
            one = item.input_shape or (list(item.preprocess.input_shape()) if item.preprocess else None)
            shapes = [one] if one else None
        if shapes:
            break
    if input_size:  # one size, or one per input: 3x224x224,3x112x112
        chans = shapes[0][1] if shapes and len(shapes[0]) == 4 else 3
        shapes = [[1, *chw] for chw in parse_input_sizes(input_size, chans)]
    if not shapes:
        raise ConfigError("cannot tell the input size of these models", "pass --input-size, e.g. --input-size 224")
    return shapes


def render(console: Console, d: dict[str, Any]) -> None:
    m = d["machine"]
    title = f"ptsq bench — {m['cpu']} ({', '.join(m['isa']) or 'no SIMD flags read'}), torch {m['torch']}"
    t = Table(title=title, title_justify="left")
    best = any("speedup_vs_best_fp32" in r for r in d["timings"])
    cols = ("model", "kind", "threads", "batch", "median ms", "p90 ms", "mean ms", "min ms", "samples/s", "speed-up",
            *(("vs best fp32",) if best else ()), "size", "peak RSS", "above base")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="right" if col not in ("model", "kind") else "left")
    for r in d["timings"]:
        t.add_row(
            r["label"], r["kind"], str(r["threads"]), str(r["batch_size"]), f"{r['median_ms']:.2f}",
            f"{r['p90_ms']:.2f}", f"{r['mean_ms']:.2f}", f"{r['min_ms']:.2f}", f"{r['samples_per_s']:.1f}",
            f"{r['speedup']:.2f}x", *((f"{r['speedup_vs_best_fp32']:.2f}x",) if best else ()),
            human_bytes(r["size_bytes"]), _mb(r.get("peak_rss_mb")), _mb(r.get("model_mb")),
        )  # fmt: skip
    console.print(t)
    console.print(
        f"{m['cores']} cores, quantized engine {m['quantized_engine']}; input {d['input_shape']}; "
        "medians of interleaved runs; speed-up is over the first model"
        + ("; 'vs best fp32' over the fastest fp32 runtime at the same setting." if best else "."),
        soft_wrap=True,
    )


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} MB"


def register(app: typer.Typer) -> None:
    app.command("bench", help="Compare latency of models and artifacts, interleaved.\n" + EXAMPLES)(guarded(bench_cmd))

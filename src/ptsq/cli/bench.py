"""ptsq bench: latency of fp32 models and int8 artifacts, interleaved in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ptsq.cli import _options as o
from ptsq.cli._errors import guarded
from ptsq.cli._output import Output, human_bytes

EXAMPLES = """
Examples:

  ptsq bench torchvision:resnet18 resnet18_int8.pt --threads 1

  ptsq bench torchvision:resnet18 resnet18_int8.pt --threads 1,2 --batch-size 1,8 --json
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


def _is_artifact(path: Path) -> bool:
    from ptsq.models import is_torchscript

    return path.is_file() and is_torchscript(path)


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
    json_out: o.JsonOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    import torch

    from ptsq.bench import Candidate, benchmark
    from ptsq.data.preprocess import parse_size
    from ptsq.errors import ConfigError
    from ptsq.models import load_model
    from ptsq.quantized import load

    out = Output(json_mode=json_out, quiet=quiet)
    shape: list[int] | None = None
    cands: list[Candidate] = []
    for spec in models:
        path = Path(spec)
        if _is_artifact(path):
            art = load(path)
            cands.append(Candidate(path.name, art.module, path.stat().st_size, kind=f"int8 ({art.manifest['engine']})"))
            if shape is None and art.input_shapes:
                shape = list(art.input_shapes[0])
        else:
            loaded = load_model(spec, weights=weights, trust_pickle=trust_pickle)
            size = Path(weights).stat().st_size if weights else None
            cands.append(Candidate(spec, loaded.model, size, kind="fp32"))
            if shape is None and loaded.preprocess is not None:
                shape = list(loaded.preprocess.input_shape())
    if input_size:
        h, w = parse_size(input_size)
        shape = [1, shape[1] if shape else 3, h, w]
    if shape is None:
        raise ConfigError("cannot tell the input size of these models", "pass --input-size, e.g. --input-size 224")
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(max(_ints(batch_size, "batch-size")), *shape[1:], generator=gen)

    def make_inputs(bs: int) -> tuple[Any, ...]:
        return (base[:bs].contiguous(),)

    res = benchmark(
        cands,
        make_inputs,
        threads=_ints(threads, "threads"),
        batch_sizes=_ints(batch_size, "batch-size"),
        warmup=warmup,
        runs=runs,
        check_outputs=not allow_different,
        progress=out.progress,
    )
    out.result({"input_shape": shape, **res.to_dict()}, render)


def render(console: Console, d: dict[str, Any]) -> None:
    m = d["machine"]
    title = f"ptsq bench — {m['cpu']} ({', '.join(m['isa']) or 'no SIMD flags read'}), torch {m['torch']}"
    t = Table(title=title, title_justify="left")
    for col in ("model", "kind", "threads", "batch", "median ms", "p90 ms", "min ms", "samples/s", "speed-up", "size"):
        t.add_column(col, justify="right" if col not in ("model", "kind") else "left")
    for r in d["timings"]:
        t.add_row(
            r["label"], r["kind"], str(r["threads"]), str(r["batch_size"]), f"{r['median_ms']:.2f}",
            f"{r['p90_ms']:.2f}", f"{r['min_ms']:.2f}", f"{r['samples_per_s']:.1f}", f"{r['speedup']:.2f}x",
            human_bytes(r["size_bytes"]),
        )  # fmt: skip
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("bench", help="Compare latency of models and artifacts, interleaved.\n" + EXAMPLES)(guarded(bench_cmd))

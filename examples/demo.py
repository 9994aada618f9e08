"""`make demo`: the main job on a built-in default, end to end on real data that ships offline.

EfficientNet-Lite0 with its real ImageNet weights is quantized by ptsq (FX graph mode, x86),
calibrated on 80 real photos from scikit-image / scikit-learn / matplotlib written to JPEG files,
then fp32 and int8 are compared side by side: latency at 1 thread (interleaved, median), file size,
top-1 on the 20 labelled ImageNet photos shipped with foolbox (disjoint from the calibration photos)
and top-1 agreement with fp32. Everything is written under out/demo/, and the last line printed is the
path of out/demo/report.html: the run as one self-contained page (headline, latency chart, accuracy,
precision map, how to reproduce it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import ptsq
from ptsq.bench import Candidate, benchmark
from ptsq.cli._output import human_bytes
from ptsq.data import CalibrationImages, Preprocess, decode_image
from ptsq.report import build, write_report

MODEL_SPEC = "examples.reference.imagenet:efficientnet_lite0"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo", help="folder for the photos and artifacts")
    ap.add_argument("--num-calib", type=int, default=80)
    ap.add_argument("--runs", type=int, default=40, help="timed runs per model")
    args = ap.parse_args(argv)

    from examples.reference import imagenet

    console = Console(stderr=True)
    out = Path(args.out)
    calib_dir = out / "calib_photos"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    console.print(f"[bold]1/4[/bold] writing {args.num_calib} calibration photos to {calib_dir}")
    paths = imagenet.write_calibration_photos(calib_dir, n=args.num_calib, seed=0)
    samples = imagenet.imagenet_samples()
    eval_digests = {imagenet.file_digest(p) for p, _ in samples}
    assert not eval_digests & {imagenet.file_digest(p) for p in paths}, "calibration and evaluation overlap"

    console.print("[bold]2/4[/bold] loading EfficientNet-Lite0 (real ImageNet weights) and quantizing")
    loaded = ptsq.load_model(MODEL_SPEC)
    fp32 = loaded.model
    pre = Preprocess(**imagenet.PREPROCESS, preset="effnet-lite")
    calib = CalibrationImages(calib_dir, pre, num=args.num_calib, batch_size=16, seed=0)
    qm = ptsq.quantize(fp32, calib, preprocess=pre, progress=sys.stderr.isatty())
    qm.manifest["model"] = {"spec": MODEL_SPEC}
    art = qm.save(out / "efficientnet_lite0_int8.pt", force=True)
    fp32_file = out / "efficientnet_lite0_fp32.pth"
    torch.save(fp32.state_dict(), fp32_file)
    int8 = ptsq.load(art)

    console.print(f"[bold]3/4[/bold] evaluating on {len(samples)} labelled ImageNet photos")
    x = torch.stack([decode_image(p, pre) for p, _ in samples])
    # the label is the class index in the file name; the folder's CIFAR/MNIST files do not match and are ignored
    ev = ptsq.evaluate([fp32, int8], samples[0][0].parent, preprocess=pre, names=[MODEL_SPEC, art.name],
                       kinds=["fp32", "int8 (fx)"], label_pattern=r"^imagenet_\d+_(\d+)\.jpg$")  # fmt: skip
    assert ev.images == len(samples), ev.images
    fid = ev.models[1].fidelity or {}
    top1 = {"fp32": ev.models[0].top1, "int8": ev.models[1].top1}

    console.print(f"[bold]4/4[/bold] timing fp32 and int8 at 1 thread, interleaved ({args.runs} runs each)")
    res = benchmark(
        [
            Candidate(MODEL_SPEC, fp32, fp32_file.stat().st_size),
            Candidate(art.name, int8, art.stat().st_size, "int8 (fx)"),
        ],
        lambda bs: (x[:bs].contiguous(),),
        threads=(1,),
        batch_sizes=(1,),
        warmup=10,
        runs=args.runs,
        progress=sys.stderr.isatty(),
    )
    t_fp32, t_int8 = res.timings

    m = res.machine
    table = Table(title=f"EfficientNet-Lite0: fp32 vs ptsq int8 — {m['cpu']}, torch {m['torch']}", title_justify="left")
    for col in ("", "fp32", "int8", "int8 / fp32"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("latency, 1 thread, batch 1 (median ms)", f"{t_fp32.median_ms:.1f}", f"{t_int8.median_ms:.1f}",
                  f"{t_int8.speedup:.2f}x faster")  # fmt: skip
    table.add_row("latency p90 (ms)", f"{t_fp32.p90_ms:.1f}", f"{t_int8.p90_ms:.1f}", "")
    table.add_row("file size", human_bytes(t_fp32.size_bytes), human_bytes(t_int8.size_bytes),
                  f"{t_fp32.size_bytes / t_int8.size_bytes:.2f}x smaller")  # fmt: skip
    table.add_row(f"top-1 on {len(samples)} labelled ImageNet photos", f"{top1['fp32']:.2f}", f"{top1['int8']:.2f}",
                  f"{100 * (top1['int8'] - top1['fp32']):+.0f} pp")  # fmt: skip
    table.add_row("top-1 agreement with fp32", "1.00", f"{fid['top1_agreement']:.2f}", "")
    table.add_row("logit SQNR vs fp32 (dB)", "", f"{fid['sqnr_db']:.1f}", "")
    counts = qm.summary()["layers"]
    table.add_row("layers int8 / fp32", "", f"{counts['int8']} / {counts['fp32']}", "")
    Console().print(table)
    Console().print(
        f"calibration: {qm.manifest['calibration']['samples']} photos from {calib_dir} (held back "
        f"{qm.fidelity['samples']} for the self-check: SQNR {qm.fidelity['sqnr_db']:.1f} dB); "
        f"artifact: {art}; total {time.perf_counter() - t0:.0f} s",
        soft_wrap=True,
    )
    print_cli_line(calib_dir, art)
    # the same results as one page: headline, latency chart, accuracy, precision map, recipe
    report = write_report(
        build([art], bench={"input_shape": list(x[:1].shape), **res.to_dict()}, eval=ev.to_dict(),
              title="ptsq demo: EfficientNet-Lite0, fp32 vs int8"),
        out / "report.html",
    )  # fmt: skip
    print(f"report: {report}")  # last, unwrapped: scripts and people copy it
    return 0


def cli_line(calib_dir: Path, art: Path) -> str:
    """The same run through the CLI, runnable verbatim from the repository root (where the demo runs)."""
    return (
        f"ptsq quantize {MODEL_SPEC} --calib {calib_dir} --preset effnet-lite "
        f"-o {art} --force && ptsq bench {MODEL_SPEC} {art} --threads 1"
    )


def print_cli_line(calib_dir: Path, art: Path) -> None:
    # plain print, one line: a wrapped command could not be pasted (a test runs exactly this line)
    print("same with the CLI, from the repository root:")
    print(f"  {cli_line(calib_dir, art)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of calibration: 200 vs 2,000 real JPEGs at 224x224, each run in a fresh child process.

Calibration streams images from disk one batch at a time (ptsq.data.CalibrationImages), so the
peak should not grow with the number of images. Holding 2,000 decoded images would take
2000 x 3 x 224 x 224 x 4 bytes = 1.2 GB. The child resets the kernel's high-water mark after its
imports (/proc/self/clear_refs), so "calibration peak" is what quantize() itself needed.

Run from the repo root: ``python -m benchmarks.bench_memory`` (``--counts 200,2000``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 32


def _status_kb(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def write_jpegs(folder: Path, n: int, size: int = 224) -> None:
    """Real JPEG photos-like files (smooth fields, edges, noise), each different."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        base = np.stack(
            [
                128 + 100 * np.sin(xx / (5 + i % 7) + rng.uniform(0, 6)),
                128 + 100 * np.cos(yy / (4 + i % 5) + rng.uniform(0, 6)),
                (xx + yy) * 255.0 / (2 * size),
            ],
            axis=-1,
        )
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img_{i:04d}.jpg", quality=90)


def child(folder: str, n: int) -> None:
    """Quantize a small conv net calibrating on ``n`` images of ``folder``; print memory as JSON."""
    import torch
    from torch import nn

    import ptsq
    from ptsq.data import CalibrationImages, preset

    torch.set_num_threads(1)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()  # fmt: skip
    pre = preset("imagenet", size=(224, 224))
    images = CalibrationImages(folder, pre, num=n, batch_size=BATCH, seed=0)
    # warm-up on two random batches: lazy imports inside torch.fx / torch.ao happen before the reset below
    warm = [torch.randn(2, 3, 224, 224) for _ in range(2)]
    ptsq.quantize(model, warm, config=ptsq.QuantConfig(speed_guard=0, speed={"check": False}), progress=False)

    base = _status_kb("VmRSS")
    reset = False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := current RSS
        reset = True
    except OSError:
        pass
    t0 = time.perf_counter()
    qm = ptsq.quantize(model, images, config=ptsq.QuantConfig(speed_guard=0), progress=False, preprocess=pre)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "images": images.used,
                "calibrated": qm.manifest["calibration"]["samples"],
                "base_rss_kb": base,
                "hwm_kb": _status_kb("VmHWM"),
                "reset": reset,
                "seconds": round(seconds, 1),
            }
        )
    )


def measure(folder: Path, n: int, malloc: str) -> dict[str, float]:
    env = dict(os.environ)
    if malloc != "default":  # a fixed threshold: large tensors always come from mmap and go back on free
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(folder), str(n)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="200,2000")
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "N"))
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return

    from benchmarks._results import write_section

    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "calib"
        t0 = time.perf_counter()
        write_jpegs(folder, max(counts))
        print(f"wrote {max(counts)} JPEGs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for malloc, n in [(m, n) for m in ("default", "MALLOC_MMAP_THRESHOLD_=1MB") for n in counts]:
            r = measure(folder, n, malloc)
            held = n * 3 * 224 * 224 * 4 / 2**20
            rows.append(
                [
                    n,
                    malloc,
                    r["images"],
                    round(r["base_rss_kb"] / 1024, 1),
                    round(r["hwm_kb"] / 1024, 1),
                    round((r["hwm_kb"] - r["base_rss_kb"]) / 1024, 1),
                    round(held, 1),
                    r["seconds"],
                ]
            )
            print(rows[-1], file=sys.stderr)
    write_section(
        "memory",
        title="Peak memory of calibration (streamed from disk)",
        columns=[
            "images",
            "glibc malloc",
            "decoded",
            "RSS before quantize (MB)",
            "peak RSS during quantize (MB)",
            "peak − before (MB)",
            "all images decoded would take (MB)",
            "seconds",
        ],
        rows=rows,
        command="python -m benchmarks.bench_memory",
        order=80,
        notes=[
            f"224x224 JPEGs, batch size {BATCH}, a 3-conv model, 1 thread, speed guard off; each count in a fresh "
            "child process whose kernel high-water mark (VmHWM) is reset after the imports.",
            "Calibration holds one batch (plus the held-back self-check batches) at a time; the peak does not "
            "track the number of images. What growth remains with glibc's default malloc is heap fragmentation "
            "(its mmap threshold adapts upwards after large frees); the MALLOC_MMAP_THRESHOLD_ rows show it.",
        ],
    )


if __name__ == "__main__":
    main()

"""Scale out on Ray: the same figures as one process, throughput per worker, and the fan-outs' wall time.

What it measures (docs/scale.md explains the design and uses these figures for its projection):

* capacity: the same CPU-bound loop in one process, then in two at once: how many cores' worth of throughput
  this machine gives two processes right now, the ceiling of every 2-worker speed-up below.

* eval, Fashion-MNIST: the 10,000 test images as PNG files in a labelled folder tree (written once into
  ptsq's cache), FashionResNet fp32 + its int8 artifact. One process, and a local Ray instance with 1 and
  2 workers (1 torch thread each), interleaved in this process on a warm instance (after a warm-up round):
  the figures must be identical, and images/s compared. Also end to end through the CLI (Ray's start-up
  included).
* eval, EfficientNet-Lite0 on ImageNet-size photos (224x224 crops of 256-pixel photos): images/s per
  worker, the basis of the 50,000-image projection.
* make coverage: the first ``--coverage-models`` models of the zoo, sequentially (one child process per
  model, as ``make coverage`` runs) and as Ray tasks on 2 workers: same rows (timings aside), wall time.
* analyze, EfficientNet-Lite0 (80 calibration photos): without and with ``--ray auto``: same ranking, wall time.

    python -m benchmarks.bench_scale                       # everything (~1 h on a busy 2-core machine)
    python -m benchmarks.bench_scale --only eval,coverage  # capacity | eval | lite0 | coverage | analyze
    python -m benchmarks.bench_scale --quick               # small sizes: checks the script, not a result
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._results import write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMING_KEYS = ("fp32_ms", "int8_ms", "speedup", "seconds", "quantize_s", "cpu_s")  # coverage fields that are timings


def _log(msg: str) -> None:
    print(f"[bench_scale] {msg}", file=sys.stderr, flush=True)


def _load() -> str:
    try:
        return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "load unknown"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


def _cli(*args: object, timeout: float = 7200) -> tuple[float, dict[str, Any]]:
    """Run ``ptsq ARGS --json`` in a child process: (wall seconds, the JSON it printed)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ptsq.cli.main", *map(str, args), "--json"], capture_output=True,
                         text=True, env=_env(), cwd=ROOT, timeout=timeout)  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"ptsq {' '.join(map(str, args))} failed: {out.stderr[-2000:]}")
    return time.perf_counter() - t0, json.loads(out.stdout)


# ------------------------------------------------------------------------------------------- data
def fashion_tree(limit: int | None = None) -> Path:
    """The Fashion-MNIST test set as PNG files, root/<class index>/<i>.png, written once (complete or absent)."""
    from examples.reference import fashion as f
    from PIL import Image

    from ptsq.cache import cache_root

    images, labels = f.fashion_test()
    n = len(images) if limit is None else min(limit, len(images))
    root = cache_root() / "datasets" / f"fashion-mnist-t10k-png-{n}"
    if (root / ".complete").exists():
        return root
    tmp = Path(tempfile.mkdtemp(prefix=".fashion-", dir=root.parent if root.parent.exists() else None))
    _log(f"writing {n} Fashion-MNIST test images as PNG files into {root} (once)")
    for i in range(n):
        folder = tmp / str(int(labels[i]))
        folder.mkdir(exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    (tmp / ".complete").write_text(str(n))
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def fashion_models(work: Path) -> tuple[Any, Any, Path]:
    """FashionResNet fp32, its int8 artifact (calibrated on 512 training images) and the artifact's path."""
    from examples.reference import fashion as f

    import ptsq

    model = f.fashion_net()
    x = f.preprocess(f.fashion_train_subset(512, seed=0)[0])
    calib = [x[i : i + 64] for i in range(0, len(x), 64)]
    qm = ptsq.quantize(model, calib, progress=False, preprocess=ptsq.Preprocess(**f.PREPROCESS))
    path = qm.save(work / "fashion_int8.pt", force=True)
    return model, ptsq.load(path), path


def lite0_models(work: Path) -> tuple[Any, Any, Path]:
    from examples.reference import imagenet

    import ptsq
    from ptsq.data import CalibrationImages

    model = imagenet.efficientnet_lite0()
    pre = ptsq.Preprocess(**imagenet.PREPROCESS)
    calib_dir = work / "lite0_calib"
    imagenet.write_calibration_photos(calib_dir, n=80, seed=0)
    qm = ptsq.quantize(model, CalibrationImages(calib_dir, pre, num=80, batch_size=16), progress=False, preprocess=pre)
    path = qm.save(work / "lite0_int8.pt", force=True)
    return model, ptsq.load(path), path


# ------------------------------------------------------------------------------------- CPU seconds
def _kind(cmdline: str, name: str) -> str:
    if "MapWorker" in name or "MapWorker" in cmdline:
        return "workers"
    if "default_worker" in cmdline or name.startswith("ray::"):
        return "idle workers"
    return "ray daemons"  # gcs_server, raylet, Ray's monitors and agents


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process (kind "driver") and of every Ray process it started, with its kind.

    A wall time on a shared machine says how busy the other jobs were; these say what each side of a run
    cost. Processes that have ended are not counted (their CPU cannot be read any more)."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    out = {me.pid: ("driver", t.user + t.system)}
    for p in me.children(recursive=True):
        try:
            t, cmd, name = p.cpu_times(), " ".join(p.cmdline()), p.name()
        except psutil.Error:
            continue
        out[p.pid] = (_kind(cmd, name), t.user + t.system)
    return out


def cpu_spent(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by kind (a process counts as what it is at the end: an idle
    worker that became an evaluation actor counts as a worker), plus the busiest worker's."""
    out: dict[str, float] = {"driver": 0.0, "workers": 0.0, "idle workers": 0.0, "ray daemons": 0.0}
    busiest = 0.0
    for pid, (kind, cpu) in after.items():
        spent = cpu - before.get(pid, (kind, 0.0))[1]
        out[kind] = out.get(kind, 0.0) + spent
        if kind == "workers":
            busiest = max(busiest, spent)
    out["busiest worker"] = busiest
    return out


# ---------------------------------------------------------------------------------- warm evaluation
def warm_eval(models: list[Any], data: Path, rounds: int, batch_size: int) -> dict[str, Any]:
    """One process vs a warm local Ray instance with 1 and 2 workers, interleaved; all at 1 torch thread each."""
    import torch

    import ptsq
    from ptsq.distributed.cluster import Cluster

    names = ["fp32", "int8"]
    times: dict[str, list[float]] = {"one process": [], "ray, 1 worker": [], "ray, 2 workers": []}
    cpu: dict[str, list[dict[str, float]]] = {k: [] for k in times}
    loads: dict[str, list[float]] = {k: [] for k in times}  # 1-minute load average after each measured run
    results: dict[str, Any] = {}
    with Cluster("auto") as cluster:
        for r in range(rounds + 1):  # round 0 warms up: worker processes start, Python and torch load
            for label in times:
                torch.set_num_threads(1)
                workers = None if label == "one process" else int(label.split(", ")[1][0])
                c0, t0 = cpu_by_process(), time.perf_counter()
                res = ptsq.evaluate(models, data, names=names, batch_size=batch_size,
                                    ray=cluster if workers else None, workers=workers, threads=1)  # fmt: skip
                seconds = time.perf_counter() - t0
                spent = cpu_spent(c0, cpu_by_process())
                if r:
                    times[label].append(seconds)
                    cpu[label].append(spent)
                    loads[label].append(os.getloadavg()[0])
                results[label] = res.to_dict()
                shown = ", ".join(f"{k} {v:.2f}" for k, v in spent.items())
                _log(f"round {r}: {label}: {seconds:.1f} s; CPU s: {shown} ({_load()})")
    n = results["one process"]["data"]["images"]
    same = all(v == results["one process"] for v in results.values())
    return {"images": n, "seconds": {k: statistics.median(v) for k, v in times.items()}, "same": same,
            "result": results["one process"], "cpu": {k: _median_cpu(v) for k, v in cpu.items()},
            "load": {k: f"load {min(v):.1f}-{max(v):.1f}" for k, v in loads.items()}}  # fmt: skip


def _median_cpu(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per kind, the median over rounds; "busiest worker": the CPU of the worker that did the most."""
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}


def cpu_rows(what: str, warm: dict[str, Any]) -> list[list[Any]]:
    """Where the CPU went in each warm run, and what the runs would take if each process had a core of its own.

    CPU-bound estimate: the driver's CPU (listing files, folding outputs in: it runs before, between and
    after the workers' batches) plus the busiest worker's CPU. It ignores waiting on one another, so it is a
    lower bound; its ratio between 1 and 2 workers is the speed-up the work allows, whatever the load.
    """
    rows = []
    est = {}
    for label, c in warm["cpu"].items():
        est[label] = c["driver"] + c["busiest worker"]
        split = f"driver {c['driver']:.2f}, workers {c['workers']:.2f} (busiest {c['busiest worker']:.2f}), " \
                f"Ray's daemons and idle workers {c['ray daemons'] + c['idle workers']:.2f}"  # fmt: skip
        rows.append([f"{what}: CPU seconds by process", label, None, None, "", f"{split}; {warm['load'][label]}"])
    base = est["ray, 1 worker"]
    for row, label in zip(rows, est):
        row[-1] += f"; CPU-bound estimate {est[label]:.2f} s"
        if label == "ray, 2 workers":
            row[-1] += f" ({base / est[label]:.2f}x the 1-worker throughput)"
        if label == "ray, 1 worker":
            row[-1] += f" ({(est[label] / est['one process'] - 1) * 100:+.0f}% vs one process)"
    return rows


def part_eval(args: Any, work: Path) -> list[list[Any]]:
    data = fashion_tree(1000 if args.quick else None)
    fp32, int8, art = fashion_models(work)
    warm = warm_eval([fp32, int8], data, 1 if args.quick else args.rounds, 32)
    s, n = warm["seconds"], warm["images"]
    base = s["one process"]
    m = {r["label"]: r for r in warm["result"]["models"]}
    rows = []
    for label, sec in s.items():
        note = "" if label == "one process" else f"{(sec / base - 1) * 100:+.0f}% time vs one process"
        if label == "ray, 2 workers":
            note = f"{s['ray, 1 worker'] / sec:.2f}x the 1-worker throughput"
        note = f"{note}; {warm['load'][label]}" if note else warm["load"][label]
        rows.append([f"eval Fashion-MNIST ({n} PNG files), warm instance", label, round(sec, 1), round(n / sec),
                     "yes" if warm["same"] else "NO", note])  # fmt: skip
    # end to end through the CLI: Ray's start-up and shutdown included
    spec = "examples.reference.fashion:fashion_net"
    cli: dict[str, tuple[float, dict[str, Any]]] = {}
    cli_load: dict[str, str] = {}
    variants = {
        "one process": ("--threads", "1"),
        "ray auto, 1 worker": ("--ray", "auto", "--workers", "1"),
        "ray auto, 2 workers": ("--ray", "auto", "--workers", "2"),
    }
    for label, extra in variants.items():
        cli[label] = _cli("eval", spec, art, "--data", data, *extra)
        cli_load[label] = f"load {os.getloadavg()[0]:.1f}"
        _log(f"cli {label}: {cli[label][0]:.1f} s ({_load()})")
    same_cli = all(v[1] == cli["one process"][1] for v in cli.values())
    for label, (sec, _) in cli.items():
        rows.append([f"ptsq eval (CLI, start-up included), {n} images", label, round(sec, 1), round(n / sec),
                     "yes" if same_cli else "NO", cli_load[label]])  # fmt: skip
    top1 = f"fp32 top-1 {m['fp32']['top1']:.4f}, int8 {m['int8']['top1']:.4f}, agreement "
    top1 += f"{m['int8']['fidelity']['top1_agreement']:.4f}, SQNR {m['int8']['fidelity']['sqnr_db']:.1f} dB"
    rows[0][-1] = (rows[0][-1] + "; " if rows[0][-1] else "") + top1
    return rows + cpu_rows(f"eval Fashion-MNIST ({n} PNG files)", warm)


def part_lite0(args: Any, work: Path) -> list[list[Any]]:
    from examples.reference import imagenet

    photos = work / "lite0_photos"
    imagenet.write_calibration_photos(photos / "all", n=48 if args.quick else 320, seed=7)
    fp32, int8, _ = lite0_models(work)
    warm = warm_eval([fp32, int8], photos, 1 if args.quick else args.rounds, 16)
    s, n = warm["seconds"], warm["images"]
    rows = []
    for label, sec in s.items():
        rows.append([f"eval EfficientNet-Lite0 fp32 + int8 ({n} photos, 224x224)", label, round(sec, 1),
                     round(n / sec, 1), "yes" if warm["same"] else "NO",
                     f"{1000 * sec / n:.0f} ms per image (both models)"])  # fmt: skip
    return rows + cpu_rows(f"eval EfficientNet-Lite0 fp32 + int8 ({n} photos)", warm)


# -------------------------------------------------------------------------------------- coverage
def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in sorted(rows, key=lambda r: r["key"])]


def part_coverage(args: Any, work: Path) -> list[list[Any]]:
    limit = 4 if args.quick else args.coverage_models
    runs = {}
    cov_load: dict[str, str] = {}
    for label, extra in (
        ("one child process at a time", ()),
        ("ray auto, 2 workers", ("--ray", "auto", "--workers", "2")),
    ):
        out = work / f"coverage_{len(runs)}.json"
        t0 = time.perf_counter()
        # no timing may decide what is quantized (speed guard, speed check), or rows could not be compared
        subprocess.run([sys.executable, "-m", "benchmarks.bench_coverage", "--limit", str(limit), "--results",
                        str(out), "--speed-guard", "0", "--no-speed-check", *extra], check=True, env=_env(),
                       cwd=ROOT)  # fmt: skip
        runs[label] = (time.perf_counter() - t0, json.loads(out.read_text())["rows"])
        _log(f"coverage {label}: {runs[label][0]:.0f} s ({_load()})")
        cov_load[label] = f"load {os.getloadavg()[0]:.1f}"
    (seq_s, seq_rows), (_, ray_rows) = runs.values()
    same = _comparable(seq_rows) == _comparable(ray_rows)
    ok = sum(r["status"] == "ok" for r in seq_rows)

    def note(i: int, label: str, sec: float, rows: list[dict[str, Any]]) -> str:
        # the models' own CPU (in their processes; start-up and Ray's connection not included): the same
        # on both sides unless the workers do more work, whatever the wall times say about the load
        cpu = sum(r.get("cpu_s", 0.0) for r in rows)
        jobs = sum(r.get("seconds", 0.0) for r in rows)
        text = f"models' CPU {cpu:.0f} s over {jobs:.0f} s of their wall time; {cov_load[label]}"
        return text if i == 0 else f"{seq_s / sec:.2f}x shorter; {text}"

    return [
        [f"make coverage, first {limit} models ({ok} quantized)", label, round(sec, 1), None,
         "yes" if same else "NO", note(i, label, sec, rows)]
        for i, (label, (sec, rows)) in enumerate(runs.items())
    ]  # fmt: skip


# --------------------------------------------------------------------------------------- analyze
def part_analyze(args: Any, work: Path) -> list[list[Any]]:
    from examples.reference import imagenet

    calib = work / "analyze_calib"
    imagenet.write_calibration_photos(calib, n=16 if args.quick else 80, seed=0)
    base = ("analyze", "examples.reference.imagenet:efficientnet_lite0", "--calib", calib, "--preset", "effnet-lite",
            "--input-size", "224", "--batch-size", "16")  # fmt: skip
    # untimed: the speed guard's verdicts for these layers are measured once per machine and cached; the
    # timed runs below both find them cached, so neither pays for them
    _cli("quantize", *base[1:], "-o", work / "lite0_warm.pt", "--force")
    one_s, one = _cli(*base)
    _log(f"analyze one process: {one_s:.0f} s ({_load()})")
    ray_s, many = _cli(*base, "--ray", "auto")
    _log(f"analyze ray auto: {ray_s:.0f} s ({_load()})")
    same_rank = [r["name"] for r in one["layers"]] == [r["name"] for r in many["layers"]]
    same = one == many
    n = len(one["layers"])
    return [
        [f"analyze EfficientNet-Lite0 ({n} layers)", "one process", round(one_s, 1), None, "yes" if same else "NO", ""],
        [f"analyze EfficientNet-Lite0 ({n} layers)", "ray auto (2 CPUs)", round(ray_s, 1), None,
         "yes" if same else ("same ranking" if same_rank else "NO"), f"{one_s / ray_s:.2f}x shorter"],
    ]  # fmt: skip


def _spin(n: int) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i
    return time.perf_counter() - t0


def part_capacity(args: Any, work: Path) -> list[list[Any]]:
    """How many cores' worth two CPU-bound processes get here right now: the ceiling of any 2-worker speed-up."""
    import multiprocessing as mp

    n = 3_000_000 if args.quick else 30_000_000
    one = _spin(n)
    with mp.get_context("spawn").Pool(2) as pool:
        t0 = time.perf_counter()
        pool.map(_spin, [n, n])
        two = time.perf_counter() - t0
    note = f"{2 * one / two:.2f} cores' worth of throughput (1 process: {one:.1f} s); load {os.getloadavg()[0]:.1f}"
    return [["machine: the same CPU-bound loop in 1 process, then in 2 at once", "2 processes", round(two, 1), None,
             "", note]]  # fmt: skip


CPU_NOTES = [
    "CPU seconds by process: read from the kernel for this process (the driver) and every Ray process it "
    "started, before and after each warm run (medians over rounds). The CPU-bound estimate (driver + busiest "
    "worker) is what the run would take if every process had a core of its own; its 1- vs 2-worker ratio "
    "holds whatever the load.",
    "Linux shares the CPU between sessions first (autogroup scheduling), then between a session's processes: "
    "while another session runs a CPU-bound job, all of this benchmark's processes together get about one "
    "core, however many workers run and whatever their nice value. The capacity row shows what this run got.",
]

PARTS = {
    "capacity": part_capacity, "eval": part_eval, "lite0": part_lite0, "coverage": part_coverage,
    "analyze": part_analyze,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_scale", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help=f"comma-separated parts: {', '.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="small sizes (checks the script; not a result)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the warm evaluations")
    ap.add_argument("--coverage-models", type=int, default=16, help="models of the coverage comparison")
    args = ap.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        _log("Ray is not installed (pip install 'ptsq[ray]'): nothing measured")
        return 0
    parts = [p.strip() for p in args.only.split(",") if p.strip()] or list(PARTS)
    rows: list[list[Any]] = []
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="ptsq-scale-") as d:
        for name in parts:
            _log(f"== {name} ({_load()})")
            rows += PARTS[name](args, Path(d))
    if args.quick:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    previous = HERE / "results" / "scale.json"
    if args.only and previous.exists():  # keep the other parts' rows
        old = json.loads(previous.read_text())["rows"]
        kinds = {r[0].split(" (")[0].split(",")[0] for r in rows}
        rows = [r for r in old if r[0].split(" (")[0].split(",")[0] not in kinds] + rows
    write_section(
        "scale",
        title="Scale out on Ray (--ray): identical figures, throughput per worker, fan-out wall time",
        columns=["workload", "run", "wall s", "images/s", "same figures as one process", "note"],
        rows=rows,
        command=f"python -m benchmarks.bench_scale{' --only ' + args.only if args.only else ''}",
        order=80,
        notes=[
            f"Machine load when the run started: {load_before}; other jobs shared the 2 cores, so wall times and "
            "ratios are indicative (interleaved rounds, medians).",
            "Warm instance: one local Ray instance started once in the benchmark process, and a warm-up round "
            "(worker processes started, Python and torch loaded; they stay up between evaluations on one "
            "cluster); each measured evaluation still ships and loads the models. Every run uses 1 torch thread "
            "per worker; 'one process' is the single-process path at 1 thread. The CLI rows include starting "
            "and stopping Ray.",
            "'same figures': the JSON of the result (counts, top-1/top-5, agreement, KL, SQNR, cosine; coverage "
            "rows without their timings; analyze's whole report) compared for equality with the one-process run.",
            *CPU_NOTES,
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

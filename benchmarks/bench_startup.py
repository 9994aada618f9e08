"""Start-up time of the CLI as a user meets it: ``ptsq --help``, each ``ptsq CMD --help``, and ``ptsq info``
on an artifact of every engine, each as a whole new process (median of several runs).

Targets: help under 1 s, info under 2 s. ``--before COMMIT`` also measures that commit's code (a
``git archive`` of it in a temporary folder), interleaved with the current code run by run, and keeps
its figures in the results JSON with their date and load; a later run without ``--before`` re-measures
the current code and keeps the stored "before" figures as they were.

Run from the repo root: ``python -m benchmarks.bench_startup`` (``--runs 5``, ``--before 45ddb3a``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {"fx": ".pt", "pt2e": ".pt2", "onnx": ".onnx", "openvino": ".ov", "auto": ".bin"}
HELP_TARGET_S, INFO_TARGET_S = 1.0, 2.0

MODEL_PY = """
from torch import nn


def tiny():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
"""


def ptsq_command() -> list[str]:
    """The console script installed next to this Python, as a user runs it."""
    script = Path(sys.executable).with_name("ptsq")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ptsq.cli.main"]


def make_artifacts(folder: Path) -> dict[str, Path]:
    """One small artifact per engine, written by the current code through the CLI."""
    import numpy as np
    from PIL import Image

    (folder / "tiny_model.py").write_text(MODEL_PY)
    photos = folder / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = {}
    for engine, suffix in ENGINES.items():
        path = folder / f"tiny_{engine}{suffix}"
        t0 = time.perf_counter()
        subprocess.run(
            [*ptsq_command(), "quantize", "tiny_model.py:tiny", "--calib", "photos", "--input-size", "32",
             "--num-calib", "16", "--batch-size", "8", "--speed-guard", "0", "--engine", engine, "-o", path.name,
             "--quiet"],
            cwd=folder, env=env, check=True,
        )  # fmt: skip
        print(f"made {path.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out[engine] = path
    return out


def command_names() -> list[str]:
    import typer

    from ptsq.cli.main import app

    return list(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def checkout(commit: str, folder: Path) -> Path:
    """The source tree of ``commit`` (git archive), for measuring older code beside the current one."""
    tar = folder / "src.tar"
    with open(tar, "wb") as f:
        subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(tar) as t:
        t.extractall(folder / "tree", filter="data")
    return folder / "tree" / "src"


def time_once(argv: list[str], src: Path, cwd: Path) -> float | None:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    rc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    seconds = time.perf_counter() - t0
    return seconds if rc == 0 else None


def measure(cases: dict[str, list[str]], trees: dict[str, Path], cwd: Path, runs: int) -> dict[str, dict[str, float]]:
    """Median seconds per (tree, case); trees and cases interleaved in every round."""
    times: dict[str, dict[str, list[float]]] = {t: {c: [] for c in cases} for t in trees}
    failed: set[tuple[str, str]] = set()
    for r in range(runs):
        for case, argv in cases.items():
            for tree, src in trees.items():
                s = time_once(argv, src, cwd)
                if s is None:
                    failed.add((tree, case))
                else:
                    times[tree][case].append(s)
        print(f"round {r + 1}/{runs} done", file=sys.stderr)
    for tree, case in sorted(failed):
        print(f"warning: '{' '.join(cases[case][-3:])}' failed with the {tree} code", file=sys.stderr)
    return {t: {c: round(statistics.median(v), 3) for c, v in cs.items() if v} for t, cs in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", metavar="COMMIT", help="also measure this commit's code, interleaved")
    args = ap.parse_args()

    from benchmarks._results import RESULTS, write_section

    stored = RESULTS / "startup.json"
    before = json.loads(stored.read_text())["extra"].get("before") if stored.exists() else None
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        arts = make_artifacts(work)
        exe = ptsq_command()
        cases = {"ptsq --help": [*exe, "--help"]}
        cases.update({f"ptsq {c} --help": [*exe, c, "--help"] for c in command_names()})
        cases.update({f"ptsq info ({e}, {p.suffix})": [*exe, "info", p.name] for e, p in arts.items()})
        trees = {"after": ROOT / "src"}
        if args.before:
            trees["before"] = checkout(args.before, work)
        medians = measure(cases, trees, work, args.runs)
    load_end = os.getloadavg()[0]
    if args.before:
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        before = {"commit": args.before, "date": date, "load": [round(load_start, 1), round(load_end, 1)],
                  "runs": args.runs, "seconds": medians["before"]}  # fmt: skip
    old = (before or {}).get("seconds", {})
    rows = []
    for case in cases:
        target = INFO_TARGET_S if case.startswith("ptsq info (") else HELP_TARGET_S
        now, was = medians["after"].get(case), old.get(case)
        rows.append([
            case, was, now, f"{was / now:.1f}x" if was and now else None, f"< {target:.0f} s",
            None if now is None else ("yes" if now < target else "no"),
        ])  # fmt: skip
    notes = [
        f"Each figure is the median wall time of {args.runs} runs of a new process (the `ptsq` console script), "
        "output discarded; the commands take turns round by round. Artifacts: a 3-layer conv net, one per engine "
        "('auto' keeps whichever engine wins, in its own format).",
        f"Load average (1 min) when this run started/ended: {load_start:.1f}/{load_end:.1f} on a shared machine; "
        f"script time {time.perf_counter() - t0:.0f} s.",
    ]
    if before:
        how = "interleaved with the current code in this run" if args.before else "in an earlier run"
        notes.append(
            f"'before' = commit {before['commit']} (help imported torch and the engines; info loaded the whole "
            f"model and its runtime), measured {before['date']} {how}, load {before['load'][0]}/{before['load'][1]}."
        )
    write_section(
        "startup",
        title="Start-up: help and info as a new process",
        columns=["command", "before (s)", "now (s)", "faster", "target", "met"],
        rows=rows,
        command="python -m benchmarks.bench_startup" + (f" --before {args.before}" if args.before else ""),
        order=5,
        notes=notes,
        extra={"before": before, "now": medians["after"]},
    )


if __name__ == "__main__":
    main()

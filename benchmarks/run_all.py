"""`make bench`: run every benchmarks/bench_*.py (or those named) and render BENCHMARKS.md."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if not argv:  # the model-zoo coverage suite takes an hour: 'make coverage' or name it
        scripts = [s for s in scripts if s.stem != "bench_coverage"]
    if argv:
        scripts = [s for s in scripts if any(a in s.stem for a in argv)]
    failed = []
    for script in scripts:
        t0 = time.perf_counter()
        print(f"== {script.name}", file=sys.stderr, flush=True)
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{script.stem}"], cwd=HERE.parent)
        print(f"== {script.name}: exit {rc} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if rc:
            failed.append(script.name)
    subprocess.check_call([sys.executable, "-m", "benchmarks.render"], cwd=HERE.parent)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

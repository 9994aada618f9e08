"""Child process for :func:`ptsq.bench.peak_memory`: load one model, run it, report peak resident memory.

Run as ``python -m ptsq._memprobe '<json>'`` with keys ``artifact`` (a path) or ``spec`` / ``weights`` /
``trust_pickle``, plus ``shape``, ``runs`` and ``settings`` (a list of [threads, batch size]; default: ``threads``
and the batch of ``shape``). Prints one JSON line: ``baseline_kb`` (peak RSS
after importing torch and ptsq), ``loaded_kb`` (after loading the model) and ``peak_kb`` (after the runs),
all from ``getrusage(RUSAGE_SELF).ru_maxrss`` of this fresh process, so no other model shares the figure.
On Linux it also resets the kernel's high-water mark after the imports (``/proc/self/clear_refs``) and
reports ``base_rss_kb`` (resident then) and ``hwm_kb`` (peak since then): their difference is what the
model itself needed, not hidden by a higher peak during ``import torch``. Each setting resets the mark again
before its runs, so ``settings[i].hwm_kb`` is the peak resident memory while running at that setting.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def _maxrss_kb() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # macOS reports bytes, Linux kilobytes


def _status_kb(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _settings(job: dict) -> list[tuple[int, int]]:
    """(threads, batch) pairs to measure, smallest batch first so one setting's freed memory that the
    allocator keeps cannot inflate a smaller setting's figure."""
    pairs = job.get("settings") or [[int(job.get("threads", 1)), int(job["shape"][0])]]
    return sorted({(int(t), int(b)) for t, b in pairs}, key=lambda tb: (tb[1], tb[0]))


def main(argv: list[str]) -> int:
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    job = json.loads(argv[0])
    import torch

    import ptsq  # noqa: F401  (imported before the baseline, as the parent has it)
    from ptsq.models import load_model
    from ptsq.quantized import load

    settings = _settings(job)
    torch.set_num_threads(settings[0][0])
    shape = list(job["shape"])
    x = torch.randn(max(b for _, b in settings), *shape[1:])
    baseline = _maxrss_kb()
    reset = _reset_peak()
    base_rss = _status_kb("VmRSS") if reset else None
    if "artifact" in job:
        model = load(job["artifact"])
    else:
        model = load_model(job["spec"], weights=job.get("weights"), trust_pickle=bool(job.get("trust_pickle"))).model
    loaded = _maxrss_kb()
    load_hwm = _status_kb("VmHWM") if reset else None
    rows = []
    with torch.inference_mode():
        for threads, batch in settings:
            torch.set_num_threads(threads)
            xb = x[:batch].contiguous()
            fresh = _reset_peak()  # this setting's own high-water mark
            for _ in range(int(job.get("runs", 3))):
                model(xb)
            hwm = _status_kb("VmHWM") if fresh else None
            rows.append({"threads": threads, "batch_size": batch, "hwm_kb": hwm, "maxrss_kb": _maxrss_kb()})
    hwm = max([load_hwm or 0] + [r["hwm_kb"] or 0 for r in rows]) if reset else None  # since the imports
    print(json.dumps({"baseline_kb": baseline, "loaded_kb": loaded, "peak_kb": _maxrss_kb(), "base_rss_kb": base_rss,
                      "hwm_kb": hwm, "settings": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

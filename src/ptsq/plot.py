"""Benchmark results -> a PNG: median latency per model, grouped by thread count (and batch size).

matplotlib is optional (``pip install 'ptsq[plot]'``); the Agg backend is used, so no display is
needed. The file is written atomically (a temporary file beside it, then a rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ptsq.errors import ConfigError


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--plot needs matplotlib, which is not installed", "pip install 'ptsq[plot]'") from None


def plot_latency(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Bar chart of median latency (with p90 whiskers) from ``BenchResult.to_dict()``; returns the path."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ptsq.artifact import atomic_path

    timings = data["timings"]
    labels = list(dict.fromkeys(t["label"] for t in timings))
    settings = list(dict.fromkeys((t["threads"], t["batch_size"]) for t in timings))
    several_batches = len({b for _, b in settings}) > 1
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(settings) + 2), 4.0), dpi=100)
    try:
        for i, label in enumerate(labels):
            rows = {(t["threads"], t["batch_size"]): t for t in timings if t["label"] == label}
            xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(settings))]
            med = [rows[s]["median_ms"] if s in rows else 0.0 for s in settings]
            p90 = [rows[s]["p90_ms"] - rows[s]["median_ms"] if s in rows else 0.0 for s in settings]
            short = label if len(label) <= 40 else "…" + label[-39:]
            bars = ax.bar(xs, med, width, yerr=[[0] * len(p90), p90], capsize=3, label=short)
            for b, s in zip(bars, settings):
                if s in rows and rows[s].get("speedup") and i:
                    ax.annotate(f"{rows[s]['speedup']:.2f}x", (b.get_x() + b.get_width() / 2, b.get_height()),
                                ha="center", va="bottom", fontsize=7)  # fmt: skip
        ticks = [f"{t} thread{'s' if t > 1 else ''}" + (f"\nbatch {b}" if several_batches else "") for t, b in settings]
        ax.set_xticks(range(len(settings)), ticks)
        ax.set_ylabel("median latency, ms (whisker: p90)")
        m = data.get("machine", {})
        ax.set_title(f"ptsq bench: {m.get('cpu', '?')}, torch {m.get('torch', '?')}", fontsize=8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out = Path(path)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out


__all__ = ["plot_latency", "require_matplotlib"]

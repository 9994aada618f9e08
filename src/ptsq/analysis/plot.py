"""A bar chart of per-layer sensitivity (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

from ptsq.analysis.sensitivity import SensitivityReport


def plot_sensitivity(report: SensitivityReport, path: str | Path, *, force: bool = True, top: int = 30) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ptsq import artifact

    rows = report.layers[:top]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
    names = [r.name for r in rows][::-1]
    gains = [max(r.gain_db, -5.0) if r.gain_db == r.gain_db else 0.0 for r in rows][::-1]
    colors = ["tab:red" if r.name in report.keep_fp32 else "tab:blue" for r in rows][::-1]
    ax.barh(names, gains, color=colors)
    ax.set_xlabel("output SQNR gain if kept alone in fp32 (dB)")
    ax.set_title(f"ptsq analyze: all-int8 output SQNR {report.baseline_sqnr_db:.1f} dB (red = keep in fp32)")
    fig.tight_layout()
    out = Path(path)

    def save(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=100)

    try:
        artifact.write(out, save, force=force)
    finally:
        plt.close(fig)
    return out

"""Bar charts as inline SVG text: no plotting library, no fonts or scripts to fetch, readable as is.

Every chart has a ``<title>`` and ``aria-label`` and each bar a ``<title>`` with its exact figures, so
hovering (or a screen reader) gives the numbers; the writers also print them in a table beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#3b6fb6", "#e08a2c", "#3f9b5a", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#7f7f7f")
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v < hi + step * 0.999:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _num(v: float) -> str:
    return f"{v:.4g}"


def _t(x: float, y: float, text: str, anchor: str = "middle", size: int = 11, extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="#222" '
            f'{extra}>{escape(text)}</text>')  # fmt: skip


def grouped_bars(
    groups: Sequence[str],
    series: Sequence[str],
    values: dict[tuple[str, str], tuple[float, float | None, str]],
    *,
    title: str,
    unit: str,
    width: int = 760,
    height: int = 340,
) -> str:
    """Vertical bars: one group per x position, one bar per series; ``values[(series, group)]`` is
    (height, whisker top or None, annotation above the bar)."""
    left, right, top = 62, 16, 34
    plot_w = width - left - right
    longest = max((len(s) for s in series), default=1)
    cols = max(1, min(3, int(plot_w // (24 + 6.4 * min(longest, 60)))))  # legend columns that fit the labels
    bottom = 46 + 16 * math.ceil(len(series) / cols)
    height = max(height, top + bottom + 160)
    plot_h = height - top - bottom
    # the axis follows the medians; a whisker far above them (one slow run on a busy machine) is clipped
    meds = [v[0] for v in values.values()] or [1.0]
    highs = [min(max(v[0], v[1] or v[0]), 1.6 * max(meds)) for v in values.values()] or [1.0]
    ticks = nice_ticks(0.0, max(highs) * 1.08)
    ymax = ticks[-1] or 1.0

    def y(v: float) -> float:
        return top + plot_h * (1 - v / ymax)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
        _t(left, 18, title, "start", 13, 'font-weight="600"'),
    ]
    for tv in ticks:
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tv):.1f}" y2="{y(tv):.1f}" stroke="#e3e3e3"/>')
        out.append(_t(left - 6, y(tv) + 4, _num(tv), "end", 10))
    out.append(_t(14, top + plot_h / 2, unit, "middle", 11, f'transform="rotate(-90 14 {top + plot_h / 2:.1f})"'))
    gw = plot_w / max(1, len(groups))
    bw = min(56.0, gw * 0.8 / max(1, len(series)))
    for gi, g in enumerate(groups):
        cx = left + gw * (gi + 0.5)
        out.append(_t(cx, top + plot_h + 16, g, "middle", 11))
        for si, s in enumerate(series):
            if (s, g) not in values:
                continue
            v, whisker, note = values[(s, g)]
            x = cx + (si - (len(series) - 1) / 2) * bw - bw / 2
            colour = PALETTE[si % len(PALETTE)]
            tip = f"{s}, {g}: {_num(v)} {unit}" + (f" (p90 {_num(whisker)})" if whisker is not None else "")
            out.append(
                f'<rect class="bar" x="{x + 1:.1f}" y="{y(v):.1f}" width="{bw - 2:.1f}" height="{y(0) - y(v):.1f}" '
                f'fill="{colour}"><title>{escape(tip)}</title></rect>'
            )
            top_y = y(v)
            if whisker is not None and whisker > v:
                wx, wy = x + bw / 2, y(min(whisker, ymax))
                out.append(f'<line x1="{wx:.1f}" x2="{wx:.1f}" y1="{y(v):.1f}" y2="{wy:.1f}" stroke="#333"/>')
                if whisker > ymax:  # clipped: an arrow head instead of a cap
                    out.append(f'<path d="M{wx - 4:.1f},{wy + 6:.1f} L{wx:.1f},{wy:.1f} L{wx + 4:.1f},{wy + 6:.1f}" '
                               'fill="none" stroke="#333"/>')  # fmt: skip
                else:
                    out.append(f'<line x1="{wx - 4:.1f}" x2="{wx + 4:.1f}" y1="{wy:.1f}" y2="{wy:.1f}" stroke="#333"/>')
                top_y = wy
            if note:
                out.append(_t(x + bw / 2, top_y - 4, note, "middle", 10))
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#555"/>')
    ly = top + plot_h + 34
    col_w = plot_w / cols
    fits = max(8, int((col_w - 24) / 6.4))
    for si, s in enumerate(series):
        lx, row = left + col_w * (si % cols), ly + 16 * (si // cols)
        label = s if len(s) <= fits else "…" + s[-(fits - 1) :]
        out.append(f'<rect x="{lx:.1f}" y="{row - 9:.1f}" width="10" height="10" fill="{PALETTE[si % len(PALETTE)]}"/>')
        out.append(_t(lx + 14, row, label, "start", 11).replace("</text>", f"<title>{escape(s)}</title></text>"))
    out.append("</svg>")
    return "\n".join(out)


def ranked_bars(
    items: Sequence[tuple[str, float, bool, str]],
    *,
    title: str,
    unit: str,
    width: int = 860,
    max_label: int = 56,
) -> str:
    """Horizontal bars, one per (label, value, highlighted, tooltip), in the given order."""
    row_h = 20
    label_chars = min(max_label, max((len(i[0]) for i in items), default=8))
    left = 14 + int(label_chars * 6.6)
    right, top, bottom = 60, 40, 30
    height = top + bottom + row_h * max(1, len(items))
    vals = [v for _, v, _, _ in items if math.isfinite(v)] or [0.0]
    ticks = nice_ticks(min(0.0, min(vals)), max(0.0, max(vals)) * 1.05 or 1.0)
    lo, hi = ticks[0], ticks[-1]
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + plot_w * (v - lo) / ((hi - lo) or 1.0)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
        _t(14, 18, title, "start", 13, 'font-weight="600"'),
    ]
    for tv in ticks:
        out.append(f'<line x1="{x(tv):.1f}" x2="{x(tv):.1f}" y1="{top - 6}" y2="{height - bottom}" stroke="#e3e3e3"/>')
        out.append(_t(x(tv), height - bottom + 14, _num(tv), "middle", 10))
    out.append(_t(width - right, height - 2, unit, "end", 10))
    for i, (label, v, hot, tip) in enumerate(items):
        yy = top + i * row_h
        shown = label if len(label) <= max_label else "…" + label[-(max_label - 1) :]
        out.append(_t(left - 6, yy + 14, shown, "end", 11).replace("</text>", f"<title>{escape(label)}</title></text>"))
        v = v if math.isfinite(v) else 0.0
        x0, x1 = sorted((x(0.0), x(v)))
        colour = "#c44e52" if hot else "#3b6fb6"
        out.append(f'<rect class="bar" x="{x0:.1f}" y="{yy + 3}" width="{max(1.0, x1 - x0):.1f}" height="{row_h - 6}" '
                   f'fill="{colour}"><title>{escape(tip)}</title></rect>')  # fmt: skip
        out.append(_t(x1 + 4, yy + 14, f"{v:+.1f}", "start", 10))
    out.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 6}" y2="{height - bottom}" stroke="#555"/>')
    out.append("</svg>")
    return "\n".join(out)


__all__ = ["grouped_bars", "nice_ticks", "ranked_bars"]

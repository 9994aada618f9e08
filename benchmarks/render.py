"""Render BENCHMARKS.md from benchmarks/results/*.json (written by the bench_*.py scripts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "BENCHMARKS.md"


def _cell(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v).replace("|", "\\|")


def render(results: Path = HERE / "results") -> str:
    sections = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    sections = [s for s in sections if isinstance(s, dict) and "columns" in s]  # other scripts' raw data files
    sections.sort(key=lambda s: (s.get("order", 50), s["name"]))
    lines = [
        "# ptsq benchmarks",
        "",
        "Every figure below was measured by a script under `benchmarks/` (`make bench` runs them all and",
        "rewrites this file); none is typed by hand. fp32 and int8 are timed in one process, interleaved,",
        "and medians are quoted. Timings on shared machines drift: compare ratios within one table.",
        "",
    ]
    for s in sections:
        m = s["machine"]
        lines += [
            f"## {s['title']}",
            "",
            f"Measured {s['date']} on {m.get('cpu')} ({m.get('cores')} cores; {', '.join(m.get('isa', []))}), "
            f"torch {m.get('torch')}, quantized engine {m.get('quantized_engine')}. Command: `{s['command']}`.",
            "",
            "| " + " | ".join(s["columns"]) + " |",
            "|" + "---|" * len(s["columns"]),
        ]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in s["rows"]]
        lines.append("")
        lines += [f"- {n}" for n in s.get("notes", [])]
        if s.get("notes"):
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    tmp = OUT.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(OUT)
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

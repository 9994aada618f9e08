"""Shared by benchmark scripts: write one section of BENCHMARKS.md as JSON, with machine and date.

Each ``benchmarks/bench_<topic>.py`` measures something and calls :func:`write_section`; ``render.py``
turns every ``results/*.json`` into BENCHMARKS.md. Nothing in the tables is typed by hand.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_section(
    name: str,
    *,
    title: str,
    columns: list[str],
    rows: list[list[Any]],
    command: str,
    order: int = 50,
    notes: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``results/<name>.json`` atomically and return its path."""
    from ptsq.machine import machine_info

    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "name": name,
        "title": title,
        "order": order,
        "command": command,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "columns": columns,
        "rows": rows,
        "notes": notes or [],
        "extra": extra or {},
    }
    out = RESULTS / f"{name}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}", file=sys.stderr)
    return out

"""The pattern corpus (tests/patterns): plain torch.ao FX recipe vs ptsq defaults, per pattern.

    python -m benchmarks.bench_patterns            # run every pattern, write results/patterns.json
    python -m benchmarks.bench_patterns --summary  # print the totals and the notable patterns from the JSON

Each pattern is a tiny model written the way real forward() code is (tests/patterns/catalogue.py).
Both recipes calibrate on the same 6 batches and are compared with fp32 on the same 2 held-back
batches (SQNR over every output tensor). ptsq's artifact is saved and reloaded in the same process
and compared with the in-memory int8 model. One thread; the speed guard only where a pattern asks.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

import torch

from benchmarks._results import RESULTS, write_section

POOR_DB = 10.0  # below this the int8 output is noise, whatever ran without an error


def _plain_cell(p: dict[str, Any]) -> str:
    if p["ok"]:
        return f"{p['sqnr_db']:.1f} dB" + (" (noise)" if p["sqnr_db"] < POOR_DB else "")
    return _local(f"fails in {p['stage']}: {p['error'][:90]}")


def _what_ptsq_did(r: dict[str, Any]) -> str:
    """The fallbacks that matter for this pattern: fp32 ops with a measured or failed int8 path, rewrites."""
    ours = r["ptsq"]
    if not ours["ok"]:
        return f"fails in {ours['stage']}: {ours['error'][:120]}"
    keys = ("failed here", "measured wrong", "cannot be traced", "top-level", "slower")
    did = [f.split(":")[0] + ": " + f.split(":", 1)[1].strip()[:110] for f in ours["fp32_layers"]
           if any(k in f for k in keys)]  # fmt: skip
    said = (
        "in-place",
        "shape computation",
        "integer tensors",
        "example inputs",
        "left out",
        "functional convs",
        "view(s) run as reshape",
    )
    did += [n[:140] for n in ours["notes"] if any(k in n for k in said)]
    if ours.get("save") not in (None, "trace"):
        did.append(f"saved by {ours['save']}")
    return _local("; ".join(dict.fromkeys(did)) or "-")


def _local(text: str) -> str:
    """Source paths relative to the repository (the table is published)."""
    root = str(RESULTS.parent.parent) + os.sep
    return text.replace(root, "")


def run_all() -> list[dict[str, Any]]:
    from tests.patterns.catalogue import PATTERNS
    from tests.patterns.runner import run

    rows = []
    for i, p in enumerate(PATTERNS, 1):
        r = run(p)
        rows.append(r)
        print(f"[{i}/{len(PATTERNS)}] {p.name}: plain {_plain_cell(r['plain'])}; ptsq "
              f"{r['ptsq'].get('sqnr_db', 'fails')}", file=sys.stderr, flush=True)  # fmt: skip
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    plain_ok = [r for r in rows if r["plain"]["ok"]]
    ours_ok = [r for r in rows if r["ptsq"]["ok"]]
    return {
        "patterns": len(rows),
        "plain_runs": len(plain_ok),
        "plain_fails": len(rows) - len(plain_ok),
        "plain_noise": sum(r["plain"]["sqnr_db"] < POOR_DB for r in plain_ok),
        "ptsq_runs": len(ours_ok),
        "ptsq_fails": len(rows) - len(ours_ok),
        "ptsq_below_plain_by_more_than_1db": sum((r["sqnr_gain_db"] or 0) < -1.0 for r in rows),
        "ptsq_worst_gap_db": min((r["sqnr_gain_db"] for r in rows if r["sqnr_gain_db"] is not None), default=None),
        "reload_identical": sum(bool(r["ptsq"].get("reload_identical")) for r in rows),
        "model_unchanged": sum(r["model_and_inputs_unchanged"] for r in rows),
        "both_fail": [r["name"] for r in rows if not r["plain"]["ok"] and not r["ptsq"]["ok"]],
        "plain_fails_ptsq_works": [r["name"] for r in rows if not r["plain"]["ok"] and r["ptsq"]["ok"]],
    }


def write(rows: list[dict[str, Any]], seconds: float) -> None:
    t = totals(rows)
    table = [
        [r["name"], r["what"], _plain_cell(r["plain"]),
         f"{r['ptsq']['sqnr_db']:.1f} dB" if r["ptsq"]["ok"] else "fails",
         "" if r["sqnr_gain_db"] is None else f"{r['sqnr_gain_db']:+.1f}", _what_ptsq_did(r)]
        for r in rows
    ]  # fmt: skip
    write_section(
        "patterns",
        title="Pattern corpus: plain torch.ao FX recipe vs ptsq defaults (SQNR vs fp32)",
        columns=["pattern", "what real code does", "plain torch.ao FX", "ptsq", "Δ dB", "what ptsq did"],
        rows=table,
        command="python -m benchmarks.bench_patterns",
        order=70,
        notes=[
            f"{t['patterns']} patterns: the plain recipe runs on {t['plain_runs']} ({t['plain_noise']} of them give "
            f"noise, below {POOR_DB:g} dB) and fails on {t['plain_fails']}; ptsq quantizes {t['ptsq_runs']}, "
            f"fails on {t['ptsq_fails']}, is more than 1 dB below the plain recipe on "
            f"{t['ptsq_below_plain_by_more_than_1db']} (worst gap {t['ptsq_worst_gap_db']} dB); its artifact "
            f"reloads bit-identical on {t['reload_identical']}, and the model and its inputs are unchanged on "
            f"{t['model_unchanged']}.",
            "Plain recipe: prepare_fx(model, get_default_qconfig_mapping('x86'), first batch) -> 6 calibration "
            "batches -> convert_fx. ptsq: ptsq.quantize(model, 8 batches) (it holds the last 2 back), defaults, "
            "speed guard only on the patterns marked for it. Both are compared with fp32 on the same 2 held-back "
            f"batches. 1 thread; the whole corpus took {seconds:.0f} s here.",
        ],
        extra={"totals": t, "patterns": json.loads(_local(json.dumps(rows)))},
    )


def summary(path: str | None = None) -> str:
    data = json.loads(open(path or RESULTS / "patterns.json").read())
    t, rows = data["extra"]["totals"], data["extra"]["patterns"]
    lines = [
        f"pattern corpus ({data['date']}): {t['patterns']} patterns; plain torch.ao FX runs {t['plain_runs']} "
        f"({t['plain_noise']} of them noise) and fails {t['plain_fails']}; ptsq quantizes {t['ptsq_runs']}, "
        f"fails {t['ptsq_fails']}, >1 dB below plain on {t['ptsq_below_plain_by_more_than_1db']} "
        f"(worst {t['ptsq_worst_gap_db']} dB); reload identical {t['reload_identical']}/{t['patterns']}; "
        f"model unchanged {t['model_unchanged']}/{t['patterns']}",
        f"both fail: {', '.join(t['both_fail']) or 'none'}",
        "where the plain recipe fails or gives noise, what ptsq does instead:",
    ]
    for r in rows:
        if not r["plain"]["ok"] or r["plain"]["sqnr_db"] < POOR_DB:
            lines.append(f"  {r['name']}: plain {_plain_cell(r['plain'])} -> ptsq "
                         f"{r['ptsq'].get('sqnr_db', 'fails')} dB: {_what_ptsq_did(r)}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if "--summary" in argv:
        print(summary())
        return 0
    import time

    os.environ.setdefault("PTSQ_CACHE_DIR", tempfile.mkdtemp(prefix="ptsq-patterns-"))  # fresh speed verdicts
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = run_all()
    write(rows, time.perf_counter() - t0)
    print(summary())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The JSON files a report reads: what ``ptsq bench|eval|analyze --json`` print, checked before use.

A file of the wrong kind (eval's JSON given as --bench), a truncated one, or one with a progress line
mixed in is refused with one line naming the file and what it is, and a hint saying how to write it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ptsq.errors import DataError

KINDS = ("bench", "eval", "analyze")

# the keys (and their JSON types) each command's --json output always has
_SHAPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "bench": {"machine": dict, "timings": list},
    "eval": {"data": dict, "preprocess": dict, "models": list},
    "analyze": {"baseline_sqnr_db": (int, float, type(None)), "samples": int, "layers": list, "keep_fp32": list},
    "quantize": {"output": str, "check": dict, "layers": dict},  # recognised only to say what it is
}
# the keys every row of the command's main list has
_ROWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bench": ("timings", ("label", "kind", "threads", "batch_size", "median_ms", "p90_ms", "speedup")),
    "eval": ("models", ("label", "kind", "fidelity")),
    "analyze": ("layers", ("name", "op", "layer_sqnr_db", "solo_fp32_sqnr_db", "gain_db")),
}
_HOW = {
    "bench": "ptsq bench FP32_MODEL ARTIFACT --json > bench.json",
    "eval": "ptsq eval FP32_MODEL ARTIFACT --data DIR --json > eval.json",
    "analyze": "ptsq analyze MODEL --calib DIR --json > analyze.json",
}


def what_it_is(data: Any) -> str | None:
    """Which command's --json output ``data`` looks like (bench/eval/analyze/quantize), or None."""
    if not isinstance(data, dict):
        return None
    for kind, shape in _SHAPES.items():
        if all(isinstance(data.get(k), t) for k, t in shape.items()):
            return kind
    return None


def _bad(path: Path, kind: str, problem: str) -> DataError:
    return DataError(f"--{kind} '{path}' {problem}", f"write it with: {_HOW[kind]}")


def check_json(data: Any, kind: str, path: Path) -> dict[str, Any]:
    """``data`` if it is what ``ptsq <kind> --json`` writes; else DataError naming the difference."""
    if kind not in KINDS:
        raise ValueError(f"unknown report input kind {kind!r}")
    found = what_it_is(data)
    if found != kind:
        if found == "quantize":
            raise DataError(
                f"--{kind} '{path}' is the output of 'ptsq quantize --json', not of 'ptsq {kind} --json'",
                "pass the artifact itself to 'ptsq report' (its manifest holds the quantize figures)",
            )
        if found is not None:
            raise DataError(
                f"--{kind} '{path}' is the output of 'ptsq {found} --json', not of 'ptsq {kind} --json'",
                f"pass it with --{found} instead",
            )
        if not isinstance(data, dict):
            raise _bad(path, kind, f"holds a JSON {type(data).__name__}, not the object 'ptsq {kind} --json' prints")
        missing = [k for k, t in _SHAPES[kind].items() if not isinstance(data.get(k), t)]
        raise _bad(path, kind, f"is not what 'ptsq {kind} --json' prints (no valid {', '.join(map(repr, missing))})")
    key, needed = _ROWS[kind]
    for i, row in enumerate(data[key]):
        lacking = [k for k in needed if not isinstance(row, dict) or k not in row]
        if lacking:
            raise _bad(path, kind, f"has a malformed '{key}' entry {i} (missing {', '.join(map(repr, lacking))})")
    if kind in ("bench", "eval") and not data[key]:
        raise _bad(path, kind, f"has no '{key}' entries")
    return data


def load_json(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """Read and check one --bench/--eval/--analyze file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--{kind} '{p}' does not exist" if not p.exists() else f"--{kind} '{p}' is not a file",
                        f"check the path, or write it with: {_HOW[kind]}")  # fmt: skip
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read --{kind} '{p}': {exc.strerror or exc}", "check the file's permissions") from None
    except UnicodeDecodeError:
        raise _bad(p, kind, "is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"--{kind} '{p}' is not valid JSON (line {exc.lineno}: {exc.msg})",
            f"write it with: {_HOW[kind]} (stdout only: progress and warnings go to stderr)",
        ) from None
    return check_json(data, kind, p)


__all__ = ["KINDS", "check_json", "load_json", "what_it_is"]

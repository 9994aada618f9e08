"""One place that decides how results reach the user: rich tables, JSON, or nothing (--quiet)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become strings, unknown objects their str()."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        # pipes and CI logs get wide tables instead of rich's 80-column default
        self.console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        self.err = Console(file=sys.stderr, highlight=False, width=None if sys.stderr.isatty() else 160)
        self.warnings: list[str] = []

    @property
    def progress(self) -> bool:
        return not (self.json_mode or self.quiet) and sys.stderr.isatty()

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if not self.json_mode:
            self.err.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)

    def info(self, message: str) -> None:
        """A progress note on stderr, prefixed so scripts can tell it from errors and warnings."""
        if not (self.json_mode or self.quiet):
            self.err.print(f"info: {message}", soft_wrap=True, markup=False)

    def result(self, data: dict[str, Any], render: Callable[[Console, dict[str, Any]], None]) -> None:
        if self.json_mode:
            if self.warnings:
                data = {**data, "warnings": self.warnings}
            sys.stdout.write(json.dumps(_clean(data), indent=1, sort_keys=False) + "\n")
        elif not self.quiet:
            render(self.console, data)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GB"

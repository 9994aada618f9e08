"""Progress bars on stderr for long work; silent when disabled (--quiet, --json, progress=False)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def task(description: str, total: int | None, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield ``update(completed)``; draws a bar with count and ETA on stderr when enabled."""
    if not enabled:
        yield lambda _done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=sys.stderr)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        tid = bar.add_task(description, total=total)
        yield lambda done: bar.update(tid, completed=done)

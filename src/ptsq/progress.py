"""Progress bars on stderr for long work; silent when disabled (--quiet, --json, progress=False)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def task(description: str, total: int | None, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``update(completed, text=None)``; draws a bar with count and ETA on stderr when enabled.

    ``text`` replaces what the bar says it is doing (e.g. the loss so far), after ``description``.
    """
    if not enabled:
        yield lambda _done, _text=None: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=sys.stderr)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        tid = bar.add_task(description, total=total)

        def update(done: int, text: str | None = None) -> None:
            if text is None:
                bar.update(tid, completed=done)
            else:
                bar.update(tid, completed=done, description=f"{description} {text}")

        yield update

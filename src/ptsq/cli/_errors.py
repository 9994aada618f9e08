"""Turn failures inside a command into one line + hint + exit code (the only place that does).

Known problems (PtsqError) exit 2 with ``error:`` and ``hint:`` lines; Ctrl-C/SIGTERM exit 2 saying
nothing was written; anything unexpected exits 1 and says how to see the traceback (PTSQ_DEBUG=1).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import typer

from ptsq.errors import Interrupted, PtsqError, first_line

F = TypeVar("F", bound=Callable[..., Any])


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _fail(message: str, hint: str | None, code: int) -> typer.Exit:
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def _debug() -> bool:
    return os.environ.get("PTSQ_DEBUG", "") not in ("", "0")


def guarded(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        old = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except PtsqError as exc:
            if _debug():
                traceback.print_exc()
            raise _fail(exc.message, exc.hint, 2) from None
        except KeyboardInterrupt:
            err = Interrupted("interrupted; nothing was written")
            raise _fail(err.message, err.hint, 2) from None
        except Exception as exc:
            if _debug():
                traceback.print_exc()
            raise _fail(
                f"unexpected {type(exc).__name__}: {first_line(exc, 300)}",
                "set PTSQ_DEBUG=1 to see the traceback, and report it",
                1,
            ) from None
        finally:
            signal.signal(signal.SIGTERM, old)

    return wrapper  # type: ignore[return-value]

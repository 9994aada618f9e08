"""Turn failures inside a command into one line + hint + exit code (the only place that does).

Known problems (PtsqError) exit 2 with ``error:`` and ``hint:`` lines; Ctrl-C/SIGTERM exit 2 saying
nothing was written; anything unexpected exits 1 and says how to see the traceback (PTSQ_DEBUG=1).
Command-line mistakes found while parsing (an unknown option, a malformed value, a missing argument)
take the same two-line form (:func:`usage_error`, used by ``ptsq.cli._group``).
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

try:  # recent typer vendors click
    from typer._click.exceptions import UsageError
except ImportError:  # older typer runs on click itself
    from click.exceptions import UsageError  # type: ignore[no-redef,assignment]

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
            raise _fail(exc.message, exc.hint, getattr(exc, "exit_code", 2)) from None
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


def _ptsq_cause(exc: BaseException) -> PtsqError | None:
    """The PtsqError an option's parser raised, through the wrappers Typer adds (pydantic validation)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PtsqError):
            return seen
        errors = getattr(seen, "errors", None)
        if callable(errors):
            try:
                found = [e.get("ctx", {}).get("error") for e in errors()]
            except Exception:  # not a pydantic ValidationError after all
                found = []
            hit = next((e for e in found if isinstance(e, PtsqError)), None)
            if hit is not None:
                return hit
        seen = seen.__cause__ or seen.__context__
    return None


def usage_error(exc: UsageError) -> typer.Exit:
    """Print a command-line mistake (unknown option, malformed value, missing argument) as error:/hint:."""
    cause = _ptsq_cause(exc)
    if cause is not None:
        return _fail(cause.message, cause.hint, 2)
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "ptsq"
    message = first_line(exc.format_message(), 300)
    return _fail(message[:1].lower() + message[1:], f"see '{where} --help'", 2)

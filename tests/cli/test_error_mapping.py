"""The one place that maps failures to exit codes (ptsq.cli._errors.guarded), and the error hierarchy."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import ptsq
from ptsq import errors
from ptsq.cli._errors import guarded


def _app(fn) -> typer.Typer:  # type: ignore[no-untyped-def]
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    app.command()(guarded(fn))
    app.command("other")(lambda: None)  # two commands, so typer keeps the command name
    return app


def _run(fn, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(_app(fn), [fn.__name__.replace("_", "-")], env=env)


def raises_ptsq() -> None:
    raise errors.DataError("calibration folder 'x' is empty", "put images in it")


def raises_bug() -> None:
    raise KeyError("some internal key")


def presses_ctrl_c() -> None:
    raise KeyboardInterrupt


def gets_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_ptsq_error_is_one_line_plus_hint_exit_2() -> None:
    r = _run(raises_ptsq)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["error: calibration folder 'x' is empty", "hint: put images in it"]


def test_unexpected_error_exits_1_and_names_ptsq_debug() -> None:
    r = _run(raises_bug, env={"PTSQ_DEBUG": ""})
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines[0] == "error: unexpected KeyError: 'some internal key'"
    assert "PTSQ_DEBUG=1" in lines[1] and "Traceback" not in r.stderr


def test_ptsq_debug_shows_the_traceback() -> None:
    r = _run(raises_bug, env={"PTSQ_DEBUG": "1"})
    assert r.exit_code == 1
    assert "Traceback" in r.stderr and "some internal key" in r.stderr


@pytest.mark.parametrize("fn", [presses_ctrl_c, gets_sigterm])
def test_interruptions_exit_2_saying_nothing_was_written(fn) -> None:  # type: ignore[no-untyped-def]
    before = signal.getsignal(signal.SIGTERM)
    r = _run(fn)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: interrupted; nothing was written")
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is restored


def test_every_error_class_is_exported_and_has_the_base() -> None:
    classes = [getattr(errors, n) for n in errors.__all__ if not issubclass(getattr(errors, n), Warning)]
    assert all(issubclass(c, errors.PtsqError) for c in classes)
    assert ptsq.QuantizationWarning is errors.QuantizationWarning
    for c in classes:
        assert getattr(ptsq, c.__name__) is c  # lazily exported from the package


def test_image_decode_error_carries_path_and_reason() -> None:
    e = errors.ImageDecodeError(
        "cannot read image 'a.jpg': zero-byte file", "remove it", path="a.jpg", reason="zero-byte file"
    )
    assert e.path == Path("a.jpg") and e.reason == "zero-byte file" and isinstance(e, errors.DataError)
    assert errors.ImageDecodeError("plain").reason == "plain" and errors.ImageDecodeError("plain").path is None


def test_default_hints() -> None:
    assert "--trust-pickle" in errors.UnsafeFileError("x").hint
    assert errors.ConfigError("x", "y").hint == "y" and isinstance(errors.ConfigError("x"), ValueError)

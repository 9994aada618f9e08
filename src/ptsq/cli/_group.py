"""The ``ptsq`` command group: how help and command-line mistakes reach the user.

- Help is Click's plain text, not Typer's boxed Rich panels: example lines (``ptsq …``) in a command's
  help are printed exactly as written, never re-wrapped to the terminal width, so each one can be
  copied and run. Every command's examples get that treatment without marking them up by hand.
- Usage errors (an unknown option, a malformed value, a missing argument) print ``error:``/``hint:``
  lines and exit 2, like every other ptsq error.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

from ptsq.cli._errors import UsageError, usage_error

NO_REWRAP = "\b"  # Click prints a paragraph that starts with this line as it is written


def keep_examples(text: str | None) -> str | None:
    """Mark every paragraph holding a ``ptsq …`` line so that Click does not re-wrap it."""
    if not text:
        return text
    paragraphs = text.split("\n\n")
    for i, para in enumerate(paragraphs):
        lines = para.strip("\n").splitlines()
        if lines and lines[0] != NO_REWRAP and any(ln.lstrip().startswith("ptsq ") for ln in lines):
            paragraphs[i] = NO_REWRAP + "\n" + para.strip("\n")
    return "\n\n".join(paragraphs)


class Commands(TyperGroup):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for cmd in self.commands.values():
            cmd.help = keep_examples(cmd.help)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare 'ptsq': Click prints the help
                raise
            raise usage_error(exc) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise usage_error(exc) from None

"""Reports a person would rather look at than read: one HTML page (or Markdown) from ptsq's results.

``build()`` gathers artifacts' manifests and the JSON of ``ptsq bench|eval|analyze``; ``render_html``
and ``render_markdown`` lay it out; ``write_report`` writes it atomically. Pure Python: no torch, no
engine runtime, no network, no external CSS or JavaScript.
"""

from __future__ import annotations

import os
from pathlib import Path

from ptsq.errors import ConfigError, OutputPathError
from ptsq.report.html import render_html
from ptsq.report.inputs import check_json, load_json
from ptsq.report.markdown import MARKER, render_markdown
from ptsq.report.model import Report, build

FORMATS = ("html", "md")
_HTML_MARK = '<meta name="generator" content="ptsq report">'


def format_for(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The explicit ``fmt``, else what the file name says (.md / .markdown: md, anything else: html)."""
    if fmt is None:
        return "md" if Path(path).suffix.lower() in (".md", ".markdown") else "html"
    choice = fmt.lower()
    if choice not in FORMATS:
        raise ConfigError(f"report format {fmt!r} is unknown", f"choose one of: {', '.join(FORMATS)}")
    return choice


def _is_report(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    return _HTML_MARK in head or head.startswith(MARKER)


def check_report_path(
    path: str | os.PathLike[str], *, inputs: tuple[str | os.PathLike[str], ...] = (), force: bool = False
) -> Path:
    """Fail early if the report cannot be written; an older ptsq report there is replaced, other files need force.

    A report is never written over one of ``inputs`` (what the command reads, or the artifact it writes).
    """
    from ptsq.artifact import check_output_path

    out = Path(path)
    for src in inputs:
        if out.resolve() == Path(src).resolve():
            raise OutputPathError(f"the report '{out}' would overwrite '{src}'", "choose another file for the report")
    if out.is_file() and not force and not _is_report(out):
        raise OutputPathError(
            f"output '{out}' already exists and is not a ptsq report",
            "pass --force to overwrite it, or choose another -o",
        )
    return check_output_path(out, force=True)


def write_report(report: Report, path: str | os.PathLike[str], fmt: str | None = None) -> Path:
    """Render ``report`` as HTML or Markdown and write it atomically to ``path``; returns the path."""
    from ptsq.artifact import atomic_path

    out = Path(path)
    text = render_markdown(report) if format_for(out, fmt) == "md" else render_html(report)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


__all__ = [
    "FORMATS", "Report", "build", "check_json", "check_report_path", "format_for", "load_json", "render_html",
    "render_markdown", "write_report",
]  # fmt: skip

"""``--report FILE`` on quantize, bench, eval and analyze: the report of what the command just produced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptsq.cli._output import Output


def check_path(path: str | None, inputs: tuple[str, ...] = ()) -> Path | None:
    """Fail before the command's long work if the report cannot be written."""
    if not path:
        return None
    from ptsq.report import check_report_path

    return check_report_path(path, inputs=tuple(i for i in inputs if i))


def write(out: Output, path: Path | None, data: dict[str, Any], **kw: Any) -> None:
    """Build and write the report; ``kw`` are :func:`ptsq.report.build`'s arguments. Adds ``report`` to ``data``."""
    if path is None:
        return
    from ptsq.report import build, write_report

    written = write_report(build(**kw), path)
    data["report"] = str(written)
    out.info(f"wrote report {written}")

"""Screenshot a ptsq report's first screen in headless Chromium (docs/report.png is made by this, not by hand).

    python -m benchmarks.screenshot_report out/demo/report.html docs/report.png

Uses the system's Chromium (Debian package ``chromium``; ``PTSQ_CHROMIUM`` overrides the path) through
Playwright's Python package, never a browser download. The page is opened from the file with every
network request recorded: the script fails if the report asks for anything but itself, or logs errors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# root-safe headless flags that keep Chromium from phoning home on its own (updates, sync, field trials)
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def chromium_path() -> str | None:
    """The Chromium binary to drive: $PTSQ_CHROMIUM, else the Debian package's, else one on PATH."""
    for cand in (os.environ.get("PTSQ_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


@contextmanager
def open_report(path: Path, width: int = 1280, height: int = 900) -> Iterator[tuple[Any, list[str], list[str]]]:
    """Yield (page, requested URLs, console errors) with ``path`` loaded in a fresh headless Chromium."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("Chromium not found: apt-get install chromium, or set PTSQ_CHROMIUM")
    profile = tempfile.mkdtemp(prefix="ptsq-chromium-")
    try:
        with sync_playwright() as pw:
            # a fresh profile per run: nothing cached or remembered from an earlier page
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=exe, args=list(FLAGS), headless=True,
                viewport={"width": width, "height": height},
            )  # fmt: skip
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                requests: list[str] = []
                errors: list[str] = []
                ctx.on("request", lambda r: requests.append(r.url))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(path.resolve().as_uri(), wait_until="load")
                yield page, requests, errors
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(report: Path, out: Path) -> Path:
    """Write a PNG of the report's first screen; refuse a page that fetched anything or logged errors."""
    from ptsq.artifact import atomic_path

    with open_report(report) as (page, requests, errors):
        foreign = [u for u in requests if u != report.resolve().as_uri()]
        if foreign or errors:
            raise RuntimeError(f"the report is not self-contained: requests {foreign}, console errors {errors}")
        with atomic_path(out) as tmp:
            page.screenshot(path=str(tmp), full_page=False)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="an HTML file written by ptsq report (or --report)")
    ap.add_argument("out", type=Path, nargs="?", default=Path("docs/report.png"))
    args = ap.parse_args(argv)
    print(screenshot(args.report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""make demo ends with the report of its EfficientNet-Lite0 run: the path is printed last, and the page opens in
headless Chromium with no console error and no request but itself."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest


@pytest.mark.slow  # quantizes and times the real EfficientNet-Lite0
def test_demo_prints_the_path_of_a_report_that_opens_in_chromium(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch", reason="the demo extra (pip install 'ptsq[demo]')")
    from benchmarks.screenshot_report import chromium_path, open_report
    from examples import demo

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert demo.main(["--out", str(tmp_path), "--num-calib", "32", "--runs", "5"]) == 0
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("report: ")
    report = Path(last.removeprefix("report: "))
    assert report == tmp_path / "report.html" and report.is_file()
    if chromium_path() is None:
        pytest.skip("Chromium not installed (apt-get install chromium; 'make test' does it)")
    with open_report(report) as (page, requests, errors):
        assert requests == [report.resolve().as_uri()] and errors == []
        assert page.locator('.card[data-figure="speed-up"]').is_visible()
        assert page.locator('.card[data-figure="top-1 accuracy"]').is_visible()
        assert (page.locator("#latency svg.chart").bounding_box() or {}).get("height", 0) > 100

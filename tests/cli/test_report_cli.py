"""ptsq report and --report: real artifacts and the real JSON of bench/eval/analyze -> HTML and Markdown.

The structure tests parse the HTML without a browser; test_report_in_headless_chromium opens it in the
system Chromium (Debian package) through Playwright and checks what a person would see.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ptsq import legacy
from tests.cli.conftest import assert_clean_error, run_cli, spec

COMMON = ("--preset", "imagenet", "--input-size", "32", "--num-calib", "16", "--batch-size", "4", "--speed-guard", "0")
# the default engine's artifact: fx's TorchScript, or a .pt2 where torch.ao.quantization is gone
ARTIFACT = "small.pt" if legacy.available() else "small.pt2"


class Page(HTMLParser):
    """Elements (tag, attrs, text inside) of an HTML page, with the text of each section."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.sections: dict[str, str] = {}
        self._section: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section or ""] = ""

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.sections[self._section] += data

    def all(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and (cls is None or cls in a.get("class", "").split())]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photo_dir, small_weights):
    """One artifact and the JSON bench, eval and analyze print for it, each also with --report."""
    d = tmp_path_factory.mktemp("report")
    art = d / ARTIFACT
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PTSQ_PT2E_EAGER", "1")  # a .pt2 runs uncompiled here (no inductor in the fast tier)
        return _inputs(d, art, photo_dir, small_weights)


def _inputs(d: Path, art: Path, photo_dir: Path, small_weights: Path) -> dict[str, Path]:
    q = run_cli("quantize", spec("SmallNet"), "--weights", small_weights, "--calib", photo_dir, "-o", art, *COMMON,
                "--report", d / "quantize.html", "--json")  # fmt: skip
    assert q.code == 0, q.stderr
    b = run_cli("bench", spec("SmallNet"), art, "--weights", small_weights, "--runs", "5", "--warmup", "1",
                "--no-memory", "--json", "--report", d / "bench.md")  # fmt: skip
    assert b.code == 0, b.stderr
    e = run_cli("eval", spec("SmallNet"), art, "--weights", small_weights, "--data", photo_dir, "--labels", "none",
                "--json", "--report", d / "eval.html")  # fmt: skip
    assert e.code == 0, e.stderr
    a = run_cli("analyze", spec("SmallNet"), "--weights", small_weights, "--calib", photo_dir, *COMMON, "--json",
                "--report", d / "analyze.html")  # fmt: skip
    assert a.code == 0, a.stderr
    files = {"dir": d, "artifact": art}
    for name, res in (("quantize", q), ("bench", b), ("eval", e), ("analyze", a)):
        files[name] = d / f"{name}.json"
        files[name].write_text(res.stdout)
    return files


def _report(inputs, out: Path, *extra: str):
    res = run_cli("report", inputs["artifact"], "--bench", inputs["bench"], "--eval", inputs["eval"],
                  "--analyze", inputs["analyze"], "-o", out, *extra)  # fmt: skip
    assert res.code == 0, res.stderr
    return out


def test_html_holds_every_section_with_the_commands_figures(inputs, tmp_path):
    html = _report(inputs, tmp_path / "r.html").read_text()
    page = Page(html)
    bench, ev, an = (json.loads(inputs[k].read_text()) for k in ("bench", "eval", "analyze"))
    manifest = json.loads(run_cli("info", inputs["artifact"], "--json").stdout)
    for section in ("headline", "latency", "fidelity", "precision", "sensitivity", "calibration", "environment",
                    "reproduce"):  # fmt: skip
        assert section in page.sections, section
    head = page.sections["headline"]
    row = next(t for t in bench["timings"] if t["label"] == ARTIFACT)
    assert f"{row['speedup']:.2f}x" in head  # the speed-up bench measured
    fp32 = next(t for t in bench["timings"] if t["kind"] == "fp32")
    assert f"{fp32['size_bytes'] / inputs['artifact'].stat().st_size:.2f}x smaller" in head
    check = manifest["check"]
    assert f"{check['sqnr_db']:.1f} dB SQNR" in head and f"on {check['samples']} held-back" in head
    agree = ev["models"][1]["fidelity"]["top1_agreement"]
    assert f"{agree:.3f}" in head and f"on {ev['data']['images']} images" in head
    # the charts: inline SVG with one bar per timing row and per ranked layer
    svgs = page.all("svg", "chart")
    assert len(svgs) == 2 and all(int(s["width"]) > 0 and int(s["height"]) > 0 for s in svgs)
    assert len(page.all("rect", "bar")) == len(bench["timings"]) + min(25, len(an["layers"]))
    # the precision map: one row per manifest row, fp32 rows marked for the filter
    assert len(page.all("tr", None)) >= len(manifest["precision"])
    assert len([a for a in page.all("tr") if a.get("data-precision")]) == len(manifest["precision"])
    assert an["layers"][0]["name"] in page.sections["sensitivity"]
    assert "layer SQNR dB" in page.sections["sensitivity"]  # the column is explained
    # the recipe: the exact quantize options recorded in the manifest
    recipe = page.sections["reproduce"]
    assert f"ptsq info {ARTIFACT} --recipe > small.recipe.yaml" in recipe and "--config small.recipe.yaml" in recipe
    assert "ptsq quantize" in recipe and "--input-size 32x32" in recipe  # preprocessing: not in the recipe file
    assert "speed_guard: 0.0" in recipe and "num: 16" in recipe and "batch_size: 4" in recipe
    # self-contained: nothing to fetch, a policy that forbids fetching, no external style or script
    assert not [a for t, a in page.elements if a.get("src") or (t == "link" and a.get("rel") != "icon")]
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", html)
    assert "default-src 'none'" in next(a["content"] for a in page.all("meta") if a.get("http-equiv"))


def test_markdown_has_the_same_figures(inputs, tmp_path):
    md = _report(inputs, tmp_path / "r.md").read_text()
    bench = json.loads(inputs["bench"].read_text())
    row = next(t for t in bench["timings"] if t["label"] == ARTIFACT)
    assert md.startswith("<!-- ptsq report -->") and "## Headline" in md
    assert f"**speed-up: {row['speedup']:.2f}x**" in md
    assert "| model | kind | setting | median ms |" in md and "## Sensitivity ranking" in md and "```bash" in md
    html = _report(inputs, tmp_path / "as_md.html", "--format", "md").read_text()  # --format wins over the suffix
    assert html.startswith("<!-- ptsq report -->")


def test_report_option_on_each_command_wrote_its_part(inputs):
    d = inputs["dir"]
    q = Page((d / "quantize.html").read_text())
    assert "smaller" in q.sections["headline"]  # quantize knows the fp32 size
    assert "speed-up" in q.sections["headline"] and "not measured" in q.sections["headline"]
    assert json.loads(inputs["quantize"].read_text())["report"] == str(d / "quantize.html")
    assert "## Latency" in (d / "bench.md").read_text()
    assert "fidelity" in Page((d / "eval.html").read_text()).sections
    a = Page((d / "analyze.html").read_text())
    assert "sensitivity" in a.sections and "precision" not in a.sections


def test_wrong_inputs_are_refused_in_one_line(inputs, tmp_path):
    out = tmp_path / "r.html"
    art = inputs["artifact"]
    assert_clean_error(run_cli("report", art, "--bench", inputs["eval"], "-o", out),
                       "is the output of 'ptsq eval --json'")  # fmt: skip
    assert_clean_error(run_cli("report", art, "--eval", inputs["quantize"], "-o", out), "'ptsq quantize --json'")
    noisy = tmp_path / "noisy.json"
    noisy.write_text("info: benchmarking\n" + inputs["bench"].read_text())
    res = run_cli("report", art, "--bench", noisy, "-o", out)
    assert_clean_error(res, "not valid JSON")
    assert "stdout only" in res.stderr
    half = tmp_path / "half.json"
    half.write_text(json.dumps({"machine": {}, "timings": [{"label": "x"}]}))
    assert_clean_error(run_cli("report", art, "--bench", half, "-o", out), "malformed 'timings' entry 0")
    assert_clean_error(run_cli("report", art, "-o", art), "would overwrite")
    assert_clean_error(run_cli("report", art, "--bench", tmp_path / "nope.json", "-o", out), "does not exist")
    same = tmp_path / "same.html"
    res = run_cli("quantize", spec("SmallNet"), "--calib", inputs["dir"], "-o", same, "--report", same)
    assert_clean_error(res, "would overwrite")  # refused before any work
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my notes</html>")
    assert_clean_error(run_cli("report", art, "-o", mine), "not a ptsq report")
    assert mine.read_text() == "<html>my notes</html>"  # untouched
    assert not out.exists()
    assert run_cli("report", art, "-o", out).code == 0
    assert run_cli("report", art, "-o", out).code == 0  # an earlier report is replaced without --force


def test_report_in_headless_chromium(inputs, tmp_path):
    """The page loads with no console error and no request but itself, and shows the headline and the chart."""
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    from benchmarks.screenshot_report import chromium_path, open_report

    if chromium_path() is None:
        pytest.skip("Chromium not installed (apt-get install chromium; 'make test' does it)")
    out = _report(inputs, tmp_path / "r.html")
    bench = json.loads(inputs["bench"].read_text())
    row = next(t for t in bench["timings"] if t["label"] == ARTIFACT)
    with open_report(out) as (page, requests, errors):
        assert requests == [out.resolve().as_uri()], requests
        assert errors == [], errors
        card = page.locator('.card[data-figure="speed-up"] .v')
        assert card.is_visible() and card.inner_text().strip().endswith(f"{row['speedup']:.2f}x")
        chart = page.locator("#latency svg.chart")
        box = chart.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
        bars = page.locator("#latency svg rect.bar")
        assert bars.count() == len(bench["timings"])
        assert all((bars.nth(i).bounding_box() or {}).get("height", 0) > 0 for i in range(bars.count()))
        # the filter script works: fp32-only hides every int8 row
        rows = page.locator("table.precision tbody tr")
        page.locator("#precision select").select_option("fp32")
        visible = [rows.nth(i).is_visible() for i in range(rows.count())]
        fp32 = [rows.nth(i).get_attribute("data-precision") == "fp32" for i in range(rows.count())]
        assert visible == fp32

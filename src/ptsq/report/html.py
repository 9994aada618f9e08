"""The report as one self-contained HTML page: inline CSS and SVG, no network, readable without JavaScript.

A Content-Security-Policy meta tag forbids every fetch (``default-src 'none'``), so even a value that
slipped through escaping could not load anything. The only script filters the precision maps; with
JavaScript off every table is simply shown in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ptsq.report import model as rm
from ptsq.report import recipe
from ptsq.report.svg import grouped_bars, ranked_bars

CSS = """
:root{--fg:#1d1d1f;--muted:#5f6368;--line:#e3e3e3;--good:#2e7d32;--poor:#c62828;--fp32:#fff4e0}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#fafafa}
header{background:#1f2a44;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;color:#c9d1e3}
nav{padding:8px 28px;background:#fff;border-bottom:1px solid var(--line);position:sticky;top:0}
nav a{margin-right:14px;color:#3b6fb6;text-decoration:none}
main{padding:8px 28px 40px;max-width:1200px}
section{margin-top:22px}
h2{font-size:18px;margin:0 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
.card{background:#fff;border:1px solid var(--line);border-left:5px solid #9aa5b8;border-radius:6px;padding:10px 14px}
.card.good{border-left-color:var(--good)}.card.poor{border-left-color:var(--poor)}
.card .t{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:26px;font-weight:650;margin:2px 0}
.card .d{color:var(--muted);font-size:12px;overflow-wrap:anywhere}
.card .verdict{font-weight:600}.good .verdict{color:var(--good)}.poor .verdict{color:var(--poor)}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f6;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all;max-width:460px}
dd{overflow-wrap:anywhere}
tr.fp32 td{background:var(--fp32)} tr.keep td{background:#fde8e8}
.scroll{max-height:520px;overflow:auto;display:inline-block;border:1px solid var(--line)}
.scroll table{margin:0}
.chart{max-width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:6px}
pre{background:#f4f4f4;border:1px solid var(--line);padding:8px 10px;white-space:pre-wrap;word-break:break-all}
.muted{color:var(--muted)} .filter{margin:4px 0} .filter input{width:320px;padding:3px 6px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:4px 0}
dt{color:var(--muted)} dd{margin:0}
"""

SCRIPT = """
document.querySelectorAll('table.precision').forEach(function (t) {
  var rows = Array.prototype.slice.call(t.tBodies[0].rows);
  var box = document.createElement('div'); box.className = 'filter';
  var q = document.createElement('input'); q.type = 'search'; q.placeholder = 'filter by layer, op or reason';
  var s = document.createElement('select');
  ['all', 'fp32', 'int8'].forEach(function (v) { var o = document.createElement('option'); o.value = v;
    o.textContent = v === 'all' ? 'all layers' : v + ' only'; s.appendChild(o); });
  var n = document.createElement('span'); n.className = 'muted';
  function apply() {
    var text = q.value.toLowerCase(), want = s.value, shown = 0;
    rows.forEach(function (r) {
      var ok = (want === 'all' || r.getAttribute('data-precision') === want) &&
               (!text || r.textContent.toLowerCase().indexOf(text) >= 0);
      r.hidden = !ok; if (ok) { shown++; }
    });
    n.textContent = ' ' + shown + ' of ' + rows.length + ' shown';
  }
  q.addEventListener('input', apply); s.addEventListener('change', apply);
  box.appendChild(q); box.appendChild(document.createTextNode(' ')); box.appendChild(s); box.appendChild(n);
  var at = t.closest('.scroll') || t; at.parentNode.insertBefore(box, at); apply();
});
"""

_NUMERIC = {"median ms", "p90 ms", "speed-up", "samples/s", "peak RSS", "above base", "top-1", "top-1 agreement",
            "SQNR dB", "cosine", "KL", "gain dB", "layer SQNR dB", "output SQNR if fp32", "rank", "size"}  # fmt: skip


def _e(v: object) -> str:
    return escape(str(v), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "",
          row_attrs: Sequence[str] | None = None, name_cols: Sequence[str] = ("layer", "model")) -> str:  # fmt: skip
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, r in enumerate(rows):
        cells = []
        for h, v in zip(headers, r):
            klass = "num" if h in _NUMERIC else ("name" if h in name_cols else "")
            cells.append(f'<td class="{klass}">{_e(v)}</td>' if klass else f"<td>{_e(v)}</td>")
        attrs = f" {row_attrs[i]}" if row_attrs else ""
        body.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _dl(rows: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows) + "</dl>"


def _headline(report: rm.Report) -> str:
    cards = []
    for f in rm.headline(report):
        verdict = {"good": "✓ ", "poor": "✗ "}.get(f.verdict or "", "")
        cards.append(
            f'<div class="card {f.verdict or ""}" data-figure="{_e(f.title)}"><div class="t">{_e(f.title)}</div>'
            f'<div class="v"><span class="verdict">{verdict}</span>{_e(f.value)}</div>'
            f'<div class="d">{_e(f.detail)}</div></div>'
        )
    side = ""
    if len(report.artifacts) > 1:
        rows = rm.comparison(report)
        side = "<h3>Side by side</h3>" + table(list(rows[0]), [list(r.values()) for r in rows], name_cols=("artifact",))
    return f'<section id="headline"><h2>Headline</h2><div class="cards">{"".join(cards)}</div>{side}</section>'


def _latency(report: rm.Report) -> str:
    settings, labels, rows = rm.latency(report)
    if not rows and not report.artifacts:  # an analyze-only report: nothing was timed, nothing to time
        return ""
    if not rows:
        return ('<section id="latency"><h2>Latency</h2><p class="muted">Not measured: run <code>ptsq bench FP32_MODEL '
                "ARTIFACT --threads 1,2 --json &gt; bench.json</code> and pass <code>--bench bench.json</code>.</p>"
                "</section>")  # fmt: skip
    values = {
        (t["label"], s): (t["median_ms"], t.get("p90_ms"), f"{t['speedup']:.2f}x" if t.get("speedup") else "")
        for (_, s), t in rows.items()
    }
    mach = (report.bench or {}).get("machine", {})
    values = {(rm.short(k[0]), k[1]): v for k, v in values.items()}
    chart = grouped_bars(settings, [rm.short(x) for x in labels], values, unit="median latency, ms (whisker: p90)",
                         title=f"Median latency per model and setting — {mach.get('cpu', '')}")  # fmt: skip
    headers = ["model", "kind", "setting", "median ms", "p90 ms", "speed-up", "samples/s", "size", "peak RSS",
               "above base"]  # fmt: skip
    body = [[t["label"], t["kind"], s, f"{t['median_ms']:.2f}", f"{t['p90_ms']:.2f}", f"{t['speedup']:.2f}x",
             f"{t.get('samples_per_s', 0):.1f}", rm.fmt_bytes(t.get("size_bytes")),
             rm.fmt(t.get("peak_rss_mb"), ".0f") + " MB" if t.get("peak_rss_mb") is not None else "–",
             rm.fmt(t.get("model_mb"), ".0f") + " MB" if t.get("model_mb") is not None else "–"]
            for (_, s), t in rows.items()]  # fmt: skip
    runs = next(iter(rows.values())).get("runs", "?")
    return (f'<section id="latency"><h2>Latency</h2>{chart}'
            f'<p class="muted">Medians of {runs} interleaved runs per model and setting (round-robin in one process, '
            "so load on the machine hits every model alike); speed-up is over the first model. Peak RSS: a fresh "
            "process per model and setting.</p>"
            f"{table(headers, body)}</section>")  # fmt: skip


def _fidelity(report: rm.Report) -> str:
    rows = rm.fidelity_rows(report)
    if not rows:
        return ""
    headers = list(rows[0])
    return (
        '<section id="fidelity"><h2>Accuracy and fidelity</h2>'
        '<p class="muted">Every int8 figure is a comparison with fp32 on real inputs: the self-check runs on '
        "calibration batches held back from calibration; ptsq eval on the evaluation images.</p>"
        f"{table(headers, [list(r.values()) for r in rows])}</section>"
    )


def _precision(report: rm.Report) -> str:
    if not report.artifacts:
        return ""
    parts = ['<section id="precision"><h2>Precision map</h2>']
    for a in report.artifacts:
        rows = rm.precision_rows(a)
        c = a.counts
        parts.append(f"<h3>{_e(a.label)} — {c['int8']} int8, {c['fp32']} fp32 ({_e(a.engine)}, "
                     f"{_e(a.manifest.get('mode', 'static'))})</h3>")  # fmt: skip
        attrs = [f'class="{r["precision"]}" data-precision="{_e(r["precision"])}"' for r in rows]
        parts.append('<div class="scroll">' + table(["layer", "op", "precision", "why"],
                     [list(r.values()) for r in rows], "precision", attrs) + "</div>")  # fmt: skip
    parts.append("</section>")
    return "".join(parts)


def _sensitivity(report: rm.Report) -> str:
    an = report.analyze
    if not an:
        return ""
    rows = rm.sensitivity(report)
    items = [(r["name"], r["gain_db"] if r["gain_db"] is not None else float("nan"), r["keep"],
              f"{r['name']} ({r['op']}): gain {rm.fmt(r['gain_db'], '.2f')} dB, layer SQNR "
              f"{rm.fmt(r['layer_sqnr_db'], '.1f')} dB") for r in rows]  # fmt: skip
    chart = ranked_bars(items, unit="dB gained by keeping the layer fp32",
                        title=f"Sensitivity: output SQNR gained by keeping each layer alone in fp32 "
                              f"(all-int8: {rm.fmt(an.get('baseline_sqnr_db'), '.1f')} dB)")  # fmt: skip
    headers = ["rank", "layer", "op", "gain dB", "output SQNR if fp32", "layer SQNR dB"]
    body = [[i, r["name"], r["op"], rm.fmt(r["gain_db"], ".2f"), rm.fmt(r["solo_fp32_sqnr_db"], ".1f"),
             rm.fmt(r["layer_sqnr_db"], ".1f")] for i, r in enumerate(rows, 1)]  # fmt: skip
    attrs = ['class="keep"' if r["keep"] else "" for r in rows]
    keep = an.get("keep_fp32") or []
    advice = (f"<p>Keep in fp32: <b>{_e(', '.join(keep))}</b>"
              + (f" (output SQNR {rm.fmt(an.get('keep_fp32_sqnr_db'), '.1f')} dB together)" if keep else "")
              + "</p>" if keep else "<p>No layer gains enough from fp32 to recommend it.</p>")  # fmt: skip
    total = len(an.get("layers") or [])
    return (f'<section id="sensitivity"><h2>Sensitivity ranking</h2>{chart}'
            f'<p class="muted">{_e(rm.SENSITIVITY_NOTE)} Measured on {_e(an.get("samples"))} held-back calibration '
            f"samples; {len(rows)} of {total} layers shown.</p>{advice}{table(headers, body, 'sensitivity', attrs)}"
            "</section>")  # fmt: skip


def _calibration(report: rm.Report) -> str:
    if not report.artifacts:
        return ""
    parts = ['<section id="calibration"><h2>Calibration and preprocessing</h2>']
    for a in report.artifacts:
        parts.append(f"<h3>{_e(a.label)}</h3>{_dl(rm.calibration_rows(a))}")
    parts.append("</section>")
    return "".join(parts)


def _reproduce(report: rm.Report) -> str:
    parts = ['<section id="reproduce"><h2>Reproduce</h2>']
    for what, cmd in recipe.commands(report):
        parts.append(f"<h3>{_e(what)}</h3><pre>{_e(cmd)}</pre>")
    for a in report.artifacts:
        sha = (a.manifest.get("model") or {}).get("weights_sha256")
        parts.append(f"<details><summary>{_e(recipe.recipe_file(a))}: the recipe recorded in {_e(a.label)}'s "
                     f"manifest</summary><pre>{_e(recipe.recipe_text(a))}</pre></details>")  # fmt: skip
        if sha:
            parts.append(f'<p class="muted">WEIGHTS.pth for {_e(a.label)}: the file with sha256 {_e(sha)}.</p>')
    parts.append("</section>")
    return "".join(parts)


def render_html(report: rm.Report) -> str:
    """The whole page as a string."""
    sections = [
        _headline(report), _latency(report), _fidelity(report), _precision(report), _sensitivity(report),
        _calibration(report),
        f'<section id="environment"><h2>Environment</h2>{_dl(rm.environment_rows(report))}</section>',
        _reproduce(report),
    ]  # fmt: skip
    notes = rm.notes(report)
    if notes:
        sections.append('<section id="notes"><h2>Notes</h2><ul>' + "".join(f"<li>{_e(n)}</li>" for n in notes)
                        + "</ul></section>")  # fmt: skip
    nav_items = [("headline", "Headline"), ("latency", "Latency"), ("fidelity", "Accuracy"), ("precision", "Precision"),
                 ("sensitivity", "Sensitivity"), ("calibration", "Calibration"), ("environment", "Environment"),
                 ("reproduce", "Reproduce"), ("notes", "Notes")]  # fmt: skip
    body = "".join(sections)
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in nav_items if f'id="{k}"' in body)
    sub = ", ".join(f"{a.label} ({a.engine}, {rm.fmt_bytes(a.bytes)})" for a in report.artifacts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="generator" content="ptsq report">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        '<link rel="icon" href="data:,">'
        f"<title>{_e(report.heading)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(report.heading)}</h1><p>{_e(sub or 'no artifact')} · written {_e(report.generated)}</p>"
        f"</header><nav>{nav}</nav><main>{body}</main><script>{SCRIPT}</script></body></html>\n"
    )


__all__ = ["render_html", "table"]

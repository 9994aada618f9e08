"""The report as Markdown for pull requests and CI logs: the same sections as the HTML, charts as tables."""

from __future__ import annotations

from collections.abc import Sequence

from ptsq.report import model as rm
from ptsq.report import recipe

MARKER = "<!-- ptsq report -->"  # lets a later run recognise (and replace) a report it wrote


def _cell(v: object) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return [*out, ""]


def _bar(value: float, top: float, width: int = 20) -> str:
    n = 0 if top <= 0 else round(width * max(0.0, value) / top)
    return "█" * n


def render_markdown(report: rm.Report) -> str:
    lines = [MARKER, f"# {report.heading}", ""]
    sub = ", ".join(f"`{a.label}` ({a.engine}, {rm.fmt_bytes(a.bytes)})" for a in report.artifacts)
    lines += [f"{sub or 'no artifact'} · written {report.generated}", "", "## Headline", ""]
    for f in rm.headline(report):
        mark = {"good": " ✓", "poor": " ✗ **POOR**"}.get(f.verdict or "", "")
        lines.append(f"- **{f.title}: {f.value}**{mark} — {f.detail}")
    lines.append("")
    if len(report.artifacts) > 1:
        comp = rm.comparison(report)
        lines += ["Side by side:", "", *table(list(comp[0]), [list(r.values()) for r in comp])]

    _settings, _labels, rows = rm.latency(report)
    if rows:
        lines += ["## Latency", ""]
        top = max(t["median_ms"] for t in rows.values())
        body = [[t["label"], t["kind"], s, f"{t['median_ms']:.2f}", f"{t['p90_ms']:.2f}", f"{t['speedup']:.2f}x",
                 rm.fmt_bytes(t.get("size_bytes")), rm.fmt(t.get("peak_rss_mb"), ".0f"), _bar(t["median_ms"], top)]
                for (_, s), t in rows.items()]  # fmt: skip
        lines += table(["model", "kind", "setting", "median ms", "p90 ms", "speed-up", "size", "peak RSS MB", ""], body)
        lines += [f"Medians of {next(iter(rows.values())).get('runs', '?')} interleaved runs; speed-up over the first "
                  "model.", ""]  # fmt: skip

    fid = rm.fidelity_rows(report)
    if fid:
        lines += ["## Accuracy and fidelity", "", *table(list(fid[0]), [list(r.values()) for r in fid])]

    for a in report.artifacts:
        prec = rm.precision_rows(a)
        c = a.counts
        lines += [f"## Precision map: `{a.label}` — {c['int8']} int8, {c['fp32']} fp32", ""]
        fp32 = [r for r in prec if r["precision"] == "fp32"]
        if fp32:
            kept = [[f"`{r['layer']}`", r["op"], r["why"]] for r in fp32]
            lines += ["Kept in fp32:", "", *table(["layer", "op", "why"], kept)]
        lines += ["<details><summary>every layer</summary>", ""]
        lines += table(["layer", "op", "precision", "why"], [[f"`{r['layer']}`", r["op"], r["precision"], r["why"]]
                                                            for r in prec])  # fmt: skip
        lines += ["</details>", ""]

    if report.analyze:
        an = report.analyze
        sens = rm.sensitivity(report)
        top = max([r["gain_db"] or 0.0 for r in sens] + [0.0])
        lines += ["## Sensitivity ranking", "",
                  f"All-int8 output SQNR {rm.fmt(an.get('baseline_sqnr_db'), '.1f')} dB on {an.get('samples')} "
                  "held-back calibration samples. " + rm.SENSITIVITY_NOTE, ""]  # fmt: skip
        body = [[i, f"`{r['name']}`" + (" **keep fp32**" if r["keep"] else ""), r["op"], rm.fmt(r["gain_db"], ".2f"),
                 rm.fmt(r["solo_fp32_sqnr_db"], ".1f"), rm.fmt(r["layer_sqnr_db"], ".1f"),
                 _bar(r["gain_db"] or 0.0, top)] for i, r in enumerate(sens, 1)]  # fmt: skip
        lines += table(["rank", "layer", "op", "gain dB", "output SQNR if fp32", "layer SQNR dB", ""], body)

    if report.artifacts:
        lines += ["## Calibration and preprocessing", ""]
        for a in report.artifacts:
            lines += [f"`{a.label}`:", ""] + [f"- {k}: {v}" for k, v in rm.calibration_rows(a)] + [""]
    lines += ["## Environment", ""] + [f"- {k}: {v}" for k, v in rm.environment_rows(report)] + [""]
    lines += ["## Reproduce", ""]
    for what, cmd in recipe.commands(report):
        lines += [f"{what}:", "", "```bash", cmd, "```", ""]
    for a in report.artifacts:
        lines += [f"<details><summary>{recipe.recipe_file(a)}: the recipe recorded in {a.label}</summary>", "",
                  "```yaml", recipe.recipe_text(a), "```", "", "</details>", ""]  # fmt: skip
    notes = rm.notes(report)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


__all__ = ["MARKER", "render_markdown"]

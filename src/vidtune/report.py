"""`runs/<name>/report.html`: a self-contained page (plots and videos embedded as data URIs) per run."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vidtune.metrics.auto_gsb import gsb_report, judge_outcomes  # noqa: E402
from vidtune.runlog import read_metrics  # noqa: E402

HEADLINE = ("verifier", "clean", "atom/motion", "atom/camera", "atom/order", "atom/count", "atom/colour",
            "atom/shape", "atom/size", "atom/pour")
SLICE_JUDGES = ("verifier", "scorer")  # the slice table adds every VBench-style dimension ("vbench/…") after these
CURVES = {
    "sft": ["loss", "weight_max"],
    "grpo": ["reward", "approx_kl", "kl_ref", "clip_fraction", "grad_norm"],
    "dpo": ["loss", "implicit_accuracy", "margin", "beta"],
}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _curves(rows: list[dict], stage: str) -> str | None:
    keys = [k for k in CURVES.get(stage, []) if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r if k.startswith(("reward/", "curriculum/w_", "joint/c_", "bpgo/w_"))
                    and not k.endswith("_std") and isinstance(r[k], (int, float))})
    if not rows or not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
        if pts:
            ax.plot(*zip(*pts), lw=1.4)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(stage, fontsize=10)
    return _png(fig)


def _metric_table(evals: dict[str, dict]) -> str:
    stages = list(evals)
    head = "".join(f"<th>{html.escape(s)}</th>" for s in stages)
    rows = []
    for m in HEADLINE:
        cells, prev = [], None
        for s in stages:
            r = evals[s]["summary"].get(m)
            if not r or not r.get("n"):
                cells.append("<td>–</td>")
                continue
            delta = "" if prev is None else f" <span class='d'>({r['mean'] - prev:+.3f})</span>"
            cells.append(f"<td>{r['mean']:.3f} <small>[{r['low']:.3f}, {r['high']:.3f}]</small>{delta}</td>")
            prev = r["mean"]
        rows.append(f"<tr><th>{m}</th>{''.join(cells)}</tr>")
    return f"<table class='metrics'><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _judged_metrics(evals: dict[str, dict]) -> list[str]:
    """The judged metrics with per-slice results in any stage, in table order: verifier, learned scorer, then the
    VBench-style dimensions (``vbench/<dimension>``) in the order the evaluation wrote them."""
    present = list(dict.fromkeys(m for ev in evals.values() for vals in ev["slices"].values() for m in vals))
    return [m for m in SLICE_JUDGES if m in present] + [m for m in present if m.startswith("vbench/")]


def _slice_cell(r: dict | None, ref: dict | None) -> str:
    """A slice-table cell: the mean, and its change vs the reference stage's mean when both exist."""
    if not r or not r.get("n"):
        return "<td>–</td>"
    delta = f" <span class='d'>({r['mean'] - ref['mean']:+.3f})</span>" if ref and ref.get("n") else ""
    return f"<td>{r['mean']:.3f}{delta}</td>"


def _slice_table(evals: dict[str, dict]) -> str:
    """One row per (slice, stage), one column per judged metric: its mean over the slice's prompts and, after the
    first (base) stage, the change vs that stage."""
    metrics, ref = _judged_metrics(evals), next(iter(evals))
    head = "".join(f"<th title='{m}'>{html.escape(m.removeprefix('vbench/'))}</th>" for m in metrics)
    slices = dict.fromkeys(sl for ev in evals.values() for sl, vals in ev["slices"].items() if vals)
    rows = []
    for sl in slices:
        for stage, ev in evals.items():
            vals, base = ev["slices"].get(sl, {}), None if stage == ref else evals[ref]["slices"].get(sl, {})
            cells = "".join(_slice_cell(vals.get(m), base and base.get(m)) for m in metrics)
            rows.append(f"<tr><th>{sl}</th><th>{stage}</th><td>{vals.get('verifier', {}).get('n', '–')}</td>"
                        f"{cells}</tr>")
    return (f"<table class='metrics slices'><tr><th>slice</th><th>stage</th><th>n</th>{head}</tr>{''.join(rows)}"
            "</table>")


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    evals = {}
    order = ["base", "sft", "grpo", "dpo"]
    for s in order:
        f = run_dir / "evals" / f"{s}.json"
        if f.exists():
            evals[s] = json.loads(f.read_text())
    metrics_file = run_dir / "metrics.jsonl"
    parts = [f"<h1>vidtune run <code>{html.escape(run_dir.name)}</code></h1>"]
    parts.append("<h2>Evaluation per stage</h2><p>Means over fixed seen + held-out prompts and seeds, 95% "
                 "normal intervals, change vs the previous stage in parentheses.</p>" + _metric_table(evals))
    parts.append("<h2>Videos: same prompts and seeds across stages</h2><div class='grid'>")
    for s in evals:
        gif = run_dir / "samples" / f"{s}.gif"
        if gif.exists():
            parts.append(f"<figure><img class='video' alt='{s}' src='{_file_uri(gif, 'image/gif')}'>"
                         f"<figcaption>{s}</figcaption></figure>")
    parts.append("</div>")
    if len(evals) >= 2:
        first, last = evals["base"] if "base" in evals else next(iter(evals.values())), list(evals.values())[-1]
        last_name = list(evals)[-1]
        ours = torch.tensor(last["per_sample"]["verifier"])
        base = torch.tensor(first["per_sample"]["verifier"])
        g = gsb_report(judge_outcomes(ours, base), last["prompts"])
        parts.append(f"<h2>GSB: {last_name} vs base (verifier as annotator)</h2>"
                     f"<table class='metrics gsb'><tr><th>G</th><th>S</th><th>B</th><th>WinRate [Wilson]</th>"
                     f"<th>Margin [bootstrap]</th><th>sign test p</th></tr><tr><td>{g['counts']['G']}</td>"
                     f"<td>{g['counts']['S']}</td><td>{g['counts']['B']}</td><td>{g['win_rate']:.3f} "
                     f"[{g['win_rate_wilson'][0]:.3f}, {g['win_rate_wilson'][1]:.3f}]</td><td>{g['margin']:.3f} "
                     f"[{g['margin_bootstrap'][0]:.3f}, {g['margin_bootstrap'][1]:.3f}]</td>"
                     f"<td>{g['sign_test_p']:.3g}</td></tr></table>")
    if evals:
        parts.append("<h2>Slices: judged metrics per stage</h2><p>Means over each slice's prompts of the verifier, "
                     "the learned scorer (when it matches the clips) and the VBench-style dimensions per video; "
                     f"change vs {next(iter(evals))} in parentheses.</p>" + _slice_table(evals))
    diag_file = run_dir / "evals" / "diagnostics.json"
    if diag_file.exists():
        rows = []
        for stage, d in json.loads(diag_file.read_text()).items():
            alarms = [f"<b class='alarm'>{html.escape(v['message'])}</b>" if v["fired"] else html.escape(v["message"])
                      for k, v in d.items() if isinstance(v, dict)]
            rows.append(f"<tr><th>{stage}</th><td>{d['drift_from_start']:.4g}</td><td>{'<br>'.join(alarms)}</td></tr>")
        parts.append("<h2>Diagnostics</h2><table class='metrics'><tr><th>stage</th><th>velocity drift from its "
                     "start</th><th>alarms</th></tr>" + "".join(rows) + "</table>")
    parts.append("<h2>Training curves</h2>")
    for stage in ("sft", "grpo", "dpo"):
        uri = _curves(read_metrics(metrics_file, stage), stage)
        if uri:
            parts.append(f"<img class='plot' alt='{stage} curves' src='{uri}'>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}.d{color:#666}"
             ".grid{display:flex;flex-wrap:wrap;gap:8px}.video{image-rendering:pixelated;max-width:100%}"
             "figure{margin:0}.plot{max-width:100%;display:block;margin:6px 0}.alarm{color:#b00}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>vidtune {html.escape(run_dir.name)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    out = run_dir / "report.html"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out

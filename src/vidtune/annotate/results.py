"""Study results: GSB tables per aspect (statistics from ``vidtune.math.gsb``, ALGORITHMS.md §10.1), the GSB bar
chart, and the export of human-ranked pairs as the §8.2 JSONL read by ``vidtune.preference.pairs.read_pairs``.

System A is "ours": G = A judged better, B = B judged better. The bootstrap resamples prompts (all judgments of a
prompt — raters, seeds — move together), separately per aspect.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections import defaultdict
from pathlib import Path

from vidtune.annotate.store import open_study, study_info
from vidtune.errors import VidtuneError
from vidtune.math.gsb import gsb_bootstrap, gsb_stats, margin_normal_interval, sign_test, wilson_interval

_VOTES_SQL = """SELECT v.aspect, v.outcome, i.id AS item_id, i.prompt, s.annotator_id, s.a_side
FROM votes v JOIN assignments s ON s.id = v.assignment_id JOIN items i ON i.id = s.item_id ORDER BY v.id"""


def _finite(x):
    """NaN → None, so the tables are valid JSON (undefined statistics stay visibly undefined)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def aspect_table(outcomes: list[str], prompts: list[str], n_resamples: int = 2000, seed: int = 0) -> dict:
    """One aspect: counts, WinRate / Preference / Margin, Wilson (WinRate), prompt-bootstrap (all three), the i.i.d.
    normal Margin interval (reported alongside only) and the exact sign test."""
    g, s, b = (outcomes.count(x) for x in "GSB")
    st = gsb_stats(g, s, b)
    boot = gsb_bootstrap(outcomes, prompts, n_resamples=n_resamples, seed=seed)
    row = {"G": g, "S": s, "B": b, "N": st.n, "n_prompts": boot.n_prompts,
           "win_rate": st.win_rate, "preference": st.preference, "margin": st.margin,
           "win_rate_wilson": list(wilson_interval(g, g + b)), "win_rate_bootstrap": list(boot.win_rate),
           "preference_bootstrap": list(boot.preference), "margin_bootstrap": list(boot.margin),
           "margin_normal": list(margin_normal_interval(g, s, b)),
           "sign_test_p": sign_test(g, g + b) if g + b else float("nan"), "undefined": list(st.undefined)}
    return {k: _finite(v) for k, v in row.items()}


def gsb_tables(conn: sqlite3.Connection, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Every aspect's table plus the facts §10.1 asks to report (prompts, raters per item, left/right balance)."""
    info = study_info(conn)
    per: dict[str, tuple[list, list]] = {a: ([], []) for a in info["aspects"]}
    for r in conn.execute(_VOTES_SQL):
        per[r["aspect"]][0].append(r["outcome"])
        per[r["aspect"]][1].append(r["prompt"])
    done = conn.execute("SELECT item_id, annotator_id, a_side FROM assignments WHERE status = 'done'").fetchall()
    raters: dict[int, int] = defaultdict(int)
    for r in done:
        raters[r["item_id"]] += 1
    skipped = conn.execute("SELECT COUNT(*) FROM assignments WHERE status = 'skipped'").fetchone()[0]
    summary = {"study": info["name"], "system_a": info["system_a"], "system_b": info["system_b"],
               "n_items": info["n_items"], "n_items_judged": len(raters),
               "n_prompts": len({p for _, ps in per.values() for p in ps}),
               "n_annotators": len({r["annotator_id"] for r in done}), "n_judgments": len(done),
               "n_skipped": skipped, "raters_per_item": len(done) / len(raters) if raters else None,
               "a_left_fraction": sum(r["a_side"] == "left" for r in done) / len(done) if done else None}
    return {"summary": summary,
            "aspects": {a: aspect_table(o, p, n_resamples, seed) for a, (o, p) in per.items()}}


def study_tables(study: str | Path, n_resamples: int = 2000, seed: int = 0) -> dict:
    conn = open_study(study)
    try:
        return gsb_tables(conn, n_resamples, seed)
    finally:
        conn.close()


def gsb_chart(tables: dict, path: str | Path) -> Path:
    """Horizontal stacked bars per aspect — G (A better) / S / B (B better) shares of N — with the WinRate and the
    Margin's prompt-bootstrap interval at the right, in the style of the TeleBoost GSB figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, rows = tables["summary"], [(a, t) for a, t in tables["aspects"].items()]
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(rows) + 1.6))
    colours = {"G": "#3a9d5d", "S": "#b8b8b8", "B": "#d0544a"}
    labels = {"G": f"Good ({s['system_a']} better)", "S": "Same", "B": f"Bad ({s['system_b']} better)"}
    for y, (aspect, t) in enumerate(reversed(rows)):
        left = 0.0
        for k in "GSB":
            share = 100 * t[k] / t["N"] if t["N"] else 0.0
            ax.barh(y, share, left=left, color=colours[k], label=labels[k] if y == 0 else None, height=0.6)
            if share >= 6:
                ax.text(left + share / 2, y, f"{share:.0f}%", ha="center", va="center", fontsize=9)
            left += share
        lo, hi = t["margin_bootstrap"]
        text = "no votes" if not t["N"] else (
            f"WinRate {t['win_rate']:.1%}  Margin {t['margin']:+.1%} [{lo:+.1%}, {hi:+.1%}]  N={t['N']}"
            if t["win_rate"] is not None else f"all ties  N={t['N']}")
        ax.text(101.5, y, text, va="center", fontsize=8.5)
    ax.set_yticks(range(len(rows)), [a.replace("_", " ") for a, _ in reversed(rows)])
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of judgments (%);  [ ] = 95 % prompt-bootstrap interval of the Margin")
    ax.set_title(f"GSB: {s['system_a']} vs {s['system_b']} ({s['n_items_judged']} items, "
                 f"{s['n_prompts']} prompts, {s['n_annotators']} raters)", fontsize=10, pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def export_pairs(study: str | Path, out: str | Path, aspect: str = "overall", ties: str = "write") -> dict:
    """One §8.2 line per judged item: the raters' majority on ``aspect`` (n_G vs n_B) picks chosen/rejected; an
    equal count is a tie, written with ``tie: true`` (``ties="write"``) or left out (``"drop"``). Paths point to the
    exact ``.npy`` clips when the study has them (else the shown videos), relative to the JSONL file."""
    if ties not in ("write", "drop"):
        raise VidtuneError(f"ties must be 'write' or 'drop', got {ties!r}")
    study, out = Path(study), Path(out)
    conn = open_study(study)
    try:
        info = study_info(conn)
        if aspect not in info["aspects"]:
            raise VidtuneError(f"study {study} has no aspect {aspect!r} (it has {', '.join(info['aspects'])})")
        rows = conn.execute(
            """SELECT i.id, i.prompt, i.seed, COALESCE(i.raw_a, i.clip_a) AS a, COALESCE(i.raw_b, i.clip_b) AS b,
                      SUM(v.outcome = 'G') AS g, SUM(v.outcome = 'S') AS s, SUM(v.outcome = 'B') AS bad
               FROM votes v JOIN assignments x ON x.id = v.assignment_id JOIN items i ON i.id = x.item_id
               WHERE v.aspect = ? GROUP BY i.id ORDER BY i.id""", (aspect,)).fetchall()
    finally:
        conn.close()
    if not rows:
        raise VidtuneError(f"study {study} has no votes on {aspect!r} yet; nothing to export")
    out.parent.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath((study / p).resolve(), out.parent.resolve())  # noqa: E731
    lines, counts = [], {"pairs": 0, "ties": 0, "ties_written": 0}
    for r in rows:
        a_wins = r["g"] > r["bad"]
        row = {"prompt": r["prompt"], "chosen": rel(r["a"] if a_wins else r["b"]),
               "rejected": rel(r["b"] if a_wins else r["a"]), "weight": 1.0, "aspect": aspect,
               "source": f"human:{info['name']}", "seed": r["seed"],
               "votes": {"G": r["g"], "S": r["s"], "B": r["bad"]}}
        if r["g"] == r["bad"]:
            counts["ties"] += 1
            if ties == "drop":
                continue
            row["tie"] = True
            counts["ties_written"] += 1
        else:
            counts["pairs"] += 1
        lines.append(json.dumps(row))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(out)
    return counts

"""``vidtune annotate create|serve|export-pairs`` and ``vidtune gsb`` (mounted on the main app in vidtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from vidtune.errors import VidtuneError

annotate_app = typer.Typer(no_args_is_help=True, help="Human evaluation: side-by-side GSB studies and "
                                                      "human-ranked preference pairs.")
out = Console()
err = Console(stderr=True)
LOOPBACK = ("127.0.0.1", "localhost", "::1")

StudyArg = Annotated[Path, typer.Argument(help="Study folder (holds study.db and clips/).")]


@annotate_app.command("create")
def create(
    study: Annotated[Path, typer.Argument(help="New (or empty) study folder.")],
    a: Annotated[str, typer.Option("--a", help="System A ('ours'): checkpoint folder, builtin:base, or a folder "
                                               "of clips.")],
    b: Annotated[str, typer.Option("--b", help="System B (baseline), the same kind as --a.")],
    prompts: Annotated[Path, typer.Option(help="Prompts: text (one per line) or JSONL {prompt, seed?, clip?}.")],
    annotators: Annotated[int, typer.Option(help="Number of annotator tokens.")] = 3,
    seeds: Annotated[int, typer.Option(help="Seeds per prompt when rendering (seed, seed+1, …).")] = 1,
    seed: Annotated[int, typer.Option(help="First sampling seed.")] = 0,
    steps: Annotated[int, typer.Option(help="Euler steps (both systems).")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance (both systems).")] = 3.0,
    fmt: Annotated[str, typer.Option("--format", help="Shown clips: mp4 (synchronised playback) or gif.")] = "mp4",
    aspects: Annotated[Optional[str], typer.Option(help="Comma-separated aspects (default: all five).")] = None,
):
    """Build a study: render both checkpoints with identical settings (or collect two folders of clips)."""
    from vidtune.annotate.build import create_study
    from vidtune.annotate.store import ASPECTS

    chosen = tuple(x.strip() for x in aspects.split(",") if x.strip()) if aspects else ASPECTS
    res = create_study(study, a, b, prompts, annotators, aspects=chosen, steps=steps, guidance=guidance,
                       seed=seed, seeds_per_prompt=seeds, fmt=fmt)
    table = Table(title=f"study {res.study}: {res.n_items} items")
    table.add_column("who")
    table.add_column("token")
    table.add_row("admin", res.admin_token)
    for name, token in res.annotators:
        table.add_row(name, token)
    out.print(table)
    out.print(f"tokens are also in {res.study / 'tokens.txt'} (owner-only); the database keeps only their hashes\n"
              f"start the server with: vidtune annotate serve {res.study}", highlight=False)


@annotate_app.command("serve")
def serve(
    study: StudyArg,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8750,
):
    """Serve the annotation web app (annotators log in with their token; admin page at /admin)."""
    from vidtune.annotate import server

    if host not in LOOPBACK:
        err.print(f"[yellow]warning:[/yellow] listening on {host}: anyone who can reach it can try tokens; the "
                  "server speaks plain HTTP")
    try:
        srv = server.serve(study, host, port)
    except OSError as e:
        raise VidtuneError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    out.print(f"serving study {study} at http://{host}:{srv.server_port}/ (admin: /admin); Ctrl-C stops",
              highlight=False)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()


@annotate_app.command("export-pairs")
def export_pairs(
    study: StudyArg,
    out_path: Annotated[Path, typer.Argument(help="Output JSONL (ALGORITHMS.md §8.2).")],
    aspect: Annotated[str, typer.Option(help="Which aspect's votes rank the pair.")] = "overall",
    drop_ties: Annotated[bool, typer.Option(help="Leave ties out instead of writing them with tie: true.")] = False,
):
    """Write the human-ranked pairs (majority of raters per item) for Stage III."""
    from vidtune.annotate.results import export_pairs as run

    c = run(study, out_path, aspect, "drop" if drop_ties else "write")
    out.print(f"[green]wrote[/green] {out_path}: {c['pairs']} pairs, {c['ties']} ties "
              f"({c['ties_written']} written with tie: true)")


def _num(x, f: str = "{:.4f}") -> str:
    return "–" if x is None else f.format(x)


def _ci(v: list) -> str:
    return "–" if v[0] is None else f"[{v[0]:.3f}, {v[1]:.3f}]"


def gsb(
    study: StudyArg,
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="Bar chart PNG (default STUDY/gsb.png; "
                                                                         "the tables go beside it as .json).")] = None,
    resamples: Annotated[int, typer.Option(help="Prompt-bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
):
    """GSB of a study per aspect: WinRate, Preference, Margin with Wilson and prompt-bootstrap 95 % intervals."""
    import json

    from vidtune.annotate.results import gsb_chart, study_tables

    if resamples < 1:
        raise VidtuneError(f"--resamples must be >= 1, got {resamples}")
    t = study_tables(study, resamples, seed)
    s = t["summary"]
    table = Table(title=f"GSB {s['system_a']} (A) vs {s['system_b']} (B): {s['n_judgments']} judgments, "
                        f"{s['n_items_judged']} items, {s['n_prompts']} prompts, {s['n_annotators']} raters")
    intervals = Table(title="95 % intervals (bootstrap over prompts; normal Margin interval only alongside)")
    for col in ("aspect", "G", "S", "B", "N", "prompts", "WinRate", "Preference", "Margin", "sign-test p"):
        table.add_column(col, justify="left" if col == "aspect" else "right")
    for col in ("aspect", "WinRate Wilson", "WinRate boot", "Preference boot", "Margin boot", "Margin normal"):
        intervals.add_column(col, justify="left" if col == "aspect" else "right", no_wrap=True)
    for aspect, r in t["aspects"].items():
        name = aspect.replace("_", " ")
        table.add_row(name, *(str(r[k]) for k in ("G", "S", "B", "N", "n_prompts")), _num(r["win_rate"]),
                      _num(r["preference"]), _num(r["margin"], "{:+.4f}"), _num(r["sign_test_p"], "{:.3g}"))
        intervals.add_row(name, *(_ci(r[k]) for k in ("win_rate_wilson", "win_rate_bootstrap",
                                                      "preference_bootstrap", "margin_bootstrap", "margin_normal")))
    out.print(table, intervals)
    rpi, left = _num(s["raters_per_item"], "{:.2f}"), _num(s["a_left_fraction"], "{:.1%}")
    out.print(f"skipped {s['n_skipped']}; raters per judged item {rpi}; A shown on the left {left}; "
              "– = undefined (no judgments, or no non-tie for WinRate)", highlight=False)
    png = Path(out_path) if out_path else Path(study) / "gsb.png"
    if png.suffix.lower() != ".png":
        raise VidtuneError(f"--out must end in .png, got {png}")
    gsb_chart(t, png)
    png.with_suffix(".json").write_text(json.dumps(t, indent=1))
    out.print(f"[green]wrote[/green] {png} and {png.with_suffix('.json')}")

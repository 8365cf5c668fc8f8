"""The ``vidtune`` command line (typer + rich). Logic lives in the stages; this file parses and reports."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console

from vidtune.errors import VidtuneError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Post-training and alignment of video diffusion models (SFT → GRPO → DPO).")
err = Console(stderr=True)
out = Console(quiet=os.environ.get("RANK", "0") != "0")  # under torchrun, rank 0 alone reports

RecipeArg = Annotated[Optional[Path], typer.Argument(help="YAML recipe (default: the embedded ShapeWorld recipe).")]
Overrides = Annotated[Optional[list[str]], typer.Argument(help="Dotted overrides, e.g. pretrain.steps=100.")]


def _recipe(recipe: Path | None, overrides: list[str] | None):
    from vidtune.config import load_recipe

    overrides = list(overrides or [])
    if recipe is not None and "=" in str(recipe) and not recipe.exists():  # `vidtune pretrain a.b=1` (no recipe)
        overrides.insert(0, str(recipe))
        recipe = None
    return load_recipe(recipe, overrides)


def _run_dir(r) -> Path:
    return Path(r.run.out_dir) / r.run.name


@app.command()
def validate(recipe: Annotated[Path, typer.Argument(help="YAML recipe.")], overrides: Overrides = None):
    """Check a recipe (keys, types, cross-field rules) without running anything."""
    _recipe(recipe, overrides)
    out.print(f"[green]ok[/green] {recipe}")


@app.command("check-data")
def check_data(
    path: Annotated[Path, typer.Argument(help="A .jsonl manifest or a folder of videos with same-named .txt captions.")],
    frames: Annotated[int, typer.Option(min=1, help="Frames sampled uniformly from each clip.")] = 8,
    size: Annotated[int, typer.Option(min=1, help="Height = width the frames are resized to.")] = 32,
    on_bad: Annotated[Literal["error", "skip"], typer.Option(
        "--on-bad", help="error: fail naming every bad clip; skip: leave bad clips out and list them.")] = "error",
):
    """Validate an SFT video dataset (decodes every clip, as sft.data.source=video_folder does) and summarise it."""
    from rich.markup import escape
    from rich.table import Table

    from vidtune.data.video_folder import load_video_dataset

    ds = load_video_dataset(path, frames, size, size, on_bad)
    table = Table(title=f"dataset {escape(str(path))}")
    table.add_column("")
    table.add_column("value")
    table.add_row("usable clips", str(len(ds.captions)))
    table.add_row("skipped (bad)", str(len(ds.skipped)))
    table.add_row("clip tensor", f"uint8 [3, {frames}, {size}, {size}]")
    for bad in ds.skipped:
        table.add_row(f"[red]bad[/red] {escape(bad.where)}", escape(bad.reason))
    out.print(table)


@app.command("print-config")
def print_config(recipe: RecipeArg = None, overrides: Overrides = None):
    """Print the fully resolved recipe (defaults filled in, overrides applied)."""
    from vidtune.config import recipe_to_yaml

    out.print(recipe_to_yaml(_recipe(recipe, overrides)), end="", markup=False, highlight=False)


@app.command()
def pretrain(recipe: RecipeArg = None, overrides: Overrides = None):
    """Stage 0: pretrain the tiny generator on loose captions (resumes from the run directory)."""
    from vidtune.stages import pretrain as stage

    r = _recipe(recipe, overrides)
    path = stage.run(r, _run_dir(r))
    out.print(f"[green]model written to[/green] {path}")


@app.command("train-scorer")
def train_scorer(recipe: RecipeArg = None, overrides: Overrides = None):
    """Train the learned video–text scorer (contrastive, hard negatives; resumes from the run directory)."""
    from vidtune.stages import train_scorer as stage

    r = _recipe(recipe, overrides)
    path = stage.run(r, _run_dir(r))
    out.print(f"[green]scorer written to[/green] {path}")


@app.command()
def sft(recipe: RecipeArg = None, overrides: Overrides = None):
    """Stage I: SFT on instruction captions with structure-aware weights (resumes from the run directory)."""
    from vidtune.stages import sft as stage

    r = _recipe(recipe, overrides)
    path = stage.run(r, _run_dir(r))
    out.print(f"[green]SFT model written to[/green] {path}")


@app.command()
def grpo(recipe: RecipeArg = None, overrides: Overrides = None):
    """Stage II: GRPO (+ ViPO / BPGO / self-paced / joint reward switches), resumable."""
    from vidtune.stages import grpo as stage

    r = _recipe(recipe, overrides)
    out.print(f"[green]GRPO model written to[/green] {stage.run(r, _run_dir(r))}")


@app.command()
def dpo(recipe: RecipeArg = None, overrides: Overrides = None):
    """Stage III: Diffusion-DPO with constructed preference pairs, resumable."""
    from vidtune.stages import dpo as stage

    r = _recipe(recipe, overrides)
    out.print(f"[green]DPO model written to[/green] {stage.run(r, _run_dir(r))}")


@app.command("run")
def run_cmd(recipe: RecipeArg = None, overrides: Overrides = None,
            resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this directory.")] = None,
            overwrite: Annotated[bool, typer.Option(help="Delete an existing run directory of the same name and "
                                                         "start again.")] = False):
    """The main job: base → SFT → GRPO → DPO with evaluation between stages and report.html."""
    from vidtune.pipeline import resume_recipe, run_pipeline

    if resume is not None:
        if recipe is not None or overrides or overwrite:
            raise VidtuneError("--resume takes the run's own config.yaml; do not pass a recipe, overrides or "
                               "--overwrite")
        r = resume_recipe(resume)
        path = run_pipeline(r, resume, resume=True)
    else:
        r = _recipe(recipe, overrides)  # no recipe: the embedded ShapeWorld defaults (= recipes/shapeworld.yaml)
        path = run_pipeline(r, _run_dir(r), overwrite=overwrite)
    out.print(f"[green]done[/green] {path}")


@app.command()
def sample(
    prompt: Annotated[str, typer.Argument(help="A prompt (tiny model: ShapeWorld words, e.g. 'a red circle falls').")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Output .mp4 or .gif.")] = Path("sample.mp4"),
    model: Annotated[str, typer.Option(help="Model folder (tiny, Wan, or a stage's Wan LoRA output), Wan hub id, "
                                            "or builtin:base.")] = "builtin:base",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    n: Annotated[int, typer.Option("--num", "-n", help="Number of videos (tiled side by side).")] = 1,
    steps: Annotated[int, typer.Option(help="Euler steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 3.0,
    best_of: Annotated[int, typer.Option("--best-of", help="Candidates per video; keep the best by --reward.")] = 1,
    reward: Annotated[str, typer.Option(help="Registered reward ranking best-of-N candidates.")] = "verifier",
    recipe: Annotated[Optional[Path], typer.Option(help="Recipe for model.options (Wan clip size, dtype…), "
                                                        "run.device and sampling.shift.")] = None,
    overrides: Overrides = None,
):
    """Generate a video for a prompt with a trained model (optionally best-of-N by a reward)."""
    import numpy as np

    from vidtune.models.factory import inference_policy, prompt_checker
    from vidtune.sampling.ode import generate
    from vidtune.video.io import save_video, video_grid

    if out_path.suffix.lower() not in (".mp4", ".gif"):
        raise VidtuneError(f"--out must end in .mp4 or .gif, got {out_path}")
    r = _recipe(recipe, overrides)
    policy = inference_policy(model, r)
    prompt_checker(policy)(prompt)
    shift = r.sampling.shift
    if best_of > 1:
        from vidtune.rewards.base import build_reward
        from vidtune.sampling.best_of_n import best_of_n

        res = best_of_n(policy, [prompt] * n, [seed + i for i in range(n)], best_of, build_reward(reward),
                        steps=steps, shift=shift, guidance=guidance)
        videos = res.videos
        out.print(f"best-of-{best_of} by {reward}: chosen scores {[round(float(x), 3) for x in res.scores]}")
    else:
        videos = generate(policy, [prompt] * n, [seed + i for i in range(n)], steps=steps, shift=shift,
                          guidance=guidance)
    if n == 1:
        save_video(videos[0], out_path)
    else:
        import torch

        grid = video_grid(list(videos), nrow=n, scale=4)
        save_video(torch.from_numpy(grid.astype(np.float32) / 255).permute(0, 3, 1, 2), out_path, scale=1)
    out.print(f"[green]wrote[/green] {out_path}")


def _print_summary(title: str, result: dict, against: dict | None = None) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("mean [95% CI]", justify="right")
    table.add_column("n", justify="right")
    if against:
        table.add_column("Δ vs other", justify="right")
    for name, row in result["summary"].items():
        if row["n"] == 0:
            continue
        cells = [name, f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}]", str(row["n"])]
        if against:
            o = against["summary"].get(name, {})
            cells.append(f"{row['mean'] - o['mean']:+.3f}" if o.get("n") else "")
        table.add_row(*cells)
    vb = result.get("vbench")
    if vb:
        dims = ", ".join(f"{k} {v:.3f}" for k, v in vb["dimensions"].items() if v == v)
        table.caption = f"VBench-style: Quality {vb['quality']:.3f}, Semantic {vb['semantic']:.3f}, " \
                        f"Total {vb['total']:.3f} ({dims})"
    out.print(table)


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Model folder (tiny, Wan, or a stage's Wan LoRA output), Wan hub "
                                                   "id, or builtin:base.")],
    against: Annotated[Optional[str], typer.Option(help="A second checkpoint to compare with.")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="Recipe for eval/sampling settings, model.options and "
                                                        "run.device.")] = None,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="JSON output.")] = Path("eval.json"),
    overrides: Overrides = None,
):
    """Evaluate a checkpoint on fixed seen + held-out prompts (deterministic for a fixed eval.seed)."""
    from vidtune.models.factory import inference_policy
    from vidtune.stages.evaluate import evaluate_policy, write_eval

    r = _recipe(recipe, overrides)
    res = evaluate_policy(inference_policy(checkpoint, r), r)
    write_eval(res, out_path)
    other = None
    if against:
        other = evaluate_policy(inference_policy(against, r), r)
        write_eval(other, out_path.with_name(out_path.stem + ".against.json"))
    _print_summary(f"eval {checkpoint}", res, other)
    out.print(f"[green]wrote[/green] {out_path}")


from vidtune.annotate.cli import annotate_app, gsb as _gsb  # noqa: E402  (typer/rich only; heavy imports are lazy)

app.add_typer(annotate_app, name="annotate")
app.command("gsb")(_gsb)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        app()
    except VidtuneError as e:
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()

"""`vidtune run`: base → Stage I → Stage II → Stage III with evaluation between stages, resume and a report.

The run directory is the whole state (DESIGN.md §1)::

    runs/<name>/config.yaml            resolved recipe (a resumed run must match it)
    runs/<name>/metrics.jsonl          every stage's training metrics (append-only, fsynced)
    runs/<name>/tensorboard/<stage>/   the same scalars as TensorBoard event files (run.tensorboard)
    runs/<name>/<stage>/checkpoint/    resumable training state (atomic)
    runs/<name>/<stage>/model/         exported checkpoint; <stage>/DONE marks a finished stage
    runs/<name>/evals/<stage>.json     evaluation after each stage (fixed prompts and seeds)
    runs/<name>/report.html            the report

Every file is written atomically, so ``vidtune run --resume runs/<name>`` after a crash or kill -9 continues from
the last finished stage and the last checkpoint inside the running one, and ends with the same metrics.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vidtune.config import Recipe, load_recipe, recipe_to_yaml
from vidtune.errors import VidtuneError
from vidtune.models.factory import inference_policy, resolve_device
from vidtune.models.tiny import resolve_model_path
from vidtune.runlog import make_run_dir
from vidtune.stages import evaluate


def _stage_runner(name: str):
    match name:
        case "sft":
            from vidtune.stages.sft import run
        case "grpo":
            from vidtune.stages.grpo import run
        case "dpo":
            from vidtune.stages.dpo import run
        case _:
            raise VidtuneError(f"unknown stage {name!r}")
    return run


def prepare_run_dir(recipe: Recipe, run_dir: Path, resume: bool, overwrite: bool = False) -> None:
    """Create the run directory with its resolved config.yaml; an existing run is refused unless it is resumed
    (with the same recipe values) or ``overwrite`` deletes it first."""
    cfg_file = run_dir / "config.yaml"
    text = recipe_to_yaml(recipe)
    if cfg_file.exists() and overwrite:
        shutil.rmtree(run_dir)
    if cfg_file.exists():
        if not resume:
            raise VidtuneError(f"run directory {run_dir} already exists; use `vidtune run --resume {run_dir}`, "
                               "`--overwrite`, or choose another run.name")
        if load_recipe(cfg_file) != recipe:  # compare values: keys added by a newer vidtune take their defaults
            raise VidtuneError(f"{cfg_file} differs from the recipe given; resume with the run's own config "
                               f"(`vidtune run --resume {run_dir}` without a recipe)")
        if cfg_file.read_text() != text:  # same values, older layout: record the full resolved recipe
            tmp = cfg_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(cfg_file)
        return
    make_run_dir(run_dir)
    tmp = cfg_file.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(cfg_file)


def base_model(recipe: Recipe) -> str:
    """The checkpoint the first stage starts from: the tiny ``model.init`` folder (``builtin:base`` when null), or
    the Wan ``model.path`` / ``model.hub_id``."""
    if recipe.model.type == "wan":
        return recipe.model.path or recipe.model.hub_id
    return str(resolve_model_path(recipe.model.init or "builtin:base"))


def evaluate_stage(name: str, model_path: str, recipe: Recipe, run_dir: Path, progress: bool) -> dict:
    out = run_dir / "evals" / f"{name}.json"
    if out.exists():
        return json.loads(out.read_text())
    res = evaluate.evaluate_policy(inference_policy(model_path, recipe), recipe, progress=progress)
    evaluate.write_eval(res, out)
    from vidtune.video.io import save_video, video_grid
    import numpy as np
    import torch

    grid = video_grid(list(res["videos"]), nrow=len(res["videos"]), scale=3)
    save_video(torch.from_numpy(grid.astype(np.float32) / 255).permute(0, 3, 1, 2), run_dir / "samples" /
               f"{name}.gif", scale=1)
    return json.loads(out.read_text())


def stage_diagnostics(name: str, prev_model: str, model: str, prev_eval: dict, this_eval: dict,
                      run_dir: Path, recipe: Recipe) -> dict:
    """Drift from the stage's starting point, and for GRPO the reward-hacking and saturation alarms."""
    import torch

    from vidtune.metrics.diagnostics import divergence_alarm, saturation_alarm, velocity_drift
    from vidtune.runlog import read_metrics

    new, old = inference_policy(model, recipe), inference_policy(prev_model, recipe)
    c = new.config
    g = torch.Generator().manual_seed(recipe.eval.seed)
    x = torch.randn(8, *new.latent_shape(c.frames, c.height, c.width), generator=g).to(new.device)
    t = torch.rand(8, generator=g).to(new.device)
    cond = new.encode_prompts(this_eval["prompts"][:8] + [""] * max(0, 8 - len(this_eval["prompts"])))
    with torch.no_grad():
        out = {"drift_from_start": velocity_drift(new, old, x, t, cond)}

    def heldout(ev):
        return ev["slices"].get("heldout", {}).get("verifier", {}).get("mean", float("nan"))

    if name == "grpo":
        rows = read_metrics(run_dir / "metrics.jsonl", "grpo")
        hack = divergence_alarm([r["reward"] for r in rows], heldout(prev_eval), heldout(this_eval))
        sat = saturation_alarm([r.get("group_std_mean", float("nan")) for r in rows])
        out |= {"reward_hacking": hack._asdict(), "saturation": sat._asdict()}
        for a in (hack, sat):
            if a.fired:
                print(f"[alarm] {name}: {a.message}")
    return out


def run_pipeline(recipe: Recipe, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 overwrite: bool = False) -> Path:
    run_dir = Path(run_dir)
    resolve_device(recipe.run.device)  # a missing GPU fails before the run directory is created
    prepare_run_dir(recipe, run_dir, resume, overwrite)
    base = base_model(recipe)
    prev, prev_eval = base, evaluate_stage("base", base, recipe, run_dir, progress)
    diag_file = run_dir / "evals" / "diagnostics.json"
    diagnostics = json.loads(diag_file.read_text()) if diag_file.exists() else {}
    for name in recipe.pipeline.stages:
        stage_dir = run_dir / name
        if not (stage_dir / "DONE").exists():
            print(f"== stage {name} (from {prev})")
            _stage_runner(name)(recipe, run_dir, init=prev, progress=progress)
            (stage_dir / "DONE").write_text(prev + "\n")
        model = str(stage_dir / "model")
        this_eval = evaluate_stage(name, model, recipe, run_dir, progress)
        if name not in diagnostics:
            diagnostics[name] = stage_diagnostics(name, prev, model, prev_eval, this_eval, run_dir, recipe)
            tmp = diag_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(diagnostics, indent=1, default=float))
            tmp.replace(diag_file)
        prev, prev_eval = model, this_eval
    if recipe.pipeline.report:
        from vidtune.report import write_report

        return write_report(run_dir)
    return run_dir


def resume_recipe(run_dir: str | Path) -> Recipe:
    cfg = Path(run_dir) / "config.yaml"
    if not cfg.is_file():
        raise VidtuneError(f"{run_dir} is not a run directory (no config.yaml)")
    return load_recipe(cfg)

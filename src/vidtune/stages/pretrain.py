"""Stage 0 — flow-matching pretraining of the tiny generator on loose captions (the shipped base model).

Each step's data (clip indices, t, noise, prompt dropout, I2V choice) is a pure function of (seed, step), so a
resumed run sees exactly the batches an uninterrupted run would. Checkpoints are written atomically every
``pretrain.ckpt_every`` steps; the EMA weights are exported as a model folder ``<run>/pretrain/model``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vidtune.config import Recipe
from vidtune.errors import VidtuneError
from vidtune.models.tiny import TinyConfig, TinyVideoPolicy, load_tiny
from vidtune.math.schedules import warmup_stable_decay
from vidtune.progress import make_progress
from vidtune.stages.fm_step import draw_batch, fm_loss
from vidtune.stages.optim_step import SkipGuard, clipped_step
from vidtune.runlog import MetricsWriter, rewind_metrics, atomic_torch_save, load_checkpoint, make_run_dir
from vidtune.world.dataset import captions, examples, render_bank, with_pan_contrast


def build_model(recipe: Recipe) -> TinyVideoPolicy:
    """The model to pretrain: ``model.init`` (grown by a refiner when ``model.refiner`` asks for one it lacks) or a
    random one of the recipe's architecture, seeded by ``run.seed``."""
    m, w = recipe.model, recipe.world
    torch.manual_seed(recipe.run.seed)
    if m.init is None:
        return TinyVideoPolicy(TinyConfig(
            frames=w.frames, size=w.size, patch=m.patch, hidden=m.hidden, depth=m.depth, heads=m.heads,
            mlp_ratio=m.mlp_ratio, text_len=m.text_len, text_layers=m.text_layers, refiner=m.refiner or 0))
    policy = load_tiny(m.init)
    have = policy.config.refiner
    if m.refiner and not have:
        policy.attach_refiner(m.refiner)
    elif m.refiner is not None and m.refiner != have:
        raise VidtuneError(f"model.refiner={m.refiner}, but model.init={m.init} has a refiner of {have} channels")
    return policy



def run(recipe: Recipe, run_dir: str | Path, progress: bool = True) -> Path:
    cfg, world, seed = recipe.pretrain, recipe.world, recipe.run.seed
    torch.set_num_threads(recipe.run.threads)
    stage_dir = make_run_dir(Path(run_dir) / "pretrain")
    metrics = MetricsWriter(Path(run_dir) / "metrics.jsonl", "pretrain", tensorboard=recipe.run.tensorboard)

    exs = with_pan_contrast(examples(cfg.dataset_size, seed, world, split="train"), cfg.pan_contrast)
    bank = render_bank(exs, world, progress=progress)
    texts = captions(exs, "loose", seed, world.p_loose_motion, world.p_loose_camera, world.p_loose_order)

    model = build_model(recipe).train()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    ckpt_path = stage_dir / "checkpoint" / "state.pt"
    if (state := load_checkpoint(ckpt_path)) is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    print(f"pretrain: {len(exs)} clips, batch {cfg.batch_size}, steps {start}→{cfg.steps}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params")

    def save(step: int) -> None:
        atomic_torch_save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                           "step": step}, ckpt_path)
        ema.module.save_pretrained(stage_dir / "model")

    t_last, loss_acc, n_acc = time.time(), 0.0, 0
    rewind_metrics(metrics.path, "pretrain", start)
    guard = SkipGuard("pretrain")  # steps skipped on a non-finite gradient; 3 in a row stop the run
    with make_progress() as bar:
        task = bar.add_task("pretrain", total=cfg.steps, completed=start, info="", visible=progress)
        for step in range(start, cfg.steps):
            fb = draw_batch(step, seed, len(exs), cfg.batch_size, cfg.cond_dropout, cfg.p_i2v, cfg.t_sampler,
                            cfg.t_loc, cfg.t_scale)
            loss = fm_loss(model, bank[fb.index].float() / 255.0, [texts[i] for i in fb.index.tolist()], fb).loss
            for group in opt.param_groups:
                group["lr"] = warmup_stable_decay(step, cfg.lr, cfg.warmup, cfg.steps, cfg.cooldown)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = clipped_step(opt, list(model.parameters()), cfg.max_grad_norm)
            guard.record(gnorm, step + 1)
            ema.update_parameters(model)
            loss_acc, n_acc = loss_acc + loss.item(), n_acc + 1
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                dt = (time.time() - t_last) / n_acc
                metrics.log(step + 1, loss=loss_acc / n_acc, grad_norm=gnorm, skipped_step=guard.total, lr=opt.param_groups[0]["lr"],
                            step_time=dt)
                bar.update(task, info=f"loss {loss_acc / n_acc:.4f}  {dt * 1000:.0f} ms/step")
                t_last, loss_acc, n_acc = time.time(), 0.0, 0
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                save(step + 1)
            bar.advance(task)
    if start >= cfg.steps and not (stage_dir / "model" / "config.json").exists():
        save(cfg.steps)
    return stage_dir / "model"

"""Stage I — flow-matching SFT on instruction captions that shapes the reference policy (ALGORITHMS.md §7).

Data: instruction-captioned ShapeWorld clips, of which a ``sft.control_ratio`` minority comes from a curated
control mix (two-segment motions and camera pans over-represented). Each clip's structural-instability score ψ
(metrics/structure.py, computed once on the target with the renderer's exact flow and masks) becomes a per-sample
weight ω (math/structure_weights.py); ``sft.structure.source: reconstruction`` scores the model's own one-step
prediction instead, refreshed during training (stages/sft_structure.py). Full fine-tune, or LoRA through peft.
Resumable from atomic checkpoints (trainable parameters, optimiser, reconstruction scores); exports
``<run>/sft/model`` (tiny: adapters merged; Wan: LoRA files), which later stages load as their reference policy.

Data parallel: launched by ``torchrun --nproc_per_node N -m vidtune.cli sft …`` the stage joins the process group
and trains the tiny model under DDP, each rank on its shard of the single-process global batch (same weights as
one process, to float rounding); rank 0 alone writes metrics, checkpoints and the export (docs/scaling.md).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import NamedTuple

import torch

from vidtune.config import Recipe
from vidtune.data.video_folder import farneback_flows, load_sft_videos
from vidtune.errors import VidtuneError
from vidtune.math.schedules import warmup_stable_decay
from vidtune.math.structure_weights import resize_flow, score_percentiles, structure_weights
from vidtune.metrics.structure import structural_instability
from vidtune.models.factory import attach_lora, load_policy, load_trainable_state
from vidtune.models.lora import merge_lora
from vidtune.models.tiny import TinyVideoPolicy
from vidtune.progress import make_progress, track
from vidtune.runlog import MetricsWriter, rewind_metrics, load_checkpoint, make_run_dir
from vidtune.runtime.distributed import (ForwardWith, World, check_world, reduce_over_ranks, run_stage, shard,
                                         wrap_ddp)
from vidtune.runtime.fsdp import export_stage, prepare_training, save_stage_checkpoint
from vidtune.stages.fm_step import Negatives, draw_batch, fm_loss
from vidtune.stages.optim_step import SkipGuard, clipped_step
from vidtune.stages.sft_structure import RollingScores, reconstruction_scores, refresh_interval
from vidtune.world.counterfactual import counterfactual_bank
from vidtune.world.dataset import Example, captions, examples, render_bank, with_pan_contrast


def sft_examples(recipe: Recipe) -> list[Example]:
    """The SFT mix: (1 − control_ratio) general instruction clips + control_ratio curated control clips, whose
    camera pans are rendered with ``sft.control_contrast`` × the background texture (curated camera data is chosen
    where the camera's motion is visible)."""
    cfg, world, seed = recipe.sft, recipe.world, recipe.run.seed
    n_ctrl = round(cfg.dataset_size * cfg.control_ratio)
    control = world.model_copy(update={"p_then": 0.7, "p_camera": 0.7, "p_pour": 0.02})
    curated = with_pan_contrast(examples(n_ctrl, seed + 202, control, "train"), cfg.control_contrast)
    return examples(cfg.dataset_size - n_ctrl, seed + 101, world, "train") + curated


def target_signals(exs: list[Example], recipe: Recipe, grid: tuple[int, int] | None, progress: bool):
    """Per target clip: ψ (exact renderer flow and masks; zeros when re-weighting is off) and, for a decoder
    ``grid`` (physics-aware SFT), the ground-truth flow resized to it with vectors rescaled (ALGORITHMS.md §7.3)
    → ([N], [N, F−1, 2, H', W'] or None without a grid)."""
    st, world = recipe.sft.structure, recipe.world
    psi, flows = [], []
    for e in track(exs, "targets: structure + flow", disable=not progress):
        clip = e.render(world)
        psi.append(structural_instability(clip.video, clip.masks, st.w_bg, st.w_obj, flows=clip.flow)
                   if st.enabled else 0.0)
        if grid is not None:
            flows.append(resize_flow(torch.from_numpy(clip.flow), grid, mode="area"))
    return torch.tensor(psi, dtype=torch.float32), None if grid is None else torch.stack(flows)


class SFTData(NamedTuple):
    bank: torch.Tensor  # uint8 [N, F, 3, H, W] target clips
    texts: list[str]  # their captions
    psi: torch.Tensor  # [N] structural instability ψ (zeros when re-weighting is off)
    flow_targets: torch.Tensor | None  # [N, F−1, 2, H', W'] decoder-grid flow (physics-aware SFT) or None
    negatives: tuple[torch.Tensor, torch.Tensor] | None = None  # counterfactual bank uint8 [N, F, 3, H, W], has [N]


def stable_mask(psi: torch.Tensor, hard_limit: float | None) -> torch.Tensor:
    """Clips kept for training: ψ ≤ ``sft.structure.hard_limit`` (broken targets are left out); an empty result is
    an error, so training never starts on an empty dataset."""
    keep = torch.ones(len(psi), dtype=torch.bool) if hard_limit is None else ~(psi > hard_limit)
    if not bool(keep.any()):
        raise VidtuneError("the SFT dataset is empty (sft.dataset_size, or every clip above sft.structure.hard_limit)")
    return keep


def shapeworld_data(recipe: Recipe, grid: tuple[int, int] | None, progress: bool) -> SFTData:
    """Rendered instruction clips of the SFT mix with ψ and flow targets from the renderer's exact ground truth."""
    exs = sft_examples(recipe)
    psi, flows = target_signals(exs, recipe, grid, progress)
    keep = stable_mask(psi, recipe.sft.structure.hard_limit)
    exs = [e for e, k in zip(exs, keep.tolist()) if k]
    bank = render_bank(exs, recipe.world, progress=progress)
    texts = captions(exs, "instruction", recipe.run.seed, 0.0)
    negatives = (counterfactual_bank(exs, recipe.world, recipe.run.seed + 303, recipe.sft.counterfactual_order)
                 if recipe.sft.contrastive_lambda > 0 else None)
    return SFTData(bank, texts, psi[keep], None if flows is None else flows[keep], negatives)


def folder_data(recipe: Recipe, clip, grid: tuple[int, int] | None, progress: bool) -> SFTData:
    """The user's clips (``sft.data``, data/video_folder.py) at the policy's clip size ``clip`` (frames, height,
    width); without ground truth, ψ uses estimated flow and no object masks, and physics targets are OpenCV
    Farnebäck flow resized to the decoder grid."""
    st = recipe.sft.structure
    videos, texts = load_sft_videos(recipe.sft.data, clip.frames, clip.height, clip.width)  # [N, 3, F, H, W]
    bank = videos.permute(0, 2, 1, 3, 4).contiguous()
    psi = torch.tensor([structural_instability(v.float() / 255.0, None, st.w_bg, st.w_obj) if st.enabled else 0.0
                        for v in track(bank, "targets: structure", disable=not progress)], dtype=torch.float32)
    flows = None
    if grid is not None:
        flows = resize_flow(farneback_flows(videos).permute(0, 2, 1, 3, 4), grid, mode="area")
    keep = stable_mask(psi, st.hard_limit)
    return SFTData(bank[keep], [t for t, k in zip(texts, keep.tolist()) if k], psi[keep],
                   None if flows is None else flows[keep])


def trainable_policy(recipe: Recipe, init: str | None = None):
    """The policy SFT trains: ``init`` (else the recipe's model), with the motion branch on a frozen backbone
    (``sft.physics``, tiny model only), boosted text positions (``sft.text_pos_gain``, tiny model only) and LoRA
    adapters (``sft.lora_rank``) as the recipe asks."""
    policy = load_policy(init or recipe, recipe.model.options)
    ph = recipe.sft.physics
    if ph.enabled:
        if not isinstance(policy, TinyVideoPolicy):
            raise VidtuneError("sft.physics.enabled needs the embedded model's motion branch; a Wan policy has none")
        if policy.config.patch[0] != 1:
            raise VidtuneError(f"sft.physics.enabled needs a temporal patch of 1 (one token frame per pixel frame, so "
                               f"the flow head's pairs are the renderer's); this model's patch is "
                               f"{tuple(policy.config.patch)}")
        if not policy.config.motion_branch:
            with torch.random.fork_rng():  # the branch's initial weights depend on run.seed only
                torch.manual_seed(recipe.run.seed + 17)
                policy.attach_motion_branch(ph.decoder_blocks)
        policy.freeze_backbone()  # only decoder-level parameters (and the branch) train
    gain = recipe.sft.text_pos_gain
    if gain is not None:
        if not isinstance(policy, TinyVideoPolicy):
            raise VidtuneError("sft.text_pos_gain grows the embedded model's text positions; a Wan policy has a T5")
        if not policy.config.text_pos_gain:
            policy.attach_text_positions(gain)
        elif policy.config.text_pos_gain != gain:
            raise VidtuneError(f"sft.text_pos_gain={gain}, but the model's text positions have gain "
                               f"{policy.config.text_pos_gain}")
    if recipe.sft.lora_rank:
        attach_lora(policy, recipe.sft.lora_rank, recipe.sft.lora_targets, seed=recipe.run.seed + 11)
    return policy.train()


def export(policy, folder: Path) -> Path:
    """The stage's model folder, which the next stage loads: the tiny model as a plain checkpoint (LoRA adapters
    merged into a copy); a Wan policy through its ``save_pretrained`` (LoRA files naming the base and the earlier
    stages' LoRA folders they apply to, or the whole pipeline without adapters)."""
    if not isinstance(policy, TinyVideoPolicy):
        return policy.save_pretrained(folder)
    plain = merge_lora(copy.deepcopy(policy)) if any("lora_" in n for n, _ in policy.named_parameters()) else policy
    return plain.save_pretrained(folder)


def check_data_parallel(recipe: Recipe, world: World) -> None:
    """A multi-process job needs an ``sft.batch_size`` that splits evenly over the ranks."""
    check_world(world, "sft.batch_size", recipe.sft.batch_size)


def loss_module(policy, ddp: bool, device: torch.device) -> torch.nn.Module:
    """``module(video, prompts, fb, …)`` = :func:`fm_loss` on ``policy``: wrapped in DDP (gradients averaged over the
    ranks during backward) when ``ddp``, else plain (one process, or a policy sharded by FSDP, whose own hooks
    average the gradients)."""
    step = ForwardWith(policy, fm_loss)
    return wrap_ddp(step, device=device) if ddp else step


def run(recipe: Recipe, run_dir: str | Path, init: str | None = None, progress: bool = True) -> Path:
    """Train Stage I and export its model folder (see the module docstring); in a torchrun job every rank calls
    this and gets the export's path once rank 0 has written it."""
    return run_stage(train, check_data_parallel, recipe, run_dir, init, progress)


def train(recipe: Recipe, run_dir: str | Path, init: str | None, progress: bool, world: World,
          device: torch.device) -> Path:
    """The SFT loop of one rank of ``world`` (rank 0 of 1 in a single process)."""
    cfg, seed = recipe.sft, recipe.run.seed
    lead = world.rank == 0
    progress = progress and lead
    torch.set_num_threads(recipe.run.threads)
    stage_dir = make_run_dir(Path(run_dir) / "sft")
    metrics = MetricsWriter(Path(run_dir) / "metrics.jsonl", "sft", tensorboard=recipe.run.tensorboard)

    policy = trainable_policy(recipe, init)
    policy.to(device)
    grid = policy.net.grid[1:] if cfg.physics.enabled else None
    data = (shapeworld_data(recipe, grid, progress) if cfg.data.source == "shapeworld"
            else folder_data(recipe, policy.config, grid, progress))
    bank, texts, psi, flow_targets, negatives = data
    pct = score_percentiles(psi)

    st = cfg.structure
    recon = st.enabled and st.source == "reconstruction"  # ψ of the model's own x̂_0, refreshed (§7.2)
    every, rolling = refresh_interval(len(bank), cfg.batch_size, st.refresh_every), RollingScores(st.window)
    start = 0
    ckpt = stage_dir / "checkpoint" / "state.pt"
    if (state := load_checkpoint(ckpt)) is not None:
        load_trainable_state(policy, state["model"])
        start = state["step"]
        if recon and "psi" in state:
            psi, rolling = state["psi"], RollingScores(st.window, state["psi_window"])
            pct = score_percentiles(list(rolling.scores))
    fsdp, params, opt = prepare_training(policy, recipe, world, device, cfg.lr, state)
    step_loss = loss_module(policy, world.size > 1 and not fsdp, device)
    rows = shard(cfg.batch_size, world.rank, world.size)
    n_train = sum(p.numel() for p in params)
    mix = f"{cfg.control_ratio:.0%} control mix" if cfg.data.source == "shapeworld" else cfg.data.path
    what = (f"LoRA r={cfg.lora_rank}" if cfg.lora_rank else "decoder + motion branch" if cfg.physics.enabled
            else "full")
    if lead:
        print(f"sft: {len(bank)} clips ({mix}), batch {cfg.batch_size} over {world.size} process(es)"
              f"{' (FSDP)' if fsdp else ''}, steps {start}→{cfg.steps}, trainable {n_train / 1e6:.3f} M ({what}), "
              f"ψ percentiles [{pct.q_low:.3f}, {pct.q_high:.3f}]"
              + (f", counterfactual negatives for {int(negatives[1].sum())} clips (λ {cfg.contrastive_lambda})"
                 if negatives is not None else ""))
        rewind_metrics(metrics.path, "sft", start)

    t_last = time.time()
    guard = SkipGuard("sft")  # steps skipped on a non-finite gradient; 3 in a row stop the run
    with make_progress() as bar:
        task = bar.add_task("sft", total=cfg.steps, completed=start, info="", visible=progress)
        for step in range(start, cfg.steps):
            fb = draw_batch(step, seed + 7, len(bank), cfg.batch_size, cfg.cond_dropout, cfg.p_i2v, cfg.t_sampler,
                            cfg.t_loc, cfg.t_scale)
            if recon and step % every == 0:
                psi = reconstruction_scores(policy, bank, texts, t=st.recon_t, w_bg=st.w_bg, w_obj=st.w_obj,
                                            seed=seed + step, progress=progress)
                pct = rolling.add(psi)
            w = structure_weights(psi[fb.index], pct.q_low, pct.q_high, st.gamma if st.enabled else 0.0,
                                  st.omega_min, st.omega_max)
            index = fb.index[rows]
            neg = (None if negatives is None else
                   Negatives(negatives[0][index].float() / 255.0, negatives[1][index], cfg.contrastive_lambda,
                             cfg.contrastive_t_min))
            out = step_loss(bank[index].float() / 255.0, [texts[i] for i in index.tolist()], fb, w.omega[rows],
                            None if flow_targets is None else flow_targets[index], cfg.physics.lambda_flow, rows,
                            cfg.motion_emphasis, neg)
            for group in opt.param_groups:
                group["lr"] = warmup_stable_decay(step, cfg.lr, cfg.warmup)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            gnorm = clipped_step(opt, params, cfg.max_grad_norm)
            guard.record(gnorm, step + 1)
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                loss = reduce_over_ranks(out.loss.detach())  # every rank joins the all-reduce
                epe = None if out.epe is None else reduce_over_ranks(out.epe)
                contrast = None if neg is None else reduce_over_ranks(torch.stack(
                    [out.errors.mean(), out.neg_errors[neg.mask.to(out.neg_errors.device)].mean()
                     if bool(neg.mask.any()) else out.errors.new_tensor(float("nan"))]))
                if lead:
                    dt = (time.time() - t_last) / cfg.log_every
                    extra = {} if epe is None else {"flow_epe": float(epe)}
                    if contrast is not None:  # own-target and counterfactual-target errors (the gap should grow)
                        extra |= {"fm_error": float(contrast[0]), "counterfactual_error": float(contrast[1])}
                    metrics.log(step + 1, loss=loss.item(), **extra, grad_norm=gnorm, skipped_step=guard.total,
                                weight_min=float(w.omega.min()),
                                weight_max=float(w.omega.max()), psi_hat_mean=float(w.psi_hat.mean()),
                                psi_missing=w.n_missing, psi_q05=pct.q_low, psi_q95=pct.q_high, step_time=dt)
                bar.update(task, info=f"loss {loss.item():.4f}")
                t_last = time.time()
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:  # under FSDP: every rank gathers
                scores = {"psi": psi, "psi_window": list(rolling.scores)} if recon else {}
                save_stage_checkpoint(ckpt, policy, opt, fsdp=fsdp, lead=lead, step=step + 1, **scores)
            bar.advance(task)
    return export_stage(policy, export, stage_dir / "model", fsdp=fsdp, lead=lead,
                        rebuild=lambda: trainable_policy(recipe, init))

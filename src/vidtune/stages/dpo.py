"""Stage III — Diffusion-DPO against the Stage II checkpoint (ALGORITHMS.md §8).

Pairs come from the sources in ``dpo.pairs`` (on-policy hard negatives, synthetic temporal negatives, a human
JSONL), are written to ``<run>/dpo/pairs.jsonl`` (+ clips) for inspection, and weighted by score gaps where they
have one. Each step draws one t and one ε per pair (shared by winner and loser), anneals β, and accumulates the
gradient with the configured backward schedule (stages/dpo_step.py). Full fine-tune against a frozen copy, or LoRA
(``dpo.lora_rank``) against the same network with adapters disabled. Resumable; exports ``<run>/dpo/model``.

Data parallel: launched by ``torchrun --nproc_per_node N -m vidtune.cli dpo …`` rank 0 builds and writes the pairs
while the other ranks wait, then every rank trains on the same file. Each step's pairs, times, windows and noise are
drawn for the whole ``dpo.batch_size`` batch and every rank computes the loss and its gradient on its equal shard;
the gradients are averaged over the ranks once per step, after the step's backward passes (:func:`train`), so the
update is the single-process update to float rounding. Rank 0 alone logs, checkpoints and exports.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vidtune.config import GateConfig, Recipe
from vidtune.data.prompts import check_prompts, read_prompts
from vidtune.math.clip_view import clip_view, window_starts
from vidtune.math.dpo import batch_weights, dynamic_beta, pair_weights
from vidtune.math.flow_matching import sample_t
from vidtune.models.factory import attach_lora, load_policy, load_trainable_state, reference_policy
from vidtune.preference.build import dynamic_sources, hard_negative_pairs, pool_quality, synthetic_pairs
from vidtune.preference.pairs import PreferencePair, from_uint8, read_pairs, to_uint8, write_pairs
from vidtune.progress import make_progress, track
from vidtune.errors import VidtuneError
from vidtune.rewards.compose import GateSpec, RewardSpec, build, compose
from vidtune.rewards.temporal import dynamic_degree
from vidtune.rewards.verifier import ShapeWorldVerifier
from vidtune.runlog import MetricsWriter, rewind_metrics, load_checkpoint, make_run_dir
from vidtune.runtime.distributed import (World, all_reduce_gradients, check_world, gather_objects, reduce_over_ranks,
                                         run_stage, shard)
from vidtune.runtime.fsdp import export_stage, prepare_training, save_stage_checkpoint
from vidtune.sampling.ode import generate
from vidtune.stages.dpo_step import DPOBatch, dpo_step
from vidtune.stages.optim_step import SkipGuard, clipped_step
from vidtune.stages.sft import export
from vidtune.world.dataset import examples, render_prompt
from vidtune.world.grammar import caption, parse


QUALITY_HEADS = ("sharpness", "noise", "motion_smoothness", "freeze", "gravity")


def shapeworld_judges(gates: tuple[GateConfig, ...] = ()):
    """Quality heads, semantic and embedding functions for the embedded world (see preference/build.py): the
    perceptual heads (sharpness, noise) and temporal critics (motion smoothness, freeze, gravity — NaN for a prompt
    without gravity) as ([B, K], [B] passed every gate), Sem = verifier score, e = learned-scorer embedding (mean of
    its frame embeddings)."""
    verifier = ShapeWorldVerifier()
    quality_heads = build([RewardSpec(n) for n in QUALITY_HEADS],
                          [GateSpec(g.reward, g.kwargs, g.floor, g.min_score, g.fail_closed, g.label) for g in gates])
    scorer = None
    try:
        from vidtune.rewards.scorer import LearnedScorer

        scorer = LearnedScorer()
    except VidtuneError:  # no shipped scorer: weight-free stand-in below
        pass

    def semantic(videos, prompts):
        return verifier(videos, prompts).scores

    def quality(videos, prompts):
        out = compose(quality_heads, videos, prompts)
        passed = ~out.gate_failed  # a gated candidate's (floored) heads stay out of the pool's normalisation
        return torch.where(passed[:, None], out.heads, torch.nan), passed

    def embed(videos):
        if scorer is not None and videos.shape[-1] == scorer.model.config.size:
            return scorer.frame_embeddings(videos).mean(1)
        return F.avg_pool3d(videos.permute(0, 2, 1, 3, 4), (1, 4, 4)).flatten(1)

    return quality, semantic, embed


def candidate_prompts(recipe: Recipe) -> list[str]:
    """Prompts of the on-policy candidates: ``dpo.pairs.n_prompts`` of the lines of ``dpo.pairs.prompts_file`` (a
    seeded draw kept in file order; all of them when the file is shorter), else as many ShapeWorld captions. File
    prompts must parse as ShapeWorld prompts, since the ShapeWorld judges rank the pairs; one that does not stops
    the stage before any sampling."""
    cfg, seed = recipe.dpo.pairs, recipe.run.seed
    if cfg.prompts_file is None:
        return [caption(e.scene) for e in examples(cfg.n_prompts, seed + 404, recipe.world)]
    lines = read_prompts(cfg.prompts_file, "dpo.pairs.prompts_file")
    check_prompts(lines, parse, f"dpo.pairs.prompts_file ({cfg.prompts_file}; the ShapeWorld judges rank DPO pairs)")
    keep = torch.randperm(len(lines), generator=torch.Generator().manual_seed(seed + 404))[:cfg.n_prompts]
    return [lines[i] for i in keep.sort().values.tolist()]


def world_clips(prompts: list[str], recipe: Recipe) -> tuple[list[str], list[torch.Tensor]]:
    """Ground-truth ShapeWorld renderings of ``prompts`` as [F, 3, H, W] clips in [0, 1], the good clips of
    synthetic pairs under ``dpo.pairs.synthetic_from=world`` (prompts whose scene does not fit are skipped)."""
    kept, videos = [], []
    for i, prompt in enumerate(prompts):
        clip = render_prompt(prompt, recipe.run.seed * 7_919 + i, recipe.world)
        if clip is not None:
            kept.append(prompt)
            videos.append(torch.from_numpy(clip.video).permute(0, 3, 1, 2).contiguous())
    return kept, videos


def build_pairs(policy, prompts: list[str], recipe: Recipe, progress: bool) -> tuple[list[PreferencePair], dict]:
    """Preference pairs from the sources in ``dpo.pairs``, on-policy ones from candidates for ``prompts``: every
    prompt's candidates are sampled and judged first (kept as uint8, the precision of the pair file), then the
    quality heads are normalised over the whole pool (:func:`pool_quality`) and each prompt's pairs are formed."""
    cfg, s, seed = recipe.dpo.pairs, recipe.sampling, recipe.run.seed
    quality, semantic, embed = shapeworld_judges(cfg.gates)
    pairs: list[PreferencePair] = []
    counts: dict = {}
    good_videos, good_prompts, pool = [], [], []
    sample = cfg.on_policy or (cfg.synthetic and cfg.synthetic_from == "policy")
    for i, prompt in enumerate(track(prompts if sample else [], "DPO candidates", disable=not progress)):
        seeds = [seed * 50_021 + i * 97 + k for k in range(cfg.n_candidates)]
        vids = generate(policy, [prompt] * cfg.n_candidates, seeds, steps=s.steps, shift=s.shift,
                        guidance=s.guidance, batch_size=s.batch_size)
        sem = semantic(vids, [prompt] * len(vids))
        if cfg.on_policy:
            pool.append((prompt, to_uint8(vids), *quality(vids, [prompt] * len(vids)), sem, embed(vids)))
        best = int(torch.nan_to_num(sem, nan=-1.0).argmax())
        if float(sem[best]) >= cfg.good_min:
            good_videos.append(vids[best])
            good_prompts.append(prompt)
    if pool:
        q_all = pool_quality(torch.cat([heads for _, _, heads, _, _, _ in pool]), cfg.min_spread)
        for (prompt, vids, _, passed, sem, emb), q in zip(pool, q_all.split(cfg.n_candidates)):
            pairs += hard_negative_pairs(prompt, from_uint8(vids), q, sem, emb,
                                         torch.isfinite(q) & torch.isfinite(sem) & passed,
                                         sem_tol=cfg.sem_tol, cos_min=cfg.cos_min, q_gap=cfg.q_gap)
        counts["gated"] = sum(int((~passed).sum()) for _, _, _, passed, _, _ in pool)
    counts["on_policy"] = len(pairs)
    if cfg.synthetic and cfg.synthetic_from == "world":
        good_prompts, good_videos = world_clips(prompts, recipe)
    if cfg.synthetic and good_videos and cfg.dynamic_only:
        flags = dynamic_degree()(torch.stack(good_videos), good_prompts).components["dynamic"] == 1
        good_prompts, good_videos, counts["static"] = dynamic_sources(good_prompts, good_videos, flags)
    if cfg.synthetic and good_videos:
        n = min(cfg.n_synthetic_clips, len(good_videos))
        syn, rejected = synthetic_pairs(good_prompts[:n], torch.stack(good_videos[:n]), cfg.synthetic,
                                        torch.Generator().manual_seed(seed + 505))
        pairs += syn
        counts.update({"synthetic": len(syn), **{f"rejected/{k}": v for k, v in rejected.items()}})
    if cfg.human:
        c = policy.config
        human, hc = read_pairs(cfg.human, expect_shape=(c.frames, 3, c.height, c.width))
        pairs += human
        counts.update({"human": len(human), **{f"human/{k}": v for k, v in hc.items()}})
    return pairs, counts


def pair_weight_vector(pairs: list[PreferencePair], drop_q: float) -> tuple[list[int], torch.Tensor]:
    """Indices kept and ω per kept pair: score-gap weights for scored pairs (drop the smallest-gap quantile),
    the pair's own weight (default 1) for unscored ones."""
    scored = [i for i, p in enumerate(pairs) if p.score_gap is not None]
    keep = [i for i, p in enumerate(pairs) if p.score_gap is None]
    w = {i: pairs[i].weight for i in keep}
    if scored:
        pw = pair_weights(torch.tensor([pairs[i].score_gap for i in scored]), drop_q=drop_q)
        for j, om in zip(pw.index.tolist(), pw.omega.tolist()):
            keep.append(scored[j])
            w[scored[j]] = om
    keep.sort()
    return keep, torch.tensor([w[i] for i in keep], dtype=torch.float32)


def too_few_pairs(policy, n: int, counts: dict, recipe: Recipe, stage_dir: Path, metrics: MetricsWriter, *,
                  lead: bool) -> Path:
    """``dpo.on_too_few``: fail naming the counts, or skip the stage — the Stage II model is exported unchanged as
    the stage's model, ``dpo/SKIPPED`` says why and metrics.jsonl gets one ``skipped`` row. Data parallel: every
    rank fails alike; only the ``lead`` rank (0) records and exports, the others get the export's path."""
    msg = (f"only {n} usable preference pairs (dpo.min_pairs = {recipe.dpo.min_pairs}; built: {counts}); loosen "
           "dpo.pairs thresholds (good_min, q_gap, sem_tol) or add sources (dpo.pairs.human)")
    if recipe.dpo.on_too_few == "error":
        raise VidtuneError(msg)
    if not lead:
        return stage_dir / "model"
    print(f"[warning] dpo skipped: {msg}")
    (stage_dir / "SKIPPED").write_text(msg + "\n")
    metrics.log(0, skipped=1, pairs=n)
    return export(policy, stage_dir / "model")


def pair_images(pairs: list[PreferencePair], recipe: Recipe, where: Path) -> torch.Tensor | None:
    """The pairs' I2V conditioning frames [N, 3, H, W] (§8.2 ``image``), or None when no pair has one. Pairs with
    and without a frame cannot share a run, and the frame conditions frame 0 of the whole clip, so an I2V run keeps
    the full clip for the gradient (no ``dpo.grad_frames`` window)."""
    have = [p.image is not None for p in pairs]
    if not any(have):
        return None
    if not all(have):
        raise VidtuneError(f"{where}: {sum(have)} pairs have an 'image' (I2V) and {len(have) - sum(have)} do not; "
                           "a DPO run is either text-to-video or image-to-video")
    if recipe.dpo.grad_frames is not None:
        raise VidtuneError(f"{where}: I2V pairs condition on frame 0 of the whole clip; unset dpo.grad_frames")
    return torch.stack([p.image for p in pairs])


def pair_batch(step: int, recipe: Recipe, x0_w: torch.Tensor, x0_l: torch.Tensor, omega: torch.Tensor,
               prompts: list[str], policy, rows: slice, images: torch.Tensor | None = None) -> DPOBatch:
    """The rows ``rows`` (a rank's :func:`shard`; all of them in one process) of step ``step``'s batch of
    ``dpo.batch_size`` pairs, on the policy's device. Pairs, flow times, temporal windows and noise are a pure
    function of (seed, step), so a resumed run replays them; they are drawn on the CPU for the whole batch and
    sliced, and ω is normalised to mean 1 over the whole batch, so the ranks' shards make up the single-process
    batch. ``images`` [N, 3, H, W]: the pairs' I2V conditioning frames (None: text-to-video)."""
    cfg, device = recipe.dpo, policy.device
    g = torch.Generator().manual_seed(recipe.run.seed * 3_000_017 + step)
    idx = torch.randint(len(prompts), (cfg.batch_size,), generator=g)
    t = sample_t(cfg.batch_size, g, cfg.t_sampler)
    starts = window_starts(len(idx), x0_w.shape[2], cfg.grad_frames, g)
    xw, xl = (clip_view(x[idx[rows]], starts[rows], cfg.grad_frames, cfg.grad_downsample) for x in (x0_w, x0_l))
    eps = torch.randn((cfg.batch_size, *xw.shape[1:]), generator=g)[rows].to(device)
    weights = batch_weights(omega[idx])
    pick = idx[rows].tolist()
    cond = policy.encode_prompts([prompts[i] for i in pick], images=None if images is None else images[pick])
    return DPOBatch(xw, xl, cond, t[rows].to(device), eps, weights[rows].to(device))


def check_data_parallel(recipe: Recipe, world: World) -> None:
    """A multi-process DPO job needs a ``dpo.batch_size`` that splits evenly over the ranks."""
    check_world(world, "dpo.batch_size", recipe.dpo.batch_size)


def run(recipe: Recipe, run_dir: str | Path, init: str | None = None, progress: bool = True) -> Path:
    """Train Stage III and export its model folder (see the module docstring); in a torchrun job every rank calls
    this and gets the export's path once rank 0 has written it."""
    return run_stage(train, check_data_parallel, recipe, run_dir, init, progress)


def stage_policy(recipe: Recipe, init: str | None):
    """The policy Stage III trains: the Stage II model (``init``, else ``model.init``), with fresh LoRA adapters
    when ``dpo.lora_rank`` is set."""
    policy = load_policy(init or recipe, recipe.model.options)
    if recipe.dpo.lora_rank:
        attach_lora(policy, recipe.dpo.lora_rank, recipe.dpo.lora_targets, seed=recipe.run.seed + 13)
    return policy


def train(recipe: Recipe, run_dir: str | Path, init: str | None, progress: bool, world: World,
          device: torch.device) -> Path:
    """The DPO loop of one rank of ``world`` (rank 0 of 1 in a single process).

    Gradient synchronisation: the decoupled schedules (``dpo.backward`` retain / recompute) call ``backward`` twice
    per step, winner then loser, while DDP expects one backward per forward of the wrapped module and all-reduces
    in each (``no_sync`` would have to wrap all but the last, and the forwards would have to go through the
    wrapper). So the policy is not wrapped in DDP: each rank accumulates the gradient of its shard over all of the
    step's backward passes, and :func:`all_reduce_gradients` then averages it over the ranks, once, before
    clipping. Every schedule computes per-rank means over equal shards (the loss (1/N)·Σ ω·ℓ, and the decoupled
    coefficients η carry the same 1/N), so the average is the whole batch's gradient, and all ranks clip and step
    with the same gradient."""
    cfg = recipe.dpo
    lead = world.rank == 0
    progress = progress and lead
    torch.set_num_threads(recipe.run.threads)
    stage_dir = make_run_dir(Path(run_dir) / "dpo")
    pair_file = stage_dir / "pairs.jsonl"
    fresh = not pair_file.exists()
    candidates = candidate_prompts(recipe) if fresh else None  # a bad prompts file fails before loading
    metrics = MetricsWriter(Path(run_dir) / "metrics.jsonl", "dpo", tensorboard=recipe.run.tensorboard)
    policy = stage_policy(recipe, init)
    policy.to(device)  # after LoRA: the adapters' initial values do not depend on the device
    reference = reference_policy(policy)  # π_ref = the Stage II checkpoint (adapters disabled, or a frozen copy)
    built, counts = [], {}
    if fresh and lead:
        built, counts = build_pairs(policy.eval(), candidates, recipe, progress)
        if len(built) >= cfg.min_pairs:
            write_pairs(built, pair_file)
    n_built, counts = gather_objects((len(built), counts))[0]  # the others wait for rank 0's pairs, take its counts
    if not pair_file.exists():  # too few pairs were built
        return too_few_pairs(policy, n_built, counts, recipe, stage_dir, metrics, lead=lead)
    pairs, _ = read_pairs(pair_file)  # train on exactly what the file holds
    keep, omega = pair_weight_vector(pairs, cfg.drop_q)
    pairs = [pairs[i] for i in keep]
    if len(pairs) < cfg.min_pairs:
        return too_few_pairs(policy, len(pairs), counts, recipe, stage_dir, metrics, lead=lead)
    x0_w = policy.encode_video(torch.stack([p.chosen for p in pairs])).to(device)
    x0_l = policy.encode_video(torch.stack([p.rejected for p in pairs])).to(device)
    prompts, images = [p.prompt for p in pairs], pair_images(pairs, recipe, pair_file)

    policy.train()
    start = 0
    ckpt = stage_dir / "checkpoint" / "state.pt"
    if (state := load_checkpoint(ckpt)) is not None:
        load_trainable_state(policy, state["model"])
        start = state["step"]
    # FSDP shards after the pairs and the reference copy, which rank 0 / every rank built from the whole policy
    fsdp, params, opt = prepare_training(policy, recipe, world, device, cfg.lr, state)
    rows = shard(cfg.batch_size, world.rank, world.size)
    if lead:
        print(f"dpo: {len(pairs)} pairs ({counts}), batch {cfg.batch_size} over {world.size} process(es)"
              f"{' (FSDP)' if fsdp else ''}, steps "
              f"{start}→{cfg.steps}, β0 {cfg.beta} ({cfg.beta_schedule}, κ={cfg.kappa}), backward {cfg.backward}")
        rewind_metrics(metrics.path, "dpo", start)
    t_last = time.time()
    guard = SkipGuard("dpo")  # steps skipped on a non-finite gradient; 3 in a row stop the run
    with make_progress() as bar:
        task = bar.add_task("dpo", total=cfg.steps, completed=start, info="", visible=progress)
        for step in range(start, cfg.steps):
            batch = pair_batch(step, recipe, x0_w, x0_l, omega, prompts, policy, rows, images)
            beta = dynamic_beta(step, cfg.beta, cfg.steps, cfg.kappa, cfg.beta_schedule)
            opt.zero_grad(set_to_none=True)
            out = dpo_step(policy, reference, batch, beta=beta, beta_t=cfg.beta_t, form=cfg.form,
                           schedule=cfg.backward)
            if not fsdp:  # FSDP averaged the shards' gradients in each backward
                all_reduce_gradients(params, "mean")
            gnorm = clipped_step(opt, params, cfg.max_grad_norm)
            guard.record(gnorm, step + 1)
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                means = reduce_over_ranks(torch.stack([out.loss, out.accuracy, out.margin, out.winner_gap,
                                                       out.loser_gap]))  # means over equal shards: batch means
                loss, accuracy, margin, winner_gap, loser_gap = means.tolist()
                if lead:
                    metrics.log(step + 1, loss=loss, implicit_accuracy=accuracy, margin=margin,
                                winner_gap=winner_gap, loser_gap=loser_gap, beta=beta, grad_norm=gnorm, skipped_step=guard.total,
                                step_time=(time.time() - t_last) / cfg.log_every)
                t_last = time.time()
                bar.update(task, info=f"acc {accuracy:.2f}")
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:  # under FSDP: every rank gathers
                save_stage_checkpoint(ckpt, policy, opt, fsdp=fsdp, lead=lead, step=step + 1)
            bar.advance(task)
    return export_stage(policy, export, stage_dir / "model", fsdp=fsdp, lead=lead,
                        rebuild=lambda: stage_policy(recipe, init))

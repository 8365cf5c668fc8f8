"""Stage II — GRPO on the flow-matching policy, with ViPO, BPGO, self-paced and joint-reward switches.

Per rollout batch (ALGORITHMS.md §0): P prompts × G SDE rollouts with stored log-probs (sampling/rollout.py) →
rewards and gates (rewards/compose.py) → combination / BPGO / advantages (stages/grpo_signal.py) → ViPO maps
(math/vipo.py) → clipped surrogate (+ KL to the reference) per (micro-batch, transition), accumulated into one
optimiser step per minibatch (math/grpo_loss.py). Every random choice is a function of (seed, iteration), and
checkpoints hold the policy, optimiser and signal state, so a resumed run equals an uninterrupted one.

Data parallel: launched by ``torchrun --nproc_per_node N -m vidtune.cli grpo …`` every rank rolls out whole prompt
groups (its shard of the iteration's P prompts) with the single-process random draws, scores them, and all-gathers
the rewards, so the combination, advantages and every batch statistic (curriculum, min-norm weights, BPGO k and
priors, logged means) are computed on the whole batch, as in one process. Each rank back-propagates its rows of each
minibatch and the gradients are summed once per optimiser step (runtime/distributed.all_reduce_gradients), or in
every backward when ``run.parallel=fsdp`` shards the policy (runtime/fsdp.py), so the update is the single-process
update to float rounding; rank 0 alone logs, checkpoints and exports (docs/scaling.md).
"""

from __future__ import annotations

import math
import time
from itertools import product
from pathlib import Path

import torch

from vidtune.config import GRPOConfig, Recipe, RewardConfig
from vidtune.data.prompts import PromptSource, check_prompts, first_frame_files, load_first_frames, read_prompts
from vidtune.errors import VidtuneError
from vidtune.math.grpo_loss import grpo_objective, kl_to_reference
from vidtune.math.sde import subspace_project
from vidtune.math.vipo import FALLBACK_REASONS, dense_advantage, vipo_map_batch
from vidtune.models.factory import (attach_lora, load_policy, load_trainable_state, prompt_checker, reference_policy,
                                    vipo_time_layout)
from vidtune.progress import make_progress
from vidtune.rewards.compose import Composite, GateSpec, RewardSpec, build
from vidtune.runtime import make_reward_pool
from vidtune.runlog import MetricsWriter, rewind_metrics, load_checkpoint, make_run_dir
from vidtune.runtime.distributed import (World, all_reduce_gradients, broadcast_object, check_world, launched_world,
                                         reduce_over_ranks, run_stage, shard)
from vidtune.runtime.fsdp import export_stage, prepare_training, save_stage_checkpoint
from vidtune.runtime.ray_stage import pool_roles, run_on_pool
from vidtune.sampling.ode import guided_velocity
from vidtune.sampling.rollout import RolloutSpec, rollout, trained_per_sample, transition_eval
from vidtune.stages.grpo_rewards import score_on_lead, score_shards
from vidtune.stages.grpo_prior import check_prior_record, prior_record, static_frame_prior
from vidtune.stages.grpo_signal import SignalState, compute_signal
from vidtune.stages.optim_step import SkipGuard, clipped_step
from vidtune.stages.sft import export
from vidtune.types import Rollout
from vidtune.world.dataset import examples
from vidtune.world.grammar import caption

BATCH_STREAM_REWARDS = ("noisy",)  # rewards that draw from one random stream over each scored batch
RATIO_MEANS = ("clip_fraction", "approx_kl", "kl_ref")  # update statistics logged as means over valid samples


def build_composite(cfg: RewardConfig) -> Composite:
    """Reward heads and gates of the recipe, instantiated from the registry (rewards/compose.py)."""
    heads = [RewardSpec(h.reward, h.kwargs, h.weight, h.label) for h in cfg.heads]
    gates = [GateSpec(g.reward, g.kwargs, g.floor, g.min_score, g.fail_closed, g.label) for g in cfg.gates]
    return build(heads, gates)


def rollout_spec(cfg: GRPOConfig) -> RolloutSpec:
    r = cfg.rollout
    dense = cfg.vipo.enabled and cfg.vipo.reduction == "channel_sum"
    return RolloutSpec(steps=r.steps, shift=r.shift, schedule=r.schedule, eta=r.eta, a=r.a, guidance=r.guidance,
                       share_init_noise=r.share_init_noise, train_fraction=r.train_fraction,
                       final_step=r.final_step, sde_window=r.sde_window, reduction="dense" if dense else "scalar",
                       noise_pool=r.noise_pool, micro_batch=cfg.micro_batch)


def prompt_pool(recipe: Recipe) -> PromptSource:
    """The training prompts: the lines of ``grpo.prompts_file`` with, for I2V, their first frames in
    ``grpo.images_dir`` (data/prompts.py); else ``grpo.prompt_pool`` ShapeWorld captions of seen compositions."""
    cfg = recipe.grpo
    if cfg.prompts_file is None:
        exs = examples(cfg.prompt_pool, recipe.run.seed + 303, recipe.world)
        return PromptSource([caption(e.scene) for e in exs], None)
    prompts = read_prompts(cfg.prompts_file, "grpo.prompts_file")
    images = None if cfg.images_dir is None else first_frame_files(cfg.images_dir, len(prompts), "grpo.images_dir")
    return PromptSource(prompts, images)


def pool_images(pool: PromptSource, idx: list[int], policy) -> torch.Tensor | None:
    """First frames [len(idx), 3, H, W] of the pool's prompts ``idx`` at the policy's clip size (None: text only)."""
    if pool.images is None:
        return None
    c = policy.config
    return load_first_frames([pool.images[i] for i in idx], c.height, c.width)


def iteration_prompts(pool: list[str], it: int, seed: int, p: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 7_777_777 + it)
    return torch.randperm(len(pool), generator=g)[:p].tolist()


def do_rollout(policy, prompts: list[str], group: int, spec: RolloutSpec, seed: int,
               images: torch.Tensor | None = None, rows: slice = slice(None),
               batch: int | None = None) -> tuple[Rollout, dict, dict]:
    """G rollouts of each prompt, conditioned (I2V) on its first frame ``images`` [P, 3, H, W] when given, which the
    unconditional branch keeps as well. Data parallel: the prompts' rollouts are the rows ``rows`` of a batch of
    ``batch`` (sampling/rollout.py)."""
    rep = [p for p in prompts for _ in range(group)]
    img = None if images is None else images.repeat_interleave(group, 0)
    cond = policy.encode_prompts(rep, images=img)
    uncond = policy.encode_prompts([""] * len(rep), images=img) if spec.guidance != 1.0 else None
    c = policy.config
    ro = rollout(policy, cond, uncond, rep, group, spec, seed, policy.latent_shape(c.frames, c.height, c.width),
                 rows, batch)
    return ro, cond, uncond


def reference_prior(ref, pool: PromptSource, cfg: GRPOConfig, spec: RolloutSpec, rewarder, seed: int,
                    progress: bool, world: World) -> torch.Tensor:
    """BPGO t2v_reference prior: mean training reward of n_prior rollout-sampler samples per prompt (§3). Each
    prompt's samples depend on its index only, so rank r of ``world`` scores the prompts i ≡ r (mod world size) and
    the ranks add up their parts (zero elsewhere): every rank gets the single-process prior."""
    from vidtune.progress import track

    out = torch.zeros(len(pool.prompts))
    for i in track(range(world.rank, len(pool.prompts), world.size), "BPGO prior", disable=not progress):
        prompt = pool.prompts[i]
        ro, _, _ = do_rollout(ref, [prompt], cfg.bpgo.n_prior, spec, seed + 17 * i, pool_images(pool, [i], ref))
        scored = rewarder(ref.decode(ro.final).cpu(), [prompt] * cfg.bpgo.n_prior)
        out[i] = float(torch.nanmean(scored.scalar))
    return reduce_over_ranks(out, "sum") if world.size > 1 else out


def vipo_extractor(spec: str, device: torch.device):
    """The frozen ViPO feature extractor ``vipo.extractor`` names, on ``device``: the learned ShapeWorld scorer for
    ``builtin:scorer`` or a scorer folder, else DINOv2 (a hub id such as facebook/dinov2-base, or a folder)."""
    import json

    from vidtune.rewards.scorer_model import MODEL_TYPE

    cfg_file = Path(spec) / "config.json"
    scorer_folder = cfg_file.is_file() and json.loads(cfg_file.read_text()).get("type") == MODEL_TYPE
    if spec.startswith("builtin:") or scorer_folder:
        from vidtune.rewards.scorer import LearnedScorer

        return LearnedScorer(model=spec, device=str(device))
    from vidtune.rewards.dino_features import DinoFeatures

    return DinoFeatures.from_pretrained(spec, device=str(device))


def vipo_maps(extractor, videos: torch.Tensor, cfg: GRPOConfig, latent_fhw,
              layout: tuple[str, int]) -> tuple[torch.Tensor, dict]:
    """ViPO maps [B, F, H, W] on the latent grid ``latent_fhw``, frames aligned by the policy's time ``layout``
    (models/factory.vipo_time_layout), and their logs. A map depends on its own video only; under data parallelism
    the logs cover the whole batch (counts summed, the mean averaged over the ranks' equal shards). An extractor that
    raises gives every sample M ≡ 1 (§4, fallback "extractor"; the error is printed) instead of stopping the run."""
    try:
        feats, cover = extractor.features(videos)
    except Exception as e:  # noqa: BLE001 — any extractor failure falls back to scalar credit (§4)
        print(f"grpo: ViPO extractor failed ({type(e).__name__}: {e}); M = 1 for this batch", flush=True)
        feats, cover = [None] * len(videos), []
    vae, stride = layout
    vb = vipo_map_batch(feats, cover, latent_fhw, vae=vae, stride=stride, k=cfg.vipo.k, sigma=cfg.vipo.sigma,
                        renorm=cfg.vipo.renorm)
    counts = torch.tensor([sum(f is not None for f in vb.fallback), sum(vb.const_frames),
                           *(sum(f == r for f in vb.fallback) for r in FALLBACK_REASONS)])
    fallback, const, *by_reason = reduce_over_ranks(counts, "sum").tolist()
    logs = {"vipo/fallback": fallback, "vipo/const_frame": const,
            "vipo/map_mean": float(reduce_over_ranks(vb.map.mean()))}
    logs |= {f"vipo/fallback/{r}": n for r, n in zip(FALLBACK_REASONS, by_reason)}
    return vb.map.float(), logs


def update(policy, ref, ro: Rollout, cond, uncond, adv: torch.Tensor, aux, valid: torch.Tensor, cfg: GRPOConfig,
           opt, params, it: int, world: World = World(0, 1, 0), fsdp: bool = False,
           guard: SkipGuard | None = None) -> dict:
    """Clipped-surrogate updates over the stored transitions (§2.4): per (micro-batch, transition) backward with
    the stated weights (``micro_batch`` rows at a time, each normalised by the whole minibatch's B_valid), one
    optimiser step per minibatch. ``ref`` is π_ref (models/factory.reference_policy), used for the KL term.

    Data parallel: ``ro``, ``cond``, ``uncond``, ``adv`` and ``aux`` hold this rank's rows of the batch (its
    :func:`shard` in ``world``; default: one process, all rows), ``valid`` [B] the whole batch's mask. The minibatches are drawn over the whole batch
    as in one process, and each rank back-propagates the rows of a minibatch it holds (possibly none), normalised by
    the whole minibatch's B_valid, so the ranks' losses add up to the single-process loss. The number of backward
    calls therefore differs between ranks, which DDP's per-backward synchronisation cannot follow: the gradients
    accumulate locally and are summed over the ranks once per optimiser step, before clipping, so every rank clips
    and steps with the single-process gradient.

    Under FSDP (``fsdp``: the policy is sharded, runtime/fsdp.py) every forward and backward is a collective, so
    every rank makes the same number of calls: a rank that holds fewer micro-batches of a minibatch than another
    pads with calls on its first row whose loss is multiplied by 0 (the collectives run, the gradient is
    unchanged), and FSDP sums the gradients over the ranks in each backward. Logged: see :func:`update_logs`."""
    n_cols = ro.train_steps.shape[1]
    b = valid.shape[0]
    mine = shard(b, world.rank, world.size)
    own_valid = valid[mine]
    clip = cfg.vipo.clip_range if cfg.vipo.enabled else cfg.clip_range
    heads = cfg.joint.enabled and cfg.joint.combine == "loss"  # adv is [B, N], pre-weighted per head (§6.1)
    g = torch.Generator().manual_seed(it * 31 + 5)
    guard = guard or SkipGuard("grpo")  # a caller that passes none still gets the §0 rule within this update
    stats = {"loss": 0.0, "means": torch.zeros(len(RATIO_MEANS), 2, dtype=torch.float64), "ratio_min": math.inf,
             "ratio_max": -math.inf, "grad_norm": [], "skipped_step": 0}
    for _ in range(cfg.inner_epochs):
        for rows in torch.randperm(b, generator=g).chunk(cfg.minibatches):
            rows = rows.sort().values
            n_valid = valid[rows].sum()
            local = rows[(rows >= mine.start) & (rows < mine.stop)] - mine.start  # the ones this rank holds
            opt.zero_grad(set_to_none=True)
            chunks = list(local.split(cfg.micro_batch or len(local))) if len(local) else []
            n_real = len(chunks)
            if fsdp:  # as many calls as the busiest rank: pad with this rank's row 0 at weight 0
                n_calls = int(reduce_over_ranks(torch.tensor(n_real), "max"))
                chunks += [torch.zeros(1, dtype=torch.long)] * (n_calls - n_real)
            for col, (k, mb) in product(range(n_cols), enumerate(chunks)):
                te = transition_eval(policy, ro, cond, uncond, mb, col)
                lp_new, lp_old = te.logp.unsqueeze(1), ro.logp_old[mb, col].unsqueeze(1)
                a = adv[mb]
                if a.ndim == 4 and lp_new.ndim == 2:  # ViPO map with the scalar reduction: broadcast ratios
                    lp_new, lp_old = lp_new[..., None, None, None], lp_old[..., None, None, None]
                kl = None
                if cfg.beta_kl > 0:
                    with torch.no_grad():
                        c = {k: v[mb] for k, v in cond.items()}
                        u = None if uncond is None else {k: v[mb] for k, v in uncond.items()}
                        v_ref = guided_velocity(ref, te.x, te.t, c, u, ro.guidance).float()
                    # on the noise subspace, where both transitions have their density (§1 "Coarse noise")
                    v_new, v_ref = (subspace_project(z, ro.noise_pool) for z in (te.velocity, v_ref))
                    kl = kl_to_reference(v_new, v_ref, te.sigma, te.t, te.dt, form=cfg.kl_form).unsqueeze(1)
                obj = grpo_objective(lp_new, lp_old, a, own_valid[mb], clip_range=clip, n_steps=n_cols, kl=kl,
                                     beta_kl=cfg.beta_kl, n_valid=n_valid,
                                     aux_advantages=None if aux is None else aux[mb],
                                     aux_weight=cfg.bpgo.varsigma, heads=heads)
                if k >= n_real:  # a padding call: its collectives, no gradient, no statistics
                    (obj.loss * 0.0).backward()
                    continue
                obj.loss.backward()
                stats["loss"] += float(obj.loss.detach())
                n = float(own_valid[mb].sum())  # the call's means are over its valid samples
                call = [float(obj.stats.clip_fraction), float(obj.stats.approx_kl), float(obj.kl_mean)]
                stats["means"] += torch.tensor([[n * v, n] for v in call], dtype=torch.float64)
                stats["ratio_min"] = min(stats["ratio_min"], float(obj.stats.ratio_min))
                stats["ratio_max"] = max(stats["ratio_max"], float(obj.stats.ratio_max))
            if not fsdp:  # FSDP summed the shards' gradients in each backward
                all_reduce_gradients(params, "sum")
            gnorm = clipped_step(opt, params, cfg.max_grad_norm)
            if guard.record(gnorm, it + 1):
                stats["skipped_step"] += 1
                continue
            stats["grad_norm"].append(gnorm)
    return update_logs(stats)


def update_logs(stats: dict) -> dict:
    """The logged statistics of :func:`update` over all ranks, so they are those of one process: the loss summed;
    clip fraction, approximate KL(old‖new) and KL to the reference as means over every (valid sample, trained
    transition) of the update, whatever the micro-batches and shards; ratio extremes (1 without any backward call).
    The gradient norms and skipped steps are the same on every rank (taken after the gradient reduction)."""
    means = reduce_over_ranks(stats["means"], "sum").tolist()
    out = {"loss": float(reduce_over_ranks(torch.tensor(stats["loss"], dtype=torch.float64), "sum")),
           "skipped_step": stats["skipped_step"]}
    out.update({k: total / max(1.0, n) for k, (total, n) in zip(RATIO_MEANS, means)})
    out["grad_norm"] = sum(stats["grad_norm"]) / max(1, len(stats["grad_norm"]))
    low, high = reduce_over_ranks(torch.tensor([-stats["ratio_min"], stats["ratio_max"]], dtype=torch.float64),
                                  "max").tolist()
    out["ratio_min"], out["ratio_max"] = (-low, high) if math.isfinite(high) else (1.0, 1.0)
    return out


def check_data_parallel(recipe: Recipe, world: World) -> None:
    """A multi-process GRPO job needs whole prompt groups per rank (``grpo.prompts_per_iter`` a multiple of the
    number of processes, runtime/distributed.check_world). A reward that draws its randomness from one stream over
    each scored batch (``noisy``) is refused: under ``run.runtime=local`` each rank scores its own
    shard, so the draws would depend on how the batch is split, and under ``ray`` the pool's profiling calls draw
    from the stream as well."""
    check_world(world, "grpo.prompts_per_iter", recipe.grpo.prompts_per_iter)
    if world.size == 1:
        return
    rewards = recipe.grpo.reward
    keys = [f"grpo.reward.{kind}[{i}]" for kind, items in (("heads", rewards.heads), ("gates", rewards.gates))
            for i, r in enumerate(items) if r.reward in BATCH_STREAM_REWARDS]
    if keys:
        raise VidtuneError(f"{', '.join(keys)}: reward 'noisy' draws its noise from one stream over each scored "
                           f"batch, so WORLD_SIZE={world.size} ranks scoring their shards would not reproduce one "
                           "process; run it in one process (docs/scaling.md)")


def check_rollout_workers(recipe: Recipe, world: World) -> None:
    """Rollout workers (``run.rollout_workers``) take whole prompt groups in one Ray-run process."""
    n = recipe.run.rollout_workers
    if not n:
        return
    if world.size > 1:
        raise VidtuneError(f"run.rollout_workers={n} is for one process on Ray; under torchrun (WORLD_SIZE="
                           f"{world.size}) every rank rolls out its own shard: set run.rollout_workers=0")
    if recipe.grpo.prompts_per_iter % n:
        raise VidtuneError(f"grpo.prompts_per_iter={recipe.grpo.prompts_per_iter} does not split into whole prompt "
                           f"groups over run.rollout_workers={n}; use a multiple of {n}")


def run(recipe: Recipe, run_dir: str | Path, init: str | None = None, progress: bool = True) -> Path:
    """Train Stage II and export its model folder (see the module docstring); in a torchrun job every rank calls
    this and gets the export's path once rank 0 has written it. One process under ``run.runtime=ray``: the loop
    runs in the policy actor on the pool's placement group, beside the reward and rollout workers
    (runtime/ray_stage.py)."""
    world = launched_world()
    check_rollout_workers(recipe, world)
    if recipe.run.runtime == "ray" and world.size == 1:
        check_data_parallel(recipe, world)
        return run_on_pool(train, recipe, run_dir, init, progress)
    return run_stage(train, check_data_parallel, recipe, run_dir, init, progress)


def stage_policy(recipe: Recipe, init: str | None):
    """The policy Stage II trains: the SFT model (``init``, else ``model.init``) in training mode, with fresh LoRA
    adapters when ``grpo.lora_rank`` is set."""
    policy = load_policy(init or recipe, recipe.model.options).train()
    if recipe.grpo.lora_rank:
        attach_lora(policy, recipe.grpo.lora_rank, recipe.grpo.lora_targets, seed=recipe.run.seed + 12)
    return policy


def train(recipe: Recipe, run_dir: str | Path, init: str | None, progress: bool, world: World,
          device: torch.device) -> Path:
    """The GRPO loop of one rank of ``world`` (rank 0 of 1 in a single process)."""
    cfg, seed = recipe.grpo, recipe.run.seed
    lead = world.rank == 0
    progress = progress and lead
    torch.set_num_threads(recipe.run.threads)
    spec = rollout_spec(cfg)
    spec.validate()
    pool = prompt_pool(recipe)
    stage_dir = make_run_dir(Path(run_dir) / "grpo")
    metrics = MetricsWriter(Path(run_dir) / "metrics.jsonl", "grpo", tensorboard=recipe.run.tensorboard)
    policy = stage_policy(recipe, init)
    check_prompts(pool.prompts, prompt_checker(policy), f"grpo.prompts_file ({cfg.prompts_file})"
                  if cfg.prompts_file else "the ShapeWorld prompt pool")
    policy.to(device)  # after LoRA: the adapters' initial values do not depend on the device
    ref = reference_policy(policy)  # with LoRA: the same network with adapters disabled, else a frozen copy
    rewarder = build_composite(cfg.reward)
    shared = world.size > 1 and recipe.run.runtime == "ray"  # one reward pool, on rank 0 (stages/grpo_rewards.py)
    on_pool = recipe.run.runtime == "ray" and world.size == 1  # in the policy actor (runtime/ray_stage.py)
    extra = {"extra_roles": 1 + recipe.run.rollout_workers} if on_pool else {}  # this actor and the rollout workers
    scorer = None if shared and not lead else make_reward_pool(rewarder, recipe.run.runtime,
                                                                threads=recipe.run.threads, **extra)
    fleet = None
    if recipe.run.rollout_workers:
        from vidtune.runtime.ray_backend import role_share
        from vidtune.runtime.rollout_workers import RolloutFleet

        fleet = RolloutFleet(policy, recipe.run.rollout_workers, recipe.run.threads,
                             role_share(recipe.run.threads, pool_roles(recipe)))
    extractor = vipo_extractor(cfg.vipo.extractor, device) if cfg.vipo.enabled else None
    state, start = SignalState(), 0
    ckpt = stage_dir / "checkpoint" / "state.pt"
    prior, record = None, prior_record(cfg)
    if (saved := load_checkpoint(ckpt)) is not None:
        load_trainable_state(policy, saved["model"])
        state, start, prior = saved["signal"], saved["iteration"], saved["prior"]
        if prior is not None:
            check_prior_record(saved.get("prior_record"), record)
    elif cfg.bpgo.enabled and cfg.bpgo.prior == "i2v_static_frame":
        first = pool_images(pool, list(range(len(pool.prompts))), ref)
        prior = static_frame_prior(scorer, pool.prompts, first, ref.config.frames) if lead or not shared else None
        prior = broadcast_object(prior) if shared else prior  # the one reward pool is rank 0's
    elif cfg.bpgo.enabled and cfg.bpgo.prior == "t2v_reference":
        with torch.no_grad():
            if shared:  # rank 0 scores every pool prompt on the one pool
                alone = World(0, 1, 0)
                prior = broadcast_object(reference_prior(ref, pool, cfg, spec, scorer, seed + 99, progress, alone)
                                         if lead else None)
            else:
                prior = reference_prior(ref, pool, cfg, spec, scorer, seed + 99, progress, world)
    # FSDP shards after the prior, whose prompts do not split evenly over the ranks; sum, as all_reduce_gradients
    fsdp, params, opt = prepare_training(policy, recipe, world, device, cfg.lr, saved, reduce="sum")
    b = cfg.prompts_per_iter * cfg.group_size
    own_prompts, rows = shard(cfg.prompts_per_iter, world.rank, world.size), shard(b, world.rank, world.size)
    if lead:
        print(f"grpo: {cfg.iterations} iterations × {cfg.prompts_per_iter} prompts × G={cfg.group_size} = {b} "
              f"rollouts/step over {world.size} process(es){' (FSDP)' if fsdp else ''}, {spec.steps} SDE steps, "
              f"{trained_per_sample(spec)} trained transitions/sample, trainable "
              f"{sum(p.numel() for p in params) / 1e6:.3f} M, refinements: "
              + (", ".join(k for k in ("vipo", "bpgo", "curriculum", "joint") if getattr(cfg, k).enabled) or "none"))
        rewind_metrics(metrics.path, "grpo", start)
    guard = SkipGuard("grpo")  # optimiser steps skipped on a non-finite gradient; 3 in a row stop the run
    discarded = 0  # rollout batches discarded on a non-finite velocity (§1)
    with make_progress() as bar:
        task = bar.add_task("grpo", total=cfg.iterations, completed=start, info="", visible=progress)
        for it in range(start, cfg.iterations):
            t0 = time.time()
            idx = iteration_prompts(pool.prompts, it, seed, cfg.prompts_per_iter)
            own = idx[own_prompts]
            policy.eval()
            failed = 0
            try:
                if fleet is not None:  # the rollout workers, with this iteration's weights
                    ro, cond, uncond = fleet.rollout(policy, [pool.prompts[i] for i in own],
                                                     pool_images(pool, own, policy), cfg.group_size, spec,
                                                     seed * 1009 + it)
                else:
                    ro, cond, uncond = do_rollout(policy, [pool.prompts[i] for i in own], cfg.group_size, spec,
                                                  seed * 1009 + it, pool_images(pool, own, policy), rows, b)
            except FloatingPointError as e:  # §1: a non-finite velocity discards the batch, never trained on
                failed = 1
                print(f"grpo: iteration {it + 1}: {e}", flush=True)
            if int(reduce_over_ranks(torch.tensor(failed), "max")):  # every rank skips the iteration together
                discarded += 1
                if lead:
                    metrics.log(it + 1, discarded_batch=discarded, iter_time=time.time() - t0)
                if (it + 1) % cfg.ckpt_every == 0 or it + 1 == cfg.iterations:
                    save_stage_checkpoint(ckpt, policy, opt, fsdp=fsdp, lead=lead, signal=state, iteration=it + 1,
                                          prior=prior, prior_record=record)
                bar.advance(task)
                continue
            videos = policy.decode(ro.final).cpu()
            t1 = time.time()
            scored = (score_on_lead(scorer, videos, ro.prompts, lead) if shared
                      else score_shards(scorer, videos, ro.prompts))  # the whole batch, on every rank
            heads, scalar = scored.heads, scored.scalar
            t2 = time.time()
            sig, state = compute_signal(heads, scalar, torch.isfinite(scalar), None if prior is None else prior[idx],
                                        state, cfg)
            adv, aux, logs = sig.advantages[rows], None if sig.aux is None else sig.aux[rows], dict(sig.logs)
            if extractor is not None:
                m, vlogs = vipo_maps(extractor, videos, cfg, tuple(ro.states.shape[-3:]),
                                     vipo_time_layout(policy))
                adv = dense_advantage(m, adv)
                aux = None if aux is None else dense_advantage(m, aux)
                logs.update(vlogs)
            adv, aux, valid = (None if z is None else z.to(device) for z in (adv, aux, sig.valid))
            policy.train()
            t3 = time.time()
            upd = update(policy, ref, ro, cond, uncond, adv, aux, valid, cfg, opt, params, it, world, fsdp, guard)
            for i, name in enumerate(scored.head_names):
                col = heads[:, i]
                logs[f"reward/{name}"] = float(torch.nanmean(col))
                logs[f"reward/{name}_std"] = float(col[torch.isfinite(col)].std()) if torch.isfinite(col).sum() > 1 else 0.0
            logs.update(scored.counters)
            logs.update(scored.logs)
            t4 = time.time()
            if lead:
                metrics.log(it + 1, reward=float(torch.nanmean(scalar)), **upd, **logs,
                            iter_time=t4 - t0, time_rollout=t1 - t0, time_reward=t2 - t1, time_signal=t3 - t2,
                            time_update=t4 - t3)
            bar.update(task, info=f"reward {float(torch.nanmean(scalar)):.3f}")
            if (it + 1) % cfg.ckpt_every == 0 or it + 1 == cfg.iterations:  # under FSDP: every rank gathers
                save_stage_checkpoint(ckpt, policy, opt, fsdp=fsdp, lead=lead, signal=state, iteration=it + 1,
                                      prior=prior, prior_record=record)
            bar.advance(task)
    if scorer is not None:
        scorer.close()
    if fleet is not None:
        fleet.close()
    return export_stage(policy, export, stage_dir / "model", fsdp=fsdp, lead=lead,
                        rebuild=lambda: stage_policy(recipe, init))

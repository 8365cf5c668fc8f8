"""Stage II — GRPO on the flow-matching policy, with ViPO, BPGO, self-paced and joint-reward switches.

Per rollout batch (ALGORITHMS.md §0): P prompts × G SDE rollouts with stored log-probs (sampling/rollout.py) →
rewards and gates (rewards/compose.py) → combination / BPGO / advantages (stages/grpo_signal.py) → ViPO maps
(math/vipo.py) → clipped surrogate (+ KL to the reference) per (micro-batch, transition), accumulated into one
optimiser step per minibatch (math/grpo_loss.py). Every random choice is a function of (seed, iteration), and
checkpoints hold the policy, optimiser and signal state, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import time
from itertools import product
from pathlib import Path

import torch

from vidtune.config import GRPOConfig, Recipe, RewardConfig
from vidtune.data.prompts import PromptSource, check_prompts, first_frame_files, load_first_frames, read_prompts
from vidtune.math.grpo_loss import grpo_objective, kl_to_reference
from vidtune.math.vipo import dense_advantage, vipo_map_batch
from vidtune.models.factory import (attach_lora, load_policy, load_trainable_state, prompt_checker,
                                    reference_policy, resolve_device, trainable_state, vipo_time_layout)
from vidtune.progress import make_progress
from vidtune.rewards.compose import Composite, GateSpec, RewardSpec, build
from vidtune.runtime import make_reward_pool
from vidtune.runlog import MetricsWriter, rewind_metrics, atomic_torch_save, load_checkpoint, make_run_dir
from vidtune.sampling.ode import guided_velocity
from vidtune.sampling.rollout import RolloutSpec, rollout, transition_eval
from vidtune.stages.grpo_signal import SignalState, compute_signal
from vidtune.stages.sft import export
from vidtune.types import Rollout
from vidtune.world.dataset import examples
from vidtune.world.grammar import caption


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
                       micro_batch=cfg.micro_batch)


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
               images: torch.Tensor | None = None) -> tuple[Rollout, dict, dict]:
    """G rollouts of each prompt, conditioned (I2V) on its first frame ``images`` [P, 3, H, W] when given, which the
    unconditional branch keeps as well."""
    rep = [p for p in prompts for _ in range(group)]
    img = None if images is None else images.repeat_interleave(group, 0)
    cond = policy.encode_prompts(rep, images=img)
    uncond = policy.encode_prompts([""] * len(rep), images=img) if spec.guidance != 1.0 else None
    c = policy.config
    ro = rollout(policy, cond, uncond, rep, group, spec, seed, policy.latent_shape(c.frames, c.height, c.width))
    return ro, cond, uncond


def reference_prior(ref, pool: PromptSource, cfg: GRPOConfig, spec: RolloutSpec, rewarder, seed: int,
                    progress: bool) -> torch.Tensor:
    """BPGO t2v_reference prior: mean training reward of n_prior rollout-sampler samples per prompt (§3)."""
    from vidtune.progress import track

    out = []
    for i in track(range(len(pool.prompts)), "BPGO prior", disable=not progress):
        prompt = pool.prompts[i]
        ro, _, _ = do_rollout(ref, [prompt], cfg.bpgo.n_prior, spec, seed + 17 * i, pool_images(pool, [i], ref))
        scored = rewarder(ref.decode(ro.final).cpu(), [prompt] * cfg.bpgo.n_prior)
        out.append(float(torch.nanmean(scored.scalar)))
    return torch.tensor(out)


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
    (models/factory.vipo_time_layout), and their logs."""
    feats, cover = extractor.features(videos)
    vae, stride = layout
    vb = vipo_map_batch(feats, cover, latent_fhw, vae=vae, stride=stride, k=cfg.vipo.k, sigma=cfg.vipo.sigma,
                        renorm=cfg.vipo.renorm)
    logs = {"vipo/fallback": sum(f is not None for f in vb.fallback), "vipo/const_frame": sum(vb.const_frames),
            "vipo/map_mean": float(vb.map.mean())}
    return vb.map.float(), logs


def update(policy, ref, ro: Rollout, cond, uncond, adv: torch.Tensor, aux, valid: torch.Tensor, cfg: GRPOConfig,
           opt, params, it: int) -> dict:
    """Clipped-surrogate updates over the stored transitions (§2.4): per (micro-batch, transition) backward with
    the stated weights (``micro_batch`` rows at a time, each normalised by the whole minibatch's B_valid), one
    optimiser step per minibatch. ``ref`` is π_ref (models/factory.reference_policy), used for the KL term."""
    n_cols = ro.train_steps.shape[1]
    b = adv.shape[0]
    clip = cfg.vipo.clip_range if cfg.vipo.enabled else cfg.clip_range
    heads = cfg.joint.enabled and cfg.joint.combine == "loss"  # adv is [B, N], pre-weighted per head (§6.1)
    g = torch.Generator().manual_seed(it * 31 + 5)
    stats = {"loss": 0.0, "clip_fraction": [], "approx_kl": [], "ratio_min": [], "ratio_max": [], "kl_ref": [],
             "grad_norm": [], "skipped_step": 0}
    for _ in range(cfg.inner_epochs):
        for rows in torch.randperm(b, generator=g).chunk(cfg.minibatches):
            rows = rows.sort().values
            n_valid = valid[rows].sum()
            opt.zero_grad(set_to_none=True)
            for col, mb in product(range(n_cols), rows.split(cfg.micro_batch or len(rows))):
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
                    kl = kl_to_reference(te.velocity, v_ref, te.sigma, te.t, te.dt, form=cfg.kl_form).unsqueeze(1)
                obj = grpo_objective(lp_new, lp_old, a, valid[mb], clip_range=clip, n_steps=n_cols, kl=kl,
                                     beta_kl=cfg.beta_kl, n_valid=n_valid,
                                     aux_advantages=None if aux is None else aux[mb],
                                     aux_weight=cfg.bpgo.varsigma, heads=heads)
                obj.loss.backward()
                stats["loss"] += float(obj.loss.detach())
                for k in ("clip_fraction", "approx_kl", "ratio_min", "ratio_max"):
                    stats[k].append(float(getattr(obj.stats, k)))
                stats["kl_ref"].append(float(obj.kl_mean))
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if not torch.isfinite(gnorm):
                stats["skipped_step"] += 1
                opt.zero_grad(set_to_none=True)
                continue
            opt.step()
            stats["grad_norm"].append(float(gnorm))
    out = {"loss": stats["loss"], "skipped_step": stats["skipped_step"]}
    for k in ("clip_fraction", "approx_kl", "kl_ref", "grad_norm"):
        out[k] = sum(stats[k]) / max(1, len(stats[k]))
    out["ratio_min"] = min(stats["ratio_min"], default=1.0)
    out["ratio_max"] = max(stats["ratio_max"], default=1.0)
    return out


def run(recipe: Recipe, run_dir: str | Path, init: str | None = None, progress: bool = True) -> Path:
    cfg, seed = recipe.grpo, recipe.run.seed
    torch.set_num_threads(recipe.run.threads)
    device = resolve_device(recipe.run.device)
    spec = rollout_spec(cfg)
    spec.validate()
    pool = prompt_pool(recipe)
    stage_dir = make_run_dir(Path(run_dir) / "grpo")
    metrics = MetricsWriter(Path(run_dir) / "metrics.jsonl", "grpo", tensorboard=recipe.run.tensorboard)
    policy = load_policy(init or recipe, recipe.model.options).train()
    check_prompts(pool.prompts, prompt_checker(policy), f"grpo.prompts_file ({cfg.prompts_file})"
                  if cfg.prompts_file else "the ShapeWorld prompt pool")
    if cfg.lora_rank:
        attach_lora(policy, cfg.lora_rank, cfg.lora_targets, seed=seed + 12)
    policy.to(device)  # after LoRA: the adapters' initial values do not depend on the device
    ref = reference_policy(policy)  # with LoRA: the same network with adapters disabled, else a frozen copy
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rewarder = build_composite(cfg.reward)
    scorer = make_reward_pool(rewarder, recipe.run.runtime, threads=recipe.run.threads)
    extractor = vipo_extractor(cfg.vipo.extractor, device) if cfg.vipo.enabled else None
    state, start = SignalState(), 0
    ckpt = stage_dir / "checkpoint" / "state.pt"
    prior = None
    if (saved := load_checkpoint(ckpt)) is not None:
        load_trainable_state(policy, saved["model"])
        opt.load_state_dict(saved["opt"])
        state, start, prior = saved["signal"], saved["iteration"], saved["prior"]
    elif cfg.bpgo.enabled and cfg.bpgo.prior == "t2v_reference":
        with torch.no_grad():
            prior = reference_prior(ref, pool, cfg, spec, scorer, seed + 99, progress)
    b = cfg.prompts_per_iter * cfg.group_size
    print(f"grpo: {cfg.iterations} iterations × {cfg.prompts_per_iter} prompts × G={cfg.group_size} = {b} "
          f"rollouts/step, {spec.steps} SDE steps, ~{max(1, int(spec.train_fraction * (spec.steps - 1)))} trained "
          f"transitions/sample, trainable {sum(p.numel() for p in params) / 1e6:.3f} M, refinements: "
          + (", ".join(k for k in ("vipo", "bpgo", "curriculum", "joint") if getattr(cfg, k).enabled) or "none"))

    rewind_metrics(metrics.path, "grpo", start)
    with make_progress() as bar:
        task = bar.add_task("grpo", total=cfg.iterations, completed=start, info="", visible=progress)
        for it in range(start, cfg.iterations):
            t0 = time.time()
            idx = iteration_prompts(pool.prompts, it, seed, cfg.prompts_per_iter)
            prompts = [pool.prompts[i] for i in idx]
            policy.eval()
            ro, cond, uncond = do_rollout(policy, prompts, cfg.group_size, spec, seed * 1009 + it,
                                          pool_images(pool, idx, policy))
            videos = policy.decode(ro.final).cpu()
            t1 = time.time()
            scored = scorer(videos, ro.prompts)
            t2 = time.time()
            sig, state = compute_signal(scored.heads, scored.scalar, torch.isfinite(scored.scalar),
                                        None if prior is None else prior[idx], state, cfg)
            adv, aux, logs = sig.advantages, sig.aux, dict(sig.logs)
            if extractor is not None:
                m, vlogs = vipo_maps(extractor, videos, cfg, tuple(ro.states.shape[-3:]),
                                     vipo_time_layout(policy))
                adv = dense_advantage(m, adv)
                aux = None if aux is None else dense_advantage(m, aux)
                logs.update(vlogs)
            adv, aux, valid = (None if z is None else z.to(device) for z in (adv, aux, sig.valid))
            policy.train()
            t3 = time.time()
            upd = update(policy, ref, ro, cond, uncond, adv, aux, valid, cfg, opt, params, it)
            for i, name in enumerate(scored.head_names):
                col = scored.heads[:, i]
                logs[f"reward/{name}"] = float(torch.nanmean(col))
                logs[f"reward/{name}_std"] = float(col[torch.isfinite(col)].std()) if torch.isfinite(col).sum() > 1 else 0.0
            logs.update(scored.counters)
            logs.update(scorer.last_logs)
            t4 = time.time()
            metrics.log(it + 1, reward=float(torch.nanmean(scored.scalar)), **upd, **logs,
                        iter_time=t4 - t0, time_rollout=t1 - t0, time_reward=t2 - t1, time_signal=t3 - t2,
                        time_update=t4 - t3)
            bar.update(task, info=f"reward {float(torch.nanmean(scored.scalar)):.3f}")
            if (it + 1) % cfg.ckpt_every == 0 or it + 1 == cfg.iterations:
                atomic_torch_save({"model": trainable_state(policy), "opt": opt.state_dict(), "signal": state,
                                   "iteration": it + 1, "prior": prior}, ckpt)
            bar.advance(task)
    scorer.close()
    return export(policy, stage_dir / "model")

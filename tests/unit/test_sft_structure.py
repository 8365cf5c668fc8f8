"""§7.2 ``source: reconstruction``: the one-step prediction, the refresh interval, the rolling window, and an SFT run
that refreshes ψ from its own reconstructions and resumes to the weights of an uninterrupted run."""

import json

import pytest
import torch
from safetensors.torch import load_file

from vidtune.config import load_recipe
from vidtune.stages import sft
from vidtune.stages.sft_structure import RollingScores, one_step_reconstruction, refresh_interval


class _Oracle:
    """Latents = pixels; v = (x_t − x_0)/t for the clip it was given (``exact``), or v = 0."""

    device = torch.device("cpu")

    def __init__(self, exact: bool):
        self.exact, self.x0 = exact, None

    def encode_video(self, video):
        self.x0 = video.clone()
        return video

    def decode(self, latents):
        return latents

    def encode_prompts(self, texts):
        return {"n": len(texts)}

    def velocity(self, xt, t, cond):
        return (xt - self.x0) / t.view(-1, 1, 1, 1, 1) if self.exact else torch.zeros_like(xt)


def test_one_step_reconstruction_is_x0_for_the_exact_velocity_and_x_t_for_zero():
    """x̂_0 = x_t − t·v: the exact velocity ε − x_0 returns the clip; v = 0 returns x_t = 0.7·x_0 + 0.3·ε (clamped)."""
    video = torch.rand(2, 3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    rec = one_step_reconstruction(_Oracle(True), video, ["a", "b"], 0.3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(rec, video, rtol=0, atol=1e-6)
    eps = torch.randn(video.shape, generator=torch.Generator().manual_seed(1))
    rec = one_step_reconstruction(_Oracle(False), video, ["a", "b"], 0.3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(rec, (0.7 * video + 0.3 * eps).clamp(0, 1))


def test_refresh_interval_is_one_epoch_unless_set():
    assert refresh_interval(2048, 16, None) == 128 and refresh_interval(10, 4, None) == 3
    assert refresh_interval(10, 4, 7) == 7


def test_the_rolling_window_keeps_the_latest_scores():
    """Window 3: after (1, 2) and (3, 4) it holds (2, 3, 4): q_05 = 2 + 0.1·1 = 2.1, q_95 = 3.9 (linear)."""
    w = RollingScores(3)
    w.add(torch.tensor([1.0, 2.0]))
    pct = w.add(torch.tensor([3.0, 4.0]))
    assert list(w.scores) == [2.0, 3.0, 4.0]
    assert (pct.q_low, pct.q_high) == (pytest.approx(2.1), pytest.approx(3.9))


def _recipe(model, out, name, steps):
    return load_recipe(None, [f"model.init={model}", f"run.out_dir={out}", f"run.name={name}", "run.threads=1",
                              "world.frames=4", "world.size=16", f"sft.steps={steps}", "sft.dataset_size=16",
                              "sft.batch_size=4", "sft.warmup=0", "sft.log_every=1", "sft.ckpt_every=1",
                              "run.tensorboard=false", "sft.structure.source=reconstruction",
                              "sft.structure.refresh_every=2", "sft.structure.window=20"])


def test_reconstruction_scores_refresh_and_resume_exactly(tmp_path, tiny_policy):
    model = tiny_policy.save_pretrained(tmp_path / "m")
    once = sft.run(_recipe(model, tmp_path, "once", 3), tmp_path / "once", progress=False)
    sft.run(_recipe(model, tmp_path, "split", 2), tmp_path / "split", progress=False)
    state = torch.load(tmp_path / "split" / "sft" / "checkpoint" / "state.pt", weights_only=False)
    assert state["psi"].shape == (16,) and len(state["psi_window"]) == 16  # one refresh (step 0) of 16 clips
    split = sft.run(_recipe(model, tmp_path, "split", 3), tmp_path / "split", progress=False)
    wa, wb = load_file(str(once / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = [json.loads(x) for x in (tmp_path / "once" / "metrics.jsonl").read_text().splitlines()]
    q = [(r["psi_q05"], r["psi_q95"]) for r in rows]
    assert q[0] == q[1] != q[2]  # the refresh at step 2 adds 16 new scores to the window
    assert all(0 <= lo < hi for lo, hi in q)

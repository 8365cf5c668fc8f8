"""Real-judge adapters on tiny random transformers models built from configs, saved to a folder and loaded back
by path (the hub-loading code path, offline): scores of the right shape and range, batching = one by one, clear
errors for bad input. DESIGN.md §4; ALGORITHMS.md §4 (ViPO extractor contract, causal stride-4 alignment)."""

from __future__ import annotations

import pytest
import torch

from vidtune.errors import VidtuneError

WORDS = ["a", "red", "blue", "green", "circle", "square", "moves", "left", "right", "falls", "Does", "this", "video",
         "show", "Answer", "yes", "or", "no", "Yes", "No", "?", ".", ":"]


def word_tokenizer():
    """A word-level fast tokenizer (no files, no download): <pad>=0, <unk>=1, <s>=2, </s>=3, then WORDS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>"] + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny Qwen2-VL (ENVIRONMENT.md §3d), DINOv2 and CLIP models with random weights, saved like hub checkpoints."""
    from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model, Qwen2VLConfig, \
        Qwen2VLForConditionalGeneration

    root = tmp_path_factory.mktemp("judges")
    torch.manual_seed(0)
    qwen = Qwen2VLForConditionalGeneration(Qwen2VLConfig(
        text_config=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=2,
                         eos_token_id=3, pad_token_id=0,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 4]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=500, video_token_id=501, vision_start_token_id=502, vision_end_token_id=503))
    dino = Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                    patch_size=4, image_size=16))
    clip = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(WORDS) + 4, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=2,
                         eos_token_id=3),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=16, patch_size=4), projection_dim=8))
    out = {}
    for name, model, tok in (("qwen", qwen, True), ("dino", dino, False), ("clip", clip, True)):
        model.save_pretrained(root / name)
        if tok:
            word_tokenizer().save_pretrained(root / name)
        out[name] = str(root / name)
    return out


PROMPTS = ["a red circle moves left", "a blue square", "a green circle falls", "a red square moves right"]


def clips(n=4, frames=9, size=32, seed=0):
    return torch.rand(n, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_vlm_judge_scores_in_range_and_batching_equals_one_by_one(folders):
    """p_yes = softmax over the two answers' logsumexp logits; 4 clips in one left-padded batch vs 4 batches of 1."""
    from vidtune.rewards.base import build_reward
    from vidtune.rewards.vlm_judge import VLMJudge  # importing registers "vlm_judge"

    judge = build_reward("vlm_judge", model=folders["qwen"], batch_size=4, max_frames=8)
    one = VLMJudge.from_pretrained(folders["qwen"], batch_size=1, max_frames=8)
    v = clips()
    out, ref = judge(v, PROMPTS), one(v, PROMPTS)
    assert out.scores.shape == (4,) and bool(((out.scores > 0) & (out.scores < 1)).all())
    assert torch.allclose(out.scores, ref.scores, atol=1e-5)
    assert torch.allclose(out.components["p_yes"], out.scores)  # scale 1, bias 0 → p_yes
    cal = VLMJudge.from_pretrained(folders["qwen"], scale=2.0, bias=-0.5, max_frames=8)(v, PROMPTS)
    d = out.components["log_odds"]
    assert torch.allclose(cal.scores, torch.sigmoid(2.0 * d - 0.5), atol=1e-5)


def test_vlm_judge_flags_nonfinite_and_rejects_bad_input(folders):
    from vidtune.rewards.vlm_judge import VLMJudge

    judge = VLMJudge.from_pretrained(folders["qwen"], max_frames=4)
    v = clips(2, frames=4)
    v[1, 0, 0, 0, 0] = float("nan")
    out = judge(v, PROMPTS[:2])
    assert torch.isfinite(out.scores[0]) and torch.isnan(out.scores[1]) and "invalid" in out.details[1]
    with pytest.raises(VidtuneError, match="2 videos but 3 prompts"):
        judge(clips(2, frames=4), PROMPTS[:3])
    with pytest.raises(VidtuneError, match="single token"):
        VLMJudge.from_pretrained(folders["qwen"], yes=("yes please",))
    with pytest.raises(VidtuneError, match="cannot load"):
        VLMJudge.from_pretrained(folders["qwen"] + "_missing")


def test_dino_features_contract_and_vipo_map_on_wan_latent_grid(folders):
    """ViPO extractor contract: [B, F, h, w, D] + one pixel frame per feature time; with causal stride 4 the map
    lands on the Wan latent grid (9 frames → 3 latent frames)."""
    from vidtune.math.vipo import vipo_map_batch
    from vidtune.rewards.dino_features import DinoFeatures

    dino = DinoFeatures.from_pretrained(folders["dino"], short_side=16, batch_size=5)
    v = clips(2, frames=9, size=24)
    feats, cover = dino.features(v)
    assert feats.shape == (2, 9, 4, 4, 16) and cover == [[t] for t in range(9)]  # 16/24 px → 4×4 patches of 4
    wide = dino.features(torch.rand(1, 2, 3, 16, 32)).features
    assert wide.shape[2:4] == (4, 8)  # native aspect ratio, no centre crop
    vb = vipo_map_batch(feats, cover, (3, 2, 2), vae="causal", stride=4)
    assert vb.map.shape == (2, 3, 2, 2) and all(f is None for f in vb.fallback)
    assert float(vb.map.min()) == 0.0 and float(vb.map.max()) == 1.0
    one = torch.cat([dino.features(v[i: i + 1]).features for i in range(2)])
    assert torch.allclose(feats, one, atol=1e-5)


def test_dino_consistency_reward(folders):
    """Subject consistency ½(cos(e_0,e_i) + cos(e_{i−1},e_i)) averaged: 1 for a static clip, in [−1, 1] else."""
    from vidtune.rewards.dino_features import DinoFeatures

    dino = DinoFeatures.from_pretrained(folders["dino"], short_side=16)
    static = clips(1, frames=1).expand(1, 5, 3, 32, 32).clone()
    v = torch.cat([static, clips(1, frames=5, seed=3)])
    out = dino(v, PROMPTS[:2])
    assert out.scores.shape == (2,) and abs(float(out.scores[0]) - 1.0) < 1e-5
    assert -1.0 <= float(out.scores[1]) < 1.0
    emb = dino.frame_embeddings(v)
    assert emb.shape == (2, 5, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    with pytest.raises(VidtuneError, match="not DINOv2"):
        DinoFeatures.from_pretrained(folders["clip"])


def test_clip_scorer_range_batching_and_frame_mean(folders):
    """score = (1 + cos)/2 with cos of the normalised frame-mean image embedding and the text embedding."""
    from vidtune.rewards.clip_scorer import ClipVideoScorer

    clip = ClipVideoScorer.from_pretrained(folders["clip"], batch_size=4, max_frames=4)
    one = ClipVideoScorer.from_pretrained(folders["clip"], batch_size=1, max_frames=4)
    v = clips(4, frames=9, size=20)
    out, ref = clip(v, PROMPTS), one(v, PROMPTS)
    assert out.scores.shape == (4,) and bool(((out.scores >= 0) & (out.scores <= 1)).all())
    assert torch.allclose(out.scores, ref.scores, atol=1e-5)
    assert torch.allclose(out.scores, (1 + out.components["cosine"]) / 2)
    static = clips(1, frames=1, size=20).expand(1, 6, 3, 20, 20)
    single = clip(static[:, :1].contiguous(), PROMPTS[:1]).scores
    assert torch.allclose(clip(static.contiguous(), PROMPTS[:1]).scores, single, atol=1e-5)  # mean of equal frames
    with pytest.raises(VidtuneError, match="prompt 0 is empty"):
        clip(v[:1], [""])

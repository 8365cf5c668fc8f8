"""Write a copy of an embedded model whose text position table has the word embeddings' scale (#4 probe).

The shipped base's word embeddings have std ≈ 1 and its position table std ≈ 0.03, so its text encoder is nearly a
bag of words (docs/results.md, session 6). This rescales the position table to ``--std`` (default 1: the words'
scale) without touching anything else; SFT from the copy then shows whether order-aware text features are what
the "then" and camera atoms lack:

    .venv/bin/python benchmarks/rescale_text_positions.py builtin:base /tmp/base_pos1
    .venv/bin/python benchmarks/ablations.py sft --only sft --init /tmp/base_pos1 --out /tmp/pos.jsonl
"""

from __future__ import annotations

import argparse

import torch

from vidtune.models.tiny import load_tiny


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--std", type=float, default=1.0)
    args = ap.parse_args()
    policy = load_tiny(args.model)
    text = policy.net.text
    before = float(text.pos.detach().std())
    with torch.no_grad():
        text.pos.mul_(args.std / before)
    policy.save_pretrained(args.out)
    print(f"text positions std {before:.4f} -> {float(text.pos.detach().std()):.4f} (words {float(text.embed.weight.detach().std()):.4f})"
          f"; saved {args.out}")


if __name__ == "__main__":
    main()

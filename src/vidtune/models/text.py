"""Word-level tokenizer over the ShapeWorld vocabulary (the tiny text encoder's input)."""

from __future__ import annotations

import torch

from vidtune.world.grammar import check_words, tokenize

PAD, BOS = 0, 1
SPECIALS = ["[PAD]", "[BOS]"]


class WordTokenizer:
    """Maps prompts to ids [B, L]; every sequence starts with [BOS] so the empty prompt has one token."""

    def __init__(self, vocab: list[str], max_len: int):
        self.vocab = list(vocab)
        self.max_len = max_len
        self.index = {w: i + len(SPECIALS) for i, w in enumerate(self.vocab)}

    @property
    def size(self) -> int:
        return len(self.vocab) + len(SPECIALS)

    def __call__(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        ids = torch.full((len(prompts), self.max_len), PAD, dtype=torch.long)
        for i, p in enumerate(prompts):
            check_words(p)
            toks = [BOS] + [self.index[w] for w in tokenize(p)]
            if len(toks) > self.max_len:
                from vidtune.errors import VidtuneError

                raise VidtuneError(f"prompt {p!r} has {len(toks) - 1} tokens; the model accepts {self.max_len - 1}")
            ids[i, : len(toks)] = torch.tensor(toks)
        return {"tokens": ids, "mask": ids != PAD}

"""Automated GSB between two models: a judge scores both clips of each (prompt, seed) and plays annotator."""

from __future__ import annotations

import torch

from vidtune.math.gsb import gsb_bootstrap, gsb_stats, sign_test, wilson_interval


def judge_outcomes(ours: torch.Tensor, baseline: torch.Tensor, tie_tol: float = 0.05) -> list[str]:
    """Per-item G (ours better by > tie_tol), S, or B from two score vectors [N] (NaN scores count as S)."""
    out = []
    for a, b in zip(ours.tolist(), baseline.tolist()):
        if a != a or b != b or abs(a - b) <= tie_tol:
            out.append("S")
        else:
            out.append("G" if a > b else "B")
    return out


def gsb_report(outcomes: list[str], prompt_ids: list, seed: int = 0) -> dict:
    """WinRate, Preference, Margin with Wilson and prompt-bootstrap intervals and the sign test (§10.1)."""
    g, s, b = (outcomes.count(x) for x in "GSB")
    st = gsb_stats(g, s, b)
    boot = gsb_bootstrap(outcomes, prompt_ids, seed=seed)
    return {"counts": {"G": g, "S": s, "B": b}, "n_prompts": len(set(prompt_ids)),
            "win_rate": st.win_rate, "preference": st.preference, "margin": st.margin,
            "win_rate_wilson": list(wilson_interval(g, g + b)), "margin_bootstrap": list(boot.margin),
            "preference_bootstrap": list(boot.preference),
            "sign_test_p": sign_test(g, g + b) if g + b else float("nan")}

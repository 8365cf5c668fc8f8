"""Paired comparison of `vidtune eval` results on the same eval set (#5: is a GRPO run above its start, or above a
control run with coin-flip rewards?).

Each input is the JSON of `vidtune eval CHECKPOINT eval.samples_per_prompt=K -o NAME.json`; the first is the
reference. Per file: the metric's mean over all prompts and the held-out ones, and the per-prompt paired difference
to the reference with a 95 % interval (math.intervals.paired_prompt_difference), over all prompts and over the
held-out ones. Files named <variant>_seed<k> are also summarised per variant: a Student-t interval over the seeds of
their paired differences (math.intervals.seed_interval).

    .venv/bin/python benchmarks/paired_eval.py /tmp/k3/start.json /tmp/k3/grpo_seed*.json /tmp/k3/grpo_pure_noise_seed*.json \
        --k 3 --out benchmarks/results/grpo_paired_eval.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from vidtune.math.intervals import paired_prompt_difference, seed_interval


def heldout_rows(ev: dict, k: int) -> torch.Tensor:
    """Indices of the held-out prompts' clips in a repeat-major [k·N] eval (each repeat lists the N prompts seen
    first, held-out last: stages/evaluate.eval_set), kept repeat-major."""
    n = len(ev["prompts"]) // k
    n_heldout = ev["slices"]["heldout"]["verifier"]["n"] // k
    return torch.tensor([j * n + i for j in range(k) for i in range(n - n_heldout, n)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("others", nargs="+")
    ap.add_argument("--k", type=int, required=True, help="eval.samples_per_prompt of every file")
    ap.add_argument("--metric", default="verifier")
    ap.add_argument("--out", default="benchmarks/results/grpo_paired_eval.json")
    args = ap.parse_args()
    ref = json.loads(Path(args.reference).read_text())
    ref_scores = torch.tensor(ref["per_sample"][args.metric], dtype=torch.float64)
    held = heldout_rows(ref, args.k)
    result = {"reference": args.reference, "k": args.k, "metric": args.metric, "clips": len(ref_scores), "runs": {},
              "seeds": {}}
    for path in [args.reference, *args.others]:
        ev = json.loads(Path(path).read_text())
        if ev["prompts"] != ref["prompts"]:
            raise SystemExit(f"{path}: its eval set differs from {args.reference}'s (prompts)")
        scores = torch.tensor(ev["per_sample"][args.metric], dtype=torch.float64)
        d = paired_prompt_difference(scores, ref_scores, args.k)
        h = paired_prompt_difference(scores[held], ref_scores[held], args.k)
        name = Path(path).stem
        result["runs"][name] = {
            "all": ev["slices"]["all"][args.metric]["mean"], "heldout": ev["slices"]["heldout"][args.metric]["mean"],
            "paired_diff": d.mean, "paired_low": d.low, "paired_high": d.high, "prompts": d.n,
            "heldout_paired_diff": h.mean, "heldout_paired_low": h.low, "heldout_paired_high": h.high,
            "heldout_prompts": h.n}
        print(f"{name:24s} all {result['runs'][name]['all']:.3f}  held-out {result['runs'][name]['heldout']:.3f}  "
              f"vs reference {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] (held-out {h.mean:+.3f} "
              f"[{h.low:+.3f}, {h.high:+.3f}])")
    # runs named <variant>_seed<k>: Student-t interval over the seeds of the per-seed paired differences
    variants: dict[str, list[str]] = {}
    for name in result["runs"]:
        if re.fullmatch(r".+_seed\d+", name):
            variants.setdefault(name.rsplit("_seed", 1)[0], []).append(name)
    for v, names in variants.items():
        entry = {}
        for key in ("paired_diff", "heldout_paired_diff"):
            r = seed_interval([result["runs"][n][key] for n in names])
            entry[key] = {"mean": r.mean, "low": r.low, "high": r.high, "seeds": r.n}
        result["seeds"][v] = entry
        a, b = entry["paired_diff"], entry["heldout_paired_diff"]
        print(f"{v:24s} {a['seeds']} seeds: {a['mean']:+.3f} [{a['low']:+.3f}, {a['high']:+.3f}]  held-out "
              f"{b['mean']:+.3f} [{b['low']:+.3f}, {b['high']:+.3f}]")
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Paired comparison of `vidtune eval` results on the same eval set (#5: is a GRPO run above its start, or above a
control run with coin-flip rewards?).

Each input is the JSON of `vidtune eval CHECKPOINT eval.samples_per_prompt=K -o NAME.json`; the first is the
reference. Per file: the verifier mean over all prompts and the held-out ones, and the per-prompt paired difference
to the reference with a 95 % interval (math.intervals.paired_prompt_difference).

    .venv/bin/python benchmarks/paired_eval.py /tmp/k3/start.json /tmp/k3/grpo_seed*.json /tmp/k3/grpo_pure_noise_seed*.json \
        --k 3 --out benchmarks/results/grpo_paired_eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vidtune.math.intervals import paired_prompt_difference


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("others", nargs="+")
    ap.add_argument("--k", type=int, required=True, help="eval.samples_per_prompt of every file")
    ap.add_argument("--metric", default="verifier")
    ap.add_argument("--out", default="benchmarks/results/grpo_paired_eval.json")
    args = ap.parse_args()
    ref = json.loads(Path(args.reference).read_text())
    ref_scores = torch.tensor(ref["per_sample"][args.metric])
    result = {"reference": args.reference, "k": args.k, "metric": args.metric, "clips": len(ref_scores), "runs": {}}
    for path in [args.reference, *args.others]:
        ev = json.loads(Path(path).read_text())
        if ev["prompts"] != ref["prompts"]:
            raise SystemExit(f"{path}: its eval set differs from {args.reference}'s (prompts)")
        scores = torch.tensor(ev["per_sample"][args.metric])
        d = paired_prompt_difference(scores, ref_scores, args.k)
        result["runs"][Path(path).stem] = {
            "all": ev["slices"]["all"][args.metric]["mean"], "heldout": ev["slices"]["heldout"][args.metric]["mean"],
            "paired_diff": d.mean, "paired_low": d.low, "paired_high": d.high, "prompts": d.n}
        print(f"{Path(path).stem:24s} all {result['runs'][Path(path).stem]['all']:.3f}  "
              f"held-out {result['runs'][Path(path).stem]['heldout']:.3f}  vs reference {d.mean:+.3f} "
              f"[{d.low:+.3f}, {d.high:+.3f}]")
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

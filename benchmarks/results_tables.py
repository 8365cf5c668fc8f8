"""Build docs/results.md tables from the pipeline run's evals and benchmarks/results/ablations.jsonl."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

ATOMS = ["verifier", "atom/motion", "atom/camera", "atom/order", "atom/colour", "atom/shape", "atom/count",
         "clean", "structure_psi"]


def fmt(row: dict, key: str, slice_: str = "heldout") -> str:
    r = row["slices"].get(slice_, {}).get(key)
    return "–" if not r or not r["n"] else f"{r['mean']:.3f}"


def load(run: str = "runs/shapeworld"):
    evals = {s: json.loads((Path(run) / "evals" / f"{s}.json").read_text())
             for s in ("base", "sft", "grpo", "dpo") if (Path(run) / "evals" / f"{s}.json").exists()}
    abl = [json.loads(line) for line in Path("benchmarks/results/ablations.jsonl").read_text().splitlines()]
    return evals, abl


def table(rows: list[tuple[str, dict]], keys: list[str], slice_: str) -> str:
    head = "| model | " + " | ".join(k.replace("atom/", "") for k in keys) + " |\n"
    head += "|---|" + "---|" * len(keys) + "\n"
    return head + "".join(f"| {name} | " + " | ".join(fmt(r, k, slice_) for k in keys) + " |\n" for name, r in rows)


def seeds_summary(rows: list[dict], keys: list[str], slice_: str) -> str:
    out = "| metric | mean over seeds | min | max |\n|---|---|---|---|\n"
    for k in keys:
        vals = [r["slices"][slice_][k]["mean"] for r in rows if r["slices"][slice_].get(k, {}).get("n")]
        if vals:
            out += f"| {k.replace('atom/', '')} | {statistics.mean(vals):.3f} | {min(vals):.3f} | {max(vals):.3f} |\n"
    return out


if __name__ == "__main__":
    evals, abl = load()
    by = {a["variant"]: a for a in abl}
    print(table([(s, e) for s, e in evals.items()], ATOMS, "heldout"))
    print(table([(s, e) for s, e in evals.items()], ATOMS, "all"))
    sft = [evals["sft"]] + [by[v] for v in ("sft_seed1", "sft_seed2") if v in by]
    print(seeds_summary(sft, ATOMS, "heldout"))
    print(table([("sft (ψ weights)", evals["sft"])] + [(v, by[v]) for v in ("sft_plain_seed0", "sft_physics_seed0")
                                                        if v in by], ATOMS, "camera"))
    g = [("grpo_seed0 (pipeline)", evals["grpo"])] + [(v, by[v]) for v in by if v.startswith("grpo_")]
    print(table([("sft start", evals["sft"])] + g, ATOMS, "heldout"))
    print("| variant | VBench Total |\n|---|---|")
    for v, r in g:
        tot = r.get("vbench_total", r.get("vbench", {}).get("total"))
        print(f"| {v} | {tot:.3f} |")

"""Build docs/results.md tables from the pipeline run's evals and benchmarks/results/ablations.jsonl.

    .venv/bin/python benchmarks/results_tables.py [--run runs/shapeworld [runs/shapeworld_seed1 ...]]
        [--ablations benchmarks/results/ablations.jsonl]

Ablation rows are grouped by variant; each cell is the mean over seeds with a 95 % Student-t interval over the
per-seed means (so the interval is seed-to-seed spread, the honest unit for "does this refinement help").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidtune.math.intervals import seed_interval

ATOMS = ["verifier", "atom/motion", "atom/camera", "atom/order", "atom/colour", "atom/shape", "atom/count",
         "clean", "structure_psi"]
DPO_KEYS = ["verifier", "critic/freeze", "critic/gravity", "vbench/motion_smoothness", "vbench/dynamic_degree",
            "clean"]


def fmt(row: dict, key: str, slice_: str = "heldout") -> str:
    r = row["slices"].get(slice_, {}).get(key)
    return "–" if not r or not r["n"] else f"{r['mean']:.3f}"


def load_evals(run: str) -> dict:
    return {s: json.loads((Path(run) / "evals" / f"{s}.json").read_text())
            for s in ("base", "sft", "grpo", "dpo") if (Path(run) / "evals" / f"{s}.json").exists()}


def load(run: str, ablations: str):
    evals = load_evals(run)
    path = Path(ablations)
    abl = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return evals, abl


def table(rows: list[tuple[str, dict]], keys: list[str], slice_: str) -> str:
    head = "| model | " + " | ".join(k.replace("atom/", "") for k in keys) + " |\n"
    head += "|---|" + "---|" * len(keys) + "\n"
    return head + "".join(f"| {name} | " + " | ".join(fmt(r, k, slice_) for k in keys) + " |\n" for name, r in rows)


def seed_cell(values: list[float]) -> str:
    """mean ± t·s/√n over seeds ("mean" alone for one seed)."""
    if not values:
        return "–"
    r = seed_interval(values)
    return f"{r.mean:.3f}" if r.n < 2 else f"{r.mean:.3f} ± {r.high - r.mean:.3f}"


def metric(row: dict, key: str, slice_: str) -> float | None:
    if key == "vbench_total":
        return row.get("vbench_total")
    r = row["slices"].get(slice_, {}).get(key)
    return r["mean"] if r and r["n"] else None


def grouped(abl: list[dict], stage: str, keys: list[str], slice_: str) -> str:
    """One row per variant group: per-key mean ± interval over seeds."""
    groups: dict[str, list[dict]] = {}
    for row in abl:
        if row["stage"] == stage and "group" in row:
            groups.setdefault(row["group"], []).append(row)
    out = "| variant | seeds | " + " | ".join(k.replace("atom/", "") for k in keys) + " |\n"
    out += "|---|---|" + "---|" * len(keys) + "\n"
    for name, rows in groups.items():
        cells = [seed_cell([v for r in rows if (v := metric(r, k, slice_)) is not None]) for k in keys]
        out += f"| {name} | {len(rows)} | " + " | ".join(cells) + " |\n"
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", nargs="+", default=["runs/shapeworld"],
                    help="pipeline runs; the first one's tables are printed, every run's SFT joins the 'sft' group")
    ap.add_argument("--ablations", default="benchmarks/results/ablations.jsonl")
    args = ap.parse_args()
    evals, abl = load(args.run[0], args.ablations)
    for k, run in enumerate(args.run):  # a pipeline's SFT is one seed of the "sft" group (same recipe and eval set)
        sft = load_evals(run).get("sft")
        if sft is not None:
            abl.insert(k, {"stage": "sft", "group": "sft", "seed": k, "slices": sft["slices"],
                           "vbench_total": sft["vbench"]["total"]})
    print("## pipeline, held-out\n" + table(list(evals.items()), ATOMS, "heldout"))
    print("## pipeline, all\n" + table(list(evals.items()), ATOMS, "all"))
    if "base" in evals:
        abl.insert(0, {"stage": "sft", "group": "base (no SFT)", "seed": 0, "slices": evals["base"]["slices"],
                       "vbench_total": evals["base"]["vbench"]["total"]})
    print("## SFT variants, held-out\n" + grouped(abl, "sft", ATOMS, "heldout"))
    print("## SFT variants, camera slice\n" + grouped(abl, "sft", ["structure_psi", "atom/camera", "verifier"],
                                                      "camera"))
    if "sft" in evals and not any(r.get("group") == "grpo_start" for r in abl):  # else the runner's own
        abl.insert(0, {"stage": "grpo", "group": "start: SFT (no GRPO)", "seed": 0, "slices": evals["sft"]["slices"],
                       "vbench_total": evals["sft"]["vbench"]["total"]})
    grpo_keys = ["verifier", "scorer", "vbench_total", "atom/motion", "atom/shape", "atom/size", "atom/colour", "clean"]
    print("## GRPO variants, held-out\n" + grouped(abl, "grpo", grpo_keys, "heldout"))
    print("## GRPO variants, all prompts\n" + grouped(abl, "grpo", grpo_keys, "all"))
    print("## DPO pair sources, held-out\n" + grouped(abl, "dpo", DPO_KEYS, "heldout"))
    print("## DPO pair sources, all prompts\n" + grouped(abl, "dpo", DPO_KEYS, "all"))
    print("## DPO pairs per run\n" + "".join(f"- {r['variant']}: {r.get('pairs')}\n" for r in abl
                                               if r["stage"] == "dpo" and "pairs" in r))

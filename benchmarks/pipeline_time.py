"""`vidtune run` on the embedded default with several seeds: wall time per phase and the held-out verifier from the
base to the final stage (issue: ≤ 10 min on two cores; the gain well outside the seed-to-seed spread).

Phases come from the run directory's file times, so the pipeline itself needs no timing code: config.yaml (start)
→ evals/base.json → <stage>/DONE (training) → evals/<stage>.json (evaluation + diagnostics) … → report.html.
Runs that already exist are read, not rerun (seed 0 is usually the main run, runs/shapeworld).

    .venv/bin/python benchmarks/pipeline_time.py --runs runs/shapeworld runs/shapeworld_seed1 runs/shapeworld_seed2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

STAGES = ("sft", "grpo", "dpo")


def phases(run: Path) -> dict[str, float]:
    """Seconds per phase from file modification times (see the module doc)."""
    marks = [("start", run / "config.yaml"), ("eval_base", run / "evals" / "base.json")]
    for s in STAGES:
        marks += [(f"train_{s}", run / s / "DONE"), (f"eval_{s}", run / "evals" / f"{s}.json")]
    marks.append(("report", run / "report.html"))
    times = [(name, p.stat().st_mtime) for name, p in marks if p.exists()]
    out = {name: t - t_prev for (name, t), (_, t_prev) in zip(times[1:], times[:-1])}
    out["total"] = times[-1][1] - times[0][1]
    return out


def heldout(run: Path, stage: str) -> float:
    return json.loads((run / "evals" / f"{stage}.json").read_text())["slices"]["heldout"]["verifier"]["mean"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True, help="run dirs; a missing runs/X_seedK is created with seed K")
    ap.add_argument("--out", default="benchmarks/results/pipeline_time.json")
    args = ap.parse_args()
    rows = []
    for r in map(Path, args.runs):
        if not (r / "report.html").exists():
            seed = int(r.name.rsplit("_seed", 1)[1]) if "_seed" in r.name else 0
            cmd = [".venv/bin/vidtune", "run", f"run.seed={seed}", f"run.name={r.name}", f"run.out_dir={r.parent}"]
            if (r / "config.yaml").exists():
                cmd = [".venv/bin/vidtune", "run", "--resume", str(r)]
            subprocess.run(cmd, check=True)
        rows.append({"run": str(r), "seed": seed_of(r), "phases_s": phases(r),
                     "heldout_verifier": {s: heldout(r, s) for s in ("base", *STAGES)}})
        print(rows[-1], flush=True)
    gains = [row["heldout_verifier"]["dpo"] - row["heldout_verifier"]["base"] for row in rows]
    totals = [row["phases_s"]["total"] for row in rows]
    summary = {"total_minutes": [t / 60 for t in totals], "max_total_minutes": max(totals) / 60,
               "target_minutes": 10, "heldout_gain_base_to_final": gains, "gain_mean": statistics.mean(gains),
               "gain_std_over_seeds": statistics.stdev(gains) if len(gains) > 1 else None,
               "final_heldout_std_over_seeds": statistics.stdev([r["heldout_verifier"]["dpo"] for r in rows])
               if len(rows) > 1 else None}
    Path(args.out).write_text(json.dumps({"summary": summary, "runs": rows}, indent=2))
    print(json.dumps(summary, indent=2))


def seed_of(run: Path) -> int:
    import yaml

    return int(yaml.safe_load((run / "config.yaml").read_text())["run"]["seed"])


if __name__ == "__main__":
    main()

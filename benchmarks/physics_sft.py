"""Physics slice: I2V flow metrics of generated clips against the renderer's exact flow (EPE, >1px, >3px, F1-all)
for several checkpoints. Writes benchmarks/results/physics_sft.json.

    .venv/bin/python benchmarks/physics_sft.py base=builtin:base sft=runs/shapeworld/sft/model \
        sft_physics=/tmp/vidtune_ablations/sft_physics_seed0/sft/model
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vidtune.config import load_recipe
from vidtune.metrics.physics_eval import physics_flow_metrics
from vidtune.models.tiny import load_tiny


def main() -> None:
    recipe = load_recipe(None)
    out = {}
    for item in sys.argv[1:]:
        name, path = item.split("=", 1)
        out[name] = {"checkpoint": path, **physics_flow_metrics(load_tiny(path), recipe, n=48)}
        print(name, {k: round(v, 3) for k, v in out[name]["object_pixels"]["pooled"].items()}, flush=True)
    Path("benchmarks/results/physics_sft.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Stage III with too few usable pairs (dpo.min_pairs / dpo.on_too_few): skip keeps the Stage II model and says
so; error fails with the counts."""

import pytest
import torch
from safetensors.torch import load_file

from vidtune.config import load_recipe
from vidtune.errors import VidtuneError
from vidtune.runlog import read_metrics
from vidtune.stages import dpo


def _recipe(*extra):
    return load_recipe(None, ["run.threads=1", "world.frames=4", "world.size=16", "sampling.steps=2",
                              "dpo.pairs.n_prompts=2", "dpo.pairs.n_candidates=2", "dpo.pairs.on_policy=false",
                              "dpo.pairs.good_min=1.0", *extra])  # nothing is good enough: 0 pairs


def test_skip_exports_the_input_model_and_records_why(tmp_path, tiny_policy):
    init = tiny_policy.save_pretrained(tmp_path / "init")
    out = dpo.run(_recipe(), tmp_path / "run", init=str(init), progress=False)
    assert "only 0 usable preference pairs" in (tmp_path / "run" / "dpo" / "SKIPPED").read_text()
    before, after = load_file(str(init / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert read_metrics(tmp_path / "run" / "metrics.jsonl", "dpo")[0]["skipped"] == 1


def test_error_names_the_counts(tmp_path, tiny_policy):
    init = tiny_policy.save_pretrained(tmp_path / "init")
    with pytest.raises(VidtuneError, match="dpo.min_pairs = 4"):
        dpo.run(_recipe("dpo.on_too_few=error"), tmp_path / "run", init=str(init), progress=False)

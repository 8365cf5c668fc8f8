"""The evaluation keeps every judge per slice (verifier, learned scorer, VBench-style dimensions per video) and the
report's slice table shows each of them for every stage, with the change vs base."""

import copy
import json
import math
from html.parser import HTMLParser

import pytest
import torch

from vidtune.config import load_recipe
from vidtune.models.tiny import TinyConfig, TinyVideoPolicy
from vidtune.report import write_report
from vidtune.stages.evaluate import evaluate_policy, write_eval

JUDGES = ["verifier", "scorer", "vbench/temporal_flickering", "vbench/dynamic_degree", "vbench/motion_smoothness",
          "vbench/subject_consistency", "vbench/background_consistency"]


class TableParser(HTMLParser):
    """Rows of cell texts (th and td) of the first table whose class list holds ``cls``."""

    def __init__(self, cls: str):
        super().__init__()
        self.cls, self.depth, self.rows, self.cell = cls, 0, [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and not self.rows and self.cls in (a.get("class") or "").split():
            self.depth = 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.depth = 0
        elif self.depth and tag in ("td", "th"):
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


@pytest.fixture(scope="module")
def base_eval():
    """A real evaluation at the shipped scorer's clip shape (8 frames, 32 px), so the learned scorer applies."""
    recipe = load_recipe(None, ["eval.n_seen=4", "eval.n_heldout=2", "sampling.steps=2", "sampling.batch_size=6"])
    torch.manual_seed(0)
    policy = TinyVideoPolicy(TinyConfig(frames=8, size=32, patch=(1, 8, 8), hidden=32, depth=1, heads=2,
                                        text_layers=1)).eval()
    with torch.no_grad():
        policy.net.final.weight.normal_(std=0.05)
    return evaluate_policy(policy, recipe, progress=False)


def test_every_judge_is_per_sample_and_per_slice(base_eval):
    assert "per_video" not in base_eval["vbench"]
    for m in JUDGES:
        assert len(base_eval["per_sample"][m]) == 6
        assert m in base_eval["slices"]["all"] and m in base_eval["slices"]["heldout"]
    for m in set(JUDGES) - {"vbench/temporal_flickering"}:  # flickering: static videos only
        assert base_eval["slices"]["all"][m]["n"] == 6
    dims = base_eval["vbench"]["dimensions"]
    assert base_eval["slices"]["all"]["vbench/motion_smoothness"]["mean"] == pytest.approx(dims["motion_smoothness"])


def test_slice_table_shows_every_judge_per_stage(base_eval, tmp_path):
    later = copy.deepcopy({k: v for k, v in base_eval.items() if k != "videos"})
    for vals in later["slices"].values():
        for r in vals.values():
            r["mean"] += 0.1
    write_eval(base_eval, tmp_path / "evals" / "base.json")
    (tmp_path / "evals" / "sft.json").write_text(json.dumps(later, default=float))
    parser = TableParser("slices")
    parser.feed(write_report(tmp_path).read_text())
    header, rows = parser.rows[0], parser.rows[1:]
    assert header == ["slice", "stage", "n"] + [m.removeprefix("vbench/") for m in JUDGES]
    assert {(r[0], r[1]) for r in rows} == {(sl, s) for sl, v in base_eval["slices"].items() if v
                                            for s in ("base", "sft")}
    for sl, stage, n, *cells in rows:
        want = base_eval["slices"][sl]
        assert n == str(want["verifier"]["n"])
        for m, cell in zip(JUDGES, cells):
            if not want[m]["n"]:
                assert cell == "–"
                continue
            mean = want[m]["mean"] + (0.1 if stage == "sft" else 0.0)
            assert cell.startswith(f"{mean:.3f}") and math.isfinite(float(cell.split()[0]))
            assert cell.endswith("(+0.100)") if stage == "sft" else cell == f"{mean:.3f}"

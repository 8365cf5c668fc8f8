"""report.html in Debian's headless Chromium: opened from disk (file://), every embedded video and plot decodes
(naturalWidth > 0), the metrics and slice tables are filled for every stage. The run is the tiny-model pipeline."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.test_pipeline import tiny_overrides


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import torch

    from vidtune.models.tiny import TinyConfig, TinyVideoPolicy

    torch.manual_seed(0)
    m = TinyVideoPolicy(TinyConfig(frames=4, size=16, patch=(1, 8, 8), hidden=32, depth=2, heads=2, text_layers=1))
    with torch.no_grad():
        m.net.final.weight.normal_(std=0.05)  # moving output, so synthetic negatives exist
    model = m.save_pretrained(tmp_path_factory.mktemp("m") / "tiny")
    out = tmp_path_factory.mktemp("runs")
    res = subprocess.run([sys.executable, "-m", "vidtune.cli", "run", *tiny_overrides(model, out, "r")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return out / "r" / "report.html"


def test_report_renders(report, browser):
    browser.get(report.resolve().as_uri())
    imgs = browser.execute_script(
        "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 15)])")
    videos = [i for i in imgs if i[3].startswith("data:image/gif")]
    plots = [i for i in imgs if i[3].startswith("data:image/png")]
    assert [v[0] for v in videos] == ["base", "sft", "grpo", "dpo"]
    assert len(plots) >= 3  # sft, grpo, dpo training curves
    assert all(complete and width > 0 for _, complete, width, _ in imgs), imgs
    cells = browser.execute_script(
        "return [...document.querySelector('table.metrics').rows].map(r => [...r.cells].map(c => c.innerText))")
    header, verifier = cells[0], next(r for r in cells if r[0] == "verifier")
    assert header[1:] == ["base", "sft", "grpo", "dpo"]
    assert all(c and c != "–" for c in verifier[1:])
    assert "GSB" in browser.page_source and "Diagnostics" in browser.page_source
    slices = browser.execute_script(
        "return [...document.querySelector('table.slices').rows].map(r => [...r.cells].map(c => c.innerText))")
    judged = ["verifier", "dynamic_degree", "motion_smoothness", "subject_consistency", "background_consistency"]
    cols = [slices[0].index(m) for m in judged]  # 16 px clips: no learned scorer column
    assert {r[1] for r in slices[1:]} == {"base", "sft", "grpo", "dpo"}
    assert all(r[c] and r[c] != "–" for r in slices[1:] for c in cols)

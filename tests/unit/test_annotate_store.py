"""The annotation study store (schema guarantees, assignment and vote rules), GSB tables of a synthetic study against
the hand computation of ALGORITHMS.md §10.1, the chart, study creation, and the §8.2 pair export round trip."""

from __future__ import annotations

import json
import random
import sqlite3

import numpy as np
import pytest
import torch

from vidtune.annotate import store
from vidtune.annotate.build import create_study, read_prompt_rows
from vidtune.annotate.results import export_pairs, gsb_chart, gsb_tables
from vidtune.annotate.tokens import authenticate
from vidtune.errors import VidtuneError
from vidtune.preference.pairs import read_pairs

ALL = {a: "same" for a in store.ASPECTS}


def make_study(tmp_path, n_items=4, n_annotators=2, aspects=store.ASPECTS, prompts=None):
    conn, admin = store.init_study(tmp_path / "s", "s", "ours", "base", aspects, {})
    prompts = prompts or [f"p{i}" for i in range(n_items)]
    store.add_items(conn, [store.ItemSpec(p, 0, f"clips/a/{i}.mp4", f"clips/b/{i}.mp4") for i, p in enumerate(prompts)])
    people = store.add_annotators(conn, n_annotators)
    return conn, admin, people


def test_schema_wal_and_constraints(tmp_path):
    conn, _, _ = make_study(tmp_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    a = store.next_assignment(conn, 1, random.Random(0))
    # the database itself refuses a second open assignment, a repeated item and a second vote on an aspect
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO assignments (annotator_id, item_id, a_side, created_at) VALUES (1, 2, 'left', 0)")
    store.record_votes(conn, 1, a.id, ALL)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO assignments (annotator_id, item_id, a_side, created_at, status) "
                     "VALUES (1, ?, 'left', 0, 'done')", (a.item_id,))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO votes (assignment_id, aspect, choice, outcome) VALUES (?, 'overall', 'left', 'G')",
                     (a.id,))
    with pytest.raises(sqlite3.IntegrityError):  # CHECK constraints on the values
        conn.execute("INSERT INTO votes (assignment_id, aspect, choice, outcome) VALUES (?, 'x', 'up', 'G')", (a.id,))
    with pytest.raises(VidtuneError, match="already exists"):
        store.init_study(tmp_path / "s", "s", "a", "b", store.ASPECTS, {})


def test_a_vote_is_never_counted_twice(tmp_path):
    conn, _, _ = make_study(tmp_path)
    a = store.next_assignment(conn, 1)
    store.record_votes(conn, 1, a.id, ALL)
    with pytest.raises(store.ConflictError, match="already answered"):
        store.record_votes(conn, 1, a.id, ALL)
    with pytest.raises(store.ConflictError):
        store.skip(conn, 1, a.id)
    assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == len(store.ASPECTS)


def test_votes_are_validated_and_atomic(tmp_path):
    conn, _, _ = make_study(tmp_path)
    a = store.next_assignment(conn, 1)
    bad = [None, [], {"overall": "left"}, {**ALL, "extra": "left"}, {**ALL, "overall": "G"}]
    for votes in bad:
        with pytest.raises(store.AnnotateError):
            store.record_votes(conn, 1, a.id, votes)
    assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 0
    assert store.get_assignment(conn, 1, a.id).status == "open"


def test_an_annotator_never_sees_an_item_twice(tmp_path):
    conn, _, _ = make_study(tmp_path, n_items=6, n_annotators=2)
    seen = []
    while (a := store.next_assignment(conn, 1)) is not None:
        assert store.next_assignment(conn, 1).id == a.id  # reloading returns the same open item
        seen.append(a.item_id)
        (store.skip(conn, 1, a.id) if len(seen) % 3 == 0 else store.record_votes(conn, 1, a.id, ALL))
    assert sorted(seen) == [1, 2, 3, 4, 5, 6]
    assert store.progress(conn, 1) == (6, 6) and store.progress(conn, 2) == (0, 6)
    # the second annotator still gets every item; items with fewer judgments come first
    first = store.next_assignment(conn, 2)  # skipped items (3 and 6) count as unjudged
    assert conn.execute("SELECT COUNT(*) FROM assignments WHERE item_id = ? AND status = 'done'",
                        (first.item_id,)).fetchone()[0] == 0


def test_left_right_is_randomised_recorded_and_mapped_to_gsb(tmp_path):
    conn, _, _ = make_study(tmp_path, n_items=40, n_annotators=1)
    rng = random.Random(1)
    sides = []
    while (a := store.next_assignment(conn, 1, rng)) is not None:
        i = a.item_id - 1
        assert (a.left_clip, a.right_clip) == ((f"clips/a/{i}.mp4", f"clips/b/{i}.mp4") if a.a_side == "left"
                                               else (f"clips/b/{i}.mp4", f"clips/a/{i}.mp4"))
        sides.append(a.a_side)
        # the annotator always prefers the LEFT clip: G exactly when A was shown on the left
        store.record_votes(conn, 1, a.id, {asp: "left" for asp in store.ASPECTS})
    assert 10 <= sides.count("left") <= 30
    got = dict(conn.execute("SELECT outcome, COUNT(*) FROM votes WHERE aspect = 'overall' GROUP BY outcome"))
    assert got == {"G": sides.count("left"), "B": sides.count("right")}
    assert [store.outcome(c, s) for c, s in [("left", "left"), ("right", "left"), ("same", "right"),
                                            ("left", "right")]] == ["G", "B", "S", "B"]


def test_annotators_cannot_touch_each_others_assignments(tmp_path):
    conn, _, _ = make_study(tmp_path)
    a = store.next_assignment(conn, 1)
    for call in (lambda: store.get_assignment(conn, 2, a.id), lambda: store.record_votes(conn, 2, a.id, ALL),
                 lambda: store.skip(conn, 2, a.id)):
        with pytest.raises(store.NotFoundError):
            call()
    assert store.get_assignment(conn, 1, a.id).status == "open"


def test_tokens_are_hashed_and_checked(tmp_path):
    conn, admin, people = make_study(tmp_path)
    (n1, t1), (n2, t2) = people
    assert authenticate(conn, t1) == ("annotator", 1, n1) and authenticate(conn, t2).name == n2
    assert authenticate(conn, admin).kind == "admin"
    for bad in (None, "", "short", t1[:-1] + ("A" if t1[-1] != "A" else "B"), "x" * 65, "' OR 1=1 --aaaaaaaa"):
        assert authenticate(conn, bad) is None
    raw = b"".join(p.read_bytes() for p in (tmp_path / "s").glob("study.db*"))
    assert not any(t.encode() in raw for t in (admin, t1, t2))


def test_gsb_of_a_synthetic_study_matches_the_hand_computation(tmp_path):
    """(n_G, n_S, n_B) = (34, 48, 18) on 100 items with one prompt each (ALGORITHMS.md §10.1 test vector):
    WinRate 34/52 = 0.6538, Preference (34 + 24)/100 = 0.58, Margin 16/100 = 0.16, Wilson [0.5180, 0.7685],
    sign-test p = 0.0365; normal Margin interval 0.16 ± 1.96·√((0.34 + 0.18 − 0.16²)/100) = 0.16 ± 0.1378."""
    conn, _, _ = make_study(tmp_path, n_items=100, n_annotators=1, aspects=("overall",))
    wanted = ["G"] * 34 + ["S"] * 48 + ["B"] * 18
    for w in wanted:
        a = store.next_assignment(conn, 1)
        other = "right" if a.a_side == "left" else "left"
        store.record_votes(conn, 1, a.id, {"overall": {"G": a.a_side, "S": "same", "B": other}[w]})
    t = gsb_tables(conn)
    r = t["aspects"]["overall"]
    assert (r["G"], r["S"], r["B"], r["N"], r["n_prompts"]) == (34, 48, 18, 100, 100)
    assert r["win_rate"] == pytest.approx(34 / 52) and round(r["win_rate"], 4) == 0.6538
    assert r["preference"] == pytest.approx(0.58) and r["margin"] == pytest.approx(0.16)
    assert r["preference"] == pytest.approx((1 + r["margin"]) / 2)
    assert [round(x, 4) for x in r["win_rate_wilson"]] == [0.5180, 0.7685]
    assert round(r["sign_test_p"], 4) == 0.0365
    assert r["margin_normal"] == pytest.approx([0.16 - 0.13782, 0.16 + 0.13782], abs=1e-4)
    lo, hi = r["margin_bootstrap"]
    assert lo < 0.16 < hi and hi - lo == pytest.approx(2 * 0.1378, rel=0.25)  # ≈ normal width: 1 judgment per prompt
    s = t["summary"]
    assert (s["n_items_judged"], s["n_annotators"], s["raters_per_item"], s["n_skipped"]) == (100, 1, 1.0, 0)
    json.dumps(t, allow_nan=False)  # undefined statistics are None, so the admin page gets valid JSON


def test_chart_renders_and_empty_aspects_are_undefined(tmp_path):
    conn, _, _ = make_study(tmp_path, n_items=3, n_annotators=1)
    a = store.next_assignment(conn, 1)
    store.record_votes(conn, 1, a.id, {**ALL, "overall": a.a_side})
    t = gsb_tables(conn)
    assert t["aspects"]["visual_quality"]["win_rate"] is None  # all ties: WinRate undefined (§10.1)
    assert t["aspects"]["overall"]["win_rate"] == 1.0
    import imageio.v3 as iio

    img = iio.imread(gsb_chart(t, tmp_path / "fig.png"))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 600 and img.std() > 10


def _npy_folders(tmp_path, n):
    rng = np.random.default_rng(0)
    clips = {}
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        for k in range(n):
            clips[side, k] = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
            np.save(tmp_path / side / f"c{k}.npy", clips[side, k])
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"prompt {k}", "clip": f"c{k}.npy"}) + "\n" for k in range(n)))
    return clips, prompts


def test_export_pairs_round_trip_through_read_pairs(tmp_path):
    """Three raters on overall: item 0 G,G,B → A chosen; item 1 B,S,B → B chosen; item 2 G,B,S → tie."""
    clips, prompts = _npy_folders(tmp_path, 3)
    res = create_study(tmp_path / "study", str(tmp_path / "a"), str(tmp_path / "b"), prompts, 3, fmt="gif",
                       aspects=("overall",))
    conn = store.open_study(res.study)
    plan = {"prompt 0": "GGB", "prompt 1": "BSB", "prompt 2": "GBS"}
    for rater in (1, 2, 3):
        while (a := store.next_assignment(conn, rater)) is not None:
            w = plan[a.prompt][rater - 1]
            store.record_votes(conn, rater, a.id, {"overall": {"G": a.a_side, "S": "same",
                                                               "B": "left" if a.a_side == "right" else "right"}[w]})
    conn.close()
    out = tmp_path / "export" / "human.jsonl"
    assert export_pairs(res.study, out) == {"pairs": 2, "ties": 1, "ties_written": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(not r["chosen"].startswith("/") for r in rows) and rows[2]["tie"] is True
    assert rows[0]["votes"] == {"G": 2, "S": 0, "B": 1} and rows[0]["aspect"] == "overall"
    pairs, counts = read_pairs(out)
    assert counts["ties"] == 1 and len(pairs) == 2
    as_video = lambda x: torch.from_numpy(x).float().div(255).permute(0, 3, 1, 2)  # noqa: E731
    assert pairs[0].prompt == "prompt 0" and torch.equal(pairs[0].chosen, as_video(clips["a", 0]))
    assert pairs[1].prompt == "prompt 1" and torch.equal(pairs[1].chosen, as_video(clips["b", 1]))
    assert torch.equal(pairs[1].rejected, as_video(clips["a", 1]))
    export_pairs(res.study, out, ties="drop")
    assert len(out.read_text().splitlines()) == 2
    with pytest.raises(VidtuneError, match="no aspect 'motion_quality'"):
        export_pairs(res.study, out, aspect="motion_quality")


def test_render_uses_identical_settings_for_both_systems(tmp_path, tiny_policy):
    """The same checkpoint as A and B must give byte-identical clips: same prompts, seeds, sampler and steps."""
    torch.manual_seed(1)
    with torch.no_grad():  # the fresh model's zero-initialised output layer would make every clip grey
        for p in tiny_policy.parameters():
            p.add_(0.2 * torch.randn_like(p))
    tiny_policy.save_pretrained(tmp_path / "ck")
    (tmp_path / "p.txt").write_text("# prompts\na red circle\n\na blue square falls\n")
    res = create_study(tmp_path / "st", str(tmp_path / "ck"), str(tmp_path / "ck"), tmp_path / "p.txt", 2,
                       steps=2, seeds_per_prompt=2, fmt="gif")
    conn = store.open_study(res.study)
    items = conn.execute("SELECT prompt, seed, raw_a, raw_b, clip_a FROM items ORDER BY id").fetchall()
    assert [(r["prompt"], r["seed"]) for r in items] == [("a red circle", 0), ("a red circle", 1),
                                                         ("a blue square falls", 0), ("a blue square falls", 1)]
    for r in items:
        assert (res.study / r["raw_a"]).read_bytes() == (res.study / r["raw_b"]).read_bytes()
        assert (res.study / r["clip_a"]).suffix == ".gif"
    assert not np.array_equal(np.load(res.study / items[0]["raw_a"]), np.load(res.study / items[1]["raw_a"]))
    assert store.study_info(conn)["settings"]["steps"] == 2 and len(res.annotators) == 2
    assert (res.study / "tokens.txt").stat().st_mode & 0o077 == 0


def test_creation_errors_name_the_file(tmp_path):
    _, prompts = _npy_folders(tmp_path, 2)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(VidtuneError, match=r"bad.jsonl:2: .*'prompt'"):
        read_prompt_rows(tmp_path / "bad.jsonl")
    with pytest.raises(VidtuneError, match="prompt file not found"):
        read_prompt_rows(tmp_path / "none.txt")
    (tmp_path / "two.txt").write_text("x\ny\nz\n")
    with pytest.raises(VidtuneError, match="has 2 clips but the prompt file has 3"):
        create_study(tmp_path / "st1", str(tmp_path / "a"), str(tmp_path / "b"), tmp_path / "two.txt")
    assert not (tmp_path / "st1").exists()  # a failed build leaves nothing behind
    with pytest.raises(VidtuneError, match="--b .*not found"):
        create_study(tmp_path / "st2", str(tmp_path / "a"), str(tmp_path / "nope"), prompts)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(VidtuneError, match="not empty"):
        create_study(tmp_path / "busy", str(tmp_path / "a"), str(tmp_path / "b"), prompts)
    (tmp_path / "esc.jsonl").write_text('{"prompt": "p", "clip": "../b/c0.npy"}\n')
    with pytest.raises(VidtuneError, match="inside"):
        create_study(tmp_path / "st3", str(tmp_path / "a"), str(tmp_path / "b"), tmp_path / "esc.jsonl")
    with pytest.raises(VidtuneError, match="study folder not found"):
        store.open_study(tmp_path / "missing")
    with pytest.raises(VidtuneError, match="is not a study"):
        store.open_study(tmp_path / "busy")

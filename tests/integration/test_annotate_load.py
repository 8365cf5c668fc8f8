"""The annotation server: load on loopback (benchmarks/annotate_load.py at a small size: 20 concurrent annotators,
zero lost or duplicated votes), security (tokens, isolation between annotators, path traversal, input validation)
through Flask's test client, and the `vidtune annotate` / `vidtune gsb` commands end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidtune.annotate import store
from vidtune.annotate.build import create_study
from vidtune.annotate.server import clip_file, create_app
from vidtune.preference.pairs import read_pairs

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
ALL = {a: "same" for a in store.ASPECTS}


def folder_study(tmp_path, n=3, annotators=2):
    rng = np.random.default_rng(0)
    from vidtune.video.io import save_video

    for side in ("a", "b"):
        for k in range(n):
            save_video(rng.random((4, 8, 8, 3)), tmp_path / side / f"c{k}.gif", scale=1)
    (tmp_path / "p.txt").write_text("".join(f"prompt {k}\n" for k in range(n)))
    return create_study(tmp_path / "study", str(tmp_path / "a"), str(tmp_path / "b"), tmp_path / "p.txt",
                        annotators, fmt="gif")


def test_load_small_run_of_the_benchmark(tmp_path):
    out = tmp_path / "load.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "annotate_load.py"), "--annotators", "20",
                          "--votes", "200", "--double", "0.1", "--out", str(out)],
                         capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    r = json.loads(out.read_text())
    assert r["ok"] and r["votes_acknowledged"] == 200 and r["vote_rows_stored"] == 200 * 5
    assert (r["lost"], r["duplicated"], r["unacknowledged_stored"], r["items_repeated_for_an_annotator"]) == (0,) * 4
    assert r["double_submits"]["both_accepted"] == 0 and r["double_submits"]["n"] > 0
    assert r["latency"]["all"]["n"] >= 400 and r["latency"]["all"]["p95_ms"] > 0


@pytest.fixture
def app_study(tmp_path):
    res = folder_study(tmp_path)
    app = create_app(res.study)
    app.testing = True
    return app, res


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_requests_without_a_valid_token_are_refused(app_study):
    app, res = app_study
    c = app.test_client()
    (_, t1), _ = res.annotators
    for token in (None, "", "not-a-token", "A" * 24, res.admin_token[::-1]):
        h = bearer(token) if token is not None else {}
        assert c.get("/api/next", headers=h).status_code == 401
        assert c.post("/api/vote", json={"assignment_id": 1, "votes": ALL}, headers=h).status_code == 401
        assert c.get("/clip/1/left", headers=h).status_code == 401
        assert c.get("/api/admin/stats", headers=h).status_code == 401
    assert c.get("/").headers["Location"].endswith("/login") and c.get("/admin").status_code == 302
    assert c.get("/api/admin/stats", headers=bearer(t1)).status_code == 403  # annotator ≠ admin
    assert c.get("/api/next", headers=bearer(res.admin_token)).status_code == 403
    assert c.get("/api/admin/stats", headers=bearer(res.admin_token)).status_code == 200


def test_login_sets_a_strict_httponly_cookie(app_study):
    app, res = app_study
    c = app.test_client()
    assert c.post("/login", data={"token": "wrong-token-wrong-token"}).status_code == 401
    r = c.post("/login", data={"token": res.annotators[0][1]})
    assert r.status_code == 302 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = c.get("/")
    assert page.status_code == 200 and b"annotate.js" in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert c.get("/api/next").get_json()["progress"] == {"done": 0, "total": 3}
    r = c.post("/login", data={"token": res.admin_token})
    assert r.headers["Location"] == "/admin" and c.get("/admin").status_code == 200


def test_an_annotator_cannot_read_or_change_anothers_votes(app_study):
    app, res = app_study
    c = app.test_client()
    (_, t1), (_, t2) = res.annotators
    a1 = c.get("/api/next", headers=bearer(t1)).get_json()
    votes = {a: "left" for a in store.ASPECTS}
    assert c.post("/api/vote", json={"assignment_id": a1["assignment_id"], "votes": votes},
                  headers=bearer(t1)).status_code == 200
    aid = a1["assignment_id"]
    assert c.get(f"/clip/{aid}/left", headers=bearer(t2)).status_code == 404
    for path in ("/api/vote", "/api/skip"):
        r = c.post(path, json={"assignment_id": aid, "votes": {a: "right" for a in store.ASPECTS}},
                   headers=bearer(t2))
        assert r.status_code == 404
    again = c.post("/api/vote", json={"assignment_id": aid, "votes": ALL}, headers=bearer(t1))
    assert again.status_code == 409  # not even the owner can change a stored vote
    conn = store.open_study(res.study)
    assert {r[0] for r in conn.execute("SELECT choice FROM votes")} == {"left"}
    assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == len(store.ASPECTS)


def test_video_paths_cannot_escape_the_study_folder(app_study, tmp_path):
    app, res = app_study
    c = app.test_client()
    t1 = res.annotators[0][1]
    aid = c.get("/api/next", headers=bearer(t1)).get_json()["assignment_id"]
    r = c.get(f"/clip/{aid}/left", headers=bearer(t1))
    assert r.status_code == 200 and r.mimetype == "image/gif" and r.data[:3] == b"GIF"
    for url in (f"/clip/{aid}/..%2F..%2Fstudy.db", f"/clip/{aid}/../../tokens.txt", f"/clip/{aid}/top",
                "/clip/../study.db", "/static/../study.db", "/static/..%2F..%2Fstore.py"):
        assert c.get(url, headers=bearer(t1)).status_code in (400, 404), url
    secret = tmp_path / "secret.gif"
    secret.write_bytes(b"GIF89a-secret")
    (res.study / "clips" / "link.gif").symlink_to(secret)
    conn = store.open_study(res.study)
    for bad in ("clips/../tokens.txt", "../secret.gif", str(secret), "clips/link.gif", "study.db", "clips/a"):
        conn.execute("UPDATE items SET clip_a = ?, clip_b = ? WHERE id = (SELECT item_id FROM assignments "
                     "WHERE id = ?)", (bad, bad, aid))
        assert c.get(f"/clip/{aid}/left", headers=bearer(t1)).status_code == 404, bad
        with pytest.raises(store.NotFoundError):
            clip_file(res.study, bad)


def test_inputs_are_validated_and_nothing_is_stored(app_study):
    app, res = app_study
    c = app.test_client()
    h = bearer(res.annotators[0][1])
    aid = c.get("/api/next", headers=h).get_json()["assignment_id"]
    bad = [None, [], {"assignment_id": "1", "votes": ALL}, {"assignment_id": True, "votes": ALL},
           {"assignment_id": -1, "votes": ALL}, {"assignment_id": aid}, {"assignment_id": aid, "votes": "left"},
           {"assignment_id": aid, "votes": {**ALL, "overall": "G"}},
           {"assignment_id": aid, "votes": {"overall": "left"}},
           {"assignment_id": aid, "votes": {**ALL, "<script>": "left"}}]
    for body in bad:
        r = c.post("/api/vote", json=body, headers=h)
        assert r.status_code == 400 and "error" in r.get_json(), body
    assert c.post("/api/vote", data="assignment_id=1", headers=h).status_code == 400  # not JSON
    assert c.post("/api/vote", data="x" * 100_000, content_type="application/json", headers=h).status_code == 413
    assert c.post("/api/vote", json={"assignment_id": 10**6, "votes": ALL}, headers=h).status_code == 404
    conn = store.open_study(res.study)
    assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 0
    assert c.post("/api/skip", json={"assignment_id": aid}, headers=h).get_json()["progress"]["done"] == 1


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vidtune.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=120)


def test_cli_create_gsb_and_export_end_to_end(tmp_path):
    from vidtune.video.io import save_video

    rng = np.random.default_rng(1)
    for side in ("a", "b"):
        for k in range(4):
            save_video(rng.random((4, 8, 8, 3)), tmp_path / side / f"{k}.mp4", scale=2)
    (tmp_path / "p.txt").write_text("a red circle\na blue square\na red circle\na green star\n")
    r = run_cli("annotate", "create", str(tmp_path / "st"), "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"),
                "--prompts", str(tmp_path / "p.txt"), "--annotators", "2")
    assert r.returncode == 0, r.stderr
    tokens = dict(line.split("\t") for line in (tmp_path / "st" / "tokens.txt").read_text().splitlines())
    assert tokens["annotator-01"] in r.stdout and tokens["admin"] in r.stdout
    conn = store.open_study(tmp_path / "st")
    for who in (1, 2):
        while (a := store.next_assignment(conn, who)) is not None:
            store.record_votes(conn, who, a.id, {**ALL, "overall": a.a_side, "visual_quality": "left"})
    r = run_cli("gsb", str(tmp_path / "st"), "--out", str(tmp_path / "fig.png"), "--resamples", "200")
    assert r.returncode == 0, r.stderr
    assert "overall" in r.stdout and "1.0000" in r.stdout and (tmp_path / "fig.png").stat().st_size > 10_000
    table = json.loads((tmp_path / "fig.json").read_text())
    assert table["aspects"]["overall"]["G"] == 8 and table["summary"]["raters_per_item"] == 2.0
    r = run_cli("annotate", "export-pairs", str(tmp_path / "st"), str(tmp_path / "out" / "pairs.jsonl"))
    assert r.returncode == 0 and "4 pairs" in r.stdout, r.stderr
    pairs, counts = read_pairs(tmp_path / "out" / "pairs.jsonl")
    assert len(pairs) == 4 and counts["ties"] == 0
    for args, needle in [(("gsb", str(tmp_path / "nope")), "study folder not found"),
                         (("annotate", "serve", str(tmp_path / "a")), "is not a study"),
                         (("annotate", "create", str(tmp_path / "st"), "--a", str(tmp_path / "a"), "--b",
                           str(tmp_path / "b"), "--prompts", str(tmp_path / "p.txt")), "not empty")]:
        r = run_cli(*args)
        assert r.returncode != 0 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr

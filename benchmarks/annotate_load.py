"""Load test of the annotation server on loopback: N concurrent annotators submit V votes in total; every
acknowledged vote must be in the database exactly once, nothing unacknowledged may appear, and no annotator may get
an item twice. A fraction of the votes is sent twice at the same moment (a double click / a retry racing the
original): exactly one copy must be accepted (200) and the other refused (409). Latency is measured per request
on the client (connect + request + response) and reported as percentiles.

The server runs as its own process (``vidtune annotate serve``, werkzeug threaded, SQLite WAL, synchronous=FULL);
the study is synthetic (tiny GIF clips collected from two folders), so only the web app and storage are timed.
Writes benchmarks/results/annotate_load.json:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/annotate_load.py                  # 20 annotators, 2,000 votes
    .venv/bin/python benchmarks/annotate_load.py --annotators 20 --votes 200 --out /tmp/x.json   # the test's size
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

CHOICES = ("left", "same", "right")


def make_study(root: Path, n_items: int, n_annotators: int) -> tuple[Path, list[str]]:
    """A study of ``n_items`` synthetic items (8x8 four-frame GIFs) built by ``create_study`` from two folders."""
    from vidtune.annotate.build import create_study
    from vidtune.video.io import save_video

    rng = np.random.default_rng(0)
    for side in ("a", "b"):
        for k in range(n_items):
            save_video(rng.random((4, 8, 8, 3)), root / side / f"clip{k:04d}.gif", scale=2)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"prompt {k // 2}", "seed": k % 2, "clip": f"clip{k:04d}.gif"})
                               + "\n" for k in range(n_items)))
    res = create_study(root / "study", str(root / "a"), str(root / "b"), prompts, n_annotators, fmt="gif")
    return res.study, [t for _, t in res.annotators]


def start_server(study: Path, log: Path) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "vidtune.cli", "annotate", "serve", str(study), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if m:
            return proc, int(m.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"the server did not start; see {log}:\n{log.read_text()[-2000:]}")


class Client:
    """One annotator: a keep-alive connection, every request timed."""

    def __init__(self, port: int, token: str, lat: dict[str, list[float]]):
        self.port, self.headers, self.lat = port, {"Authorization": f"Bearer {token}"}, lat
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, kind: str, method: str, path: str, body: dict | None = None, conn=None) -> tuple[int, dict]:
        conn = conn or self.conn
        headers = dict(self.headers)
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body), "application/json"
        t0 = time.perf_counter()
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = json.loads(resp.read() or b"{}")
        self.lat[kind].append(time.perf_counter() - t0)
        return resp.status, payload


def annotator(port: int, token: str, quota: int, p_double: float, seed: int, out: dict, lock: threading.Lock):
    rng = random.Random(seed)
    lat: dict[str, list[float]] = defaultdict(list)
    client, acked, errors, doubles = Client(port, token, lat), {}, [], []
    for _ in range(quota):
        status, item = client.call("next", "GET", "/api/next")
        if status != 200 or item.get("finished"):
            errors.append(("next", status, item))
            break
        votes = {a: rng.choice(CHOICES) for a in item["aspects"]}
        body = {"assignment_id": item["assignment_id"], "votes": votes}
        if rng.random() < p_double:  # the same vote twice at once, from two connections
            second: list = []
            other = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            t = threading.Thread(target=lambda: second.append(client.call("vote", "POST", "/api/vote", body, other)))
            t.start()
            first = client.call("vote", "POST", "/api/vote", body)
            t.join()
            other.close()
            statuses = sorted([first[0], second[0][0]])
            doubles.append(statuses)
            if 200 in statuses:
                acked[item["assignment_id"]] = votes
        else:
            status, reply = client.call("vote", "POST", "/api/vote", body)
            if status == 200:
                acked[item["assignment_id"]] = votes
            else:
                errors.append(("vote", status, reply))
    client.conn.close()
    with lock:
        out["acked"][token] = acked
        out["errors"] += errors
        out["doubles"] += doubles
        for k, v in lat.items():
            out["latency"][k] += v


def audit(study: Path, acked: dict[int, dict]) -> dict:
    """Compare the database with what the clients were told was stored."""
    conn = sqlite3.connect(study / "study.db")
    stored = defaultdict(dict)
    for aid, aspect, choice in conn.execute("SELECT assignment_id, aspect, choice FROM votes"):
        stored[aid][aspect] = choice  # a duplicated row would be counted by the GROUP BY below
    lost = sum(1 for aid, v in acked.items() for a, c in v.items() if stored.get(aid, {}).get(a) != c)
    phantom = sum(1 for aid, v in stored.items() if aid not in acked for _ in v)
    dup_rows = conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM votes GROUP BY assignment_id, aspect "
                            "HAVING COUNT(*) > 1)").fetchone()[0]
    repeated = conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM assignments GROUP BY annotator_id, item_id "
                            "HAVING COUNT(*) > 1)").fetchone()[0]
    rows = conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
    conn.close()
    return {"vote_rows_stored": rows, "lost": lost, "unacknowledged_stored": phantom, "duplicated": dup_rows,
            "items_repeated_for_an_annotator": repeated}


def pct(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1000
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())} if a.size else {"n": 0}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--votes", type=int, default=2000, help="item judgments in total (each covers all aspects)")
    ap.add_argument("--double", type=float, default=0.05, help="fraction of votes sent twice concurrently")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "annotate_load.json")
    args = ap.parse_args(argv)
    quota = -(-args.votes // args.annotators)
    with tempfile.TemporaryDirectory(prefix="annotate_load_") as tmp:
        study, tokens = make_study(Path(tmp), quota, args.annotators)
        proc, port = start_server(study, Path(tmp) / "server.log")
        out = {"acked": {}, "errors": [], "doubles": [], "latency": defaultdict(list)}
        lock = threading.Lock()
        try:
            threads = [threading.Thread(target=annotator, args=(port, tok, quota, args.double, i, out, lock))
                       for i, tok in enumerate(tokens)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=600)
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        acked = {aid: v for per in out["acked"].values() for aid, v in per.items()}
        checks = audit(study, acked)
    n_aspects = len(next(iter(acked.values()))) if acked else 0
    doubles = out["doubles"]
    result = {
        "config": {"annotators": args.annotators, "votes_requested": quota * args.annotators, "items": quota,
                   "aspects_per_vote": n_aspects, "double_submit_fraction": args.double,
                   "server": "vidtune annotate serve (Flask 3 on werkzeug, threaded), SQLite WAL synchronous=FULL",
                   "clients": "one thread per annotator, keep-alive HTTP/1.1 on 127.0.0.1",
                   "load": "closed loop, no think time: latency ~ annotators / throughput"},
        "votes_acknowledged": len(acked), "errors": len(out["errors"]), "error_samples": out["errors"][:5],
        **checks,
        "double_submits": {"n": len(doubles), "one_accepted_one_409": sum(d == [200, 409] for d in doubles),
                           "both_accepted": sum(d == [200, 200] for d in doubles)},
        "wall_s": wall, "votes_per_s": len(acked) / wall if wall else None,
        "latency": {k: pct(v) for k, v in out["latency"].items()} | {"all": pct(sum(out["latency"].values(), []))},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    result["ok"] = (result["votes_acknowledged"] == quota * args.annotators and result["errors"] == 0
                    and checks["lost"] == 0 and checks["unacknowledged_stored"] == 0 and checks["duplicated"] == 0
                    and checks["items_repeated_for_an_annotator"] == 0
                    and checks["vote_rows_stored"] == len(acked) * n_aspects
                    and result["double_submits"]["both_accepted"] == 0
                    and result["double_submits"]["one_accepted_one_409"] == len(doubles))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    lt = result["latency"]["all"]
    print(f"{len(acked)} votes by {args.annotators} annotators in {wall:.1f} s: lost {checks['lost']}, duplicated "
          f"{checks['duplicated']}, double submits {len(doubles)} (both accepted "
          f"{result['double_submits']['both_accepted']}), p95 {lt.get('p95_ms', float('nan')):.1f} ms "
          f"→ {'OK' if result['ok'] else 'FAILED'}; wrote {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

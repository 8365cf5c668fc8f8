"""The study database: SQLite in WAL mode, one short ``BEGIN IMMEDIATE`` transaction per write.

Guarantees enforced by the schema itself, not only by the code: an annotator gets an item at most once
(``UNIQUE(annotator_id, item_id)``), holds at most one open assignment (partial unique index), and an aspect of an
assignment is voted at most once (``UNIQUE(assignment_id, aspect)``), so a retried or doubled request can never be
counted twice; a vote is committed with ``synchronous=FULL`` before the request is acknowledged, so it is not lost.
System A is "ours": a vote for A's side is G, for B's side B, "same" S (ALGORITHMS.md §10.1). Left/right is drawn
per assignment and recorded (``a_side``). Tokens are stored as SHA-256 hashes only (``tokens``).
"""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from vidtune.annotate.tokens import hash_token, new_token
from vidtune.errors import VidtuneError

SCHEMA_VERSION = 1
DB_NAME = "study.db"
ASPECTS = ("visual_quality", "motion_quality", "text_alignment", "preservation", "overall")
CHOICES = ("left", "same", "right")
_WRITE_LOCK = threading.Lock()

SCHEMA = """
CREATE TABLE study (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  name TEXT NOT NULL, system_a TEXT NOT NULL, system_b TEXT NOT NULL,
  aspects TEXT NOT NULL,             -- JSON list, a subset of ASPECTS in display order
  settings TEXT NOT NULL,            -- JSON: how the clips were made (identical for A and B)
  admin_token_hash TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE items (
  id INTEGER PRIMARY KEY, prompt TEXT NOT NULL, seed INTEGER,
  clip_a TEXT NOT NULL, clip_b TEXT NOT NULL,   -- shown videos, relative to the study folder
  raw_a TEXT, raw_b TEXT,                       -- exact clips (.npy) for export, relative, optional
  UNIQUE (clip_a, clip_b));
CREATE TABLE annotators (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
CREATE TABLE assignments (
  id INTEGER PRIMARY KEY,
  annotator_id INTEGER NOT NULL REFERENCES annotators(id), item_id INTEGER NOT NULL REFERENCES items(id),
  a_side TEXT NOT NULL CHECK (a_side IN ('left', 'right')),
  status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'skipped')),
  created_at REAL NOT NULL, answered_at REAL,
  UNIQUE (annotator_id, item_id));
CREATE UNIQUE INDEX one_open_assignment ON assignments(annotator_id) WHERE status = 'open';
CREATE TABLE votes (
  id INTEGER PRIMARY KEY, assignment_id INTEGER NOT NULL REFERENCES assignments(id),
  aspect TEXT NOT NULL, choice TEXT NOT NULL CHECK (choice IN ('left', 'same', 'right')),
  outcome TEXT NOT NULL CHECK (outcome IN ('G', 'S', 'B')),
  UNIQUE (assignment_id, aspect));
"""


class AnnotateError(VidtuneError):
    """A refused request; ``status`` is the HTTP status the server answers with."""

    status = 400


class NotFoundError(AnnotateError):
    status = 404  # also for another annotator's assignment: existence is not revealed


class ConflictError(AnnotateError):
    status = 409  # already answered or skipped


class ItemSpec(NamedTuple):
    prompt: str
    seed: int | None
    clip_a: str  # relative to the study folder
    clip_b: str
    raw_a: str | None = None
    raw_b: str | None = None


class Assignment(NamedTuple):
    id: int
    item_id: int
    prompt: str
    seed: int | None
    a_side: str  # where system A is shown: "left" | "right"
    left_clip: str  # relative to the study folder
    right_clip: str
    status: str


def outcome(choice: str, a_side: str) -> str:
    """G when the chosen side shows system A, B when it shows system B, S for "same"."""
    return "S" if choice == "same" else ("G" if choice == a_side else "B")


def db_path(study: str | Path) -> Path:
    return Path(study) / DB_NAME


def connect(db: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, FULL sync, foreign keys, 30 s busy wait."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    for pragma in ("busy_timeout = 30000", "foreign_keys = ON", "synchronous = FULL"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def open_study(study: str | Path) -> sqlite3.Connection:
    """Open an existing study folder, with errors that name the folder or file."""
    study = Path(study)
    db = db_path(study)
    if not study.is_dir():
        raise VidtuneError(f"study folder not found: {study}")
    if not db.is_file():
        raise VidtuneError(f"{study} is not a study: it has no {DB_NAME} (create one with `vidtune annotate create`)")
    try:
        conn = connect(db)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise VidtuneError(f"{db} is not a readable SQLite database: {e}") from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise VidtuneError(f"{db} has schema version {version}, this vidtune reads version {SCHEMA_VERSION}")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (takes the write lock up front, so two writers never deadlock on an upgrade) … COMMIT.
    Writers of one process first queue on a lock: SQLite's busy handler polls with growing sleeps, which made the
    tail latency under 20 concurrent annotators ~5x worse; other processes are still excluded by SQLite itself."""
    with _WRITE_LOCK:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def init_study(study: str | Path, name: str, system_a: str, system_b: str, aspects: Sequence[str],
               settings: dict) -> tuple[sqlite3.Connection, str]:
    """Create ``STUDY/study.db`` (refusing to overwrite one); returns (connection, admin token)."""
    bad = [a for a in aspects if a not in ASPECTS]
    if bad or not aspects or len(set(aspects)) != len(aspects):
        raise VidtuneError(f"aspects must be distinct names from {', '.join(ASPECTS)}; got {list(aspects)}")
    db = db_path(study)
    if db.exists():
        raise VidtuneError(f"{db} already exists; choose a new study folder")
    Path(study).mkdir(parents=True, exist_ok=True)
    conn = connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    admin = new_token()
    with transaction(conn):
        for stmt in filter(str.strip, SCHEMA.split(";")):  # not executescript: it would COMMIT implicitly
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("INSERT INTO study VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                     (name, system_a, system_b, json.dumps(list(aspects)), json.dumps(settings), hash_token(admin),
                      time.time()))
    return conn, admin


def add_items(conn: sqlite3.Connection, items: Sequence[ItemSpec]) -> int:
    with transaction(conn):
        conn.executemany("INSERT INTO items (prompt, seed, clip_a, clip_b, raw_a, raw_b) VALUES (?, ?, ?, ?, ?, ?)",
                         [tuple(i) for i in items])
    return len(items)


def add_annotators(conn: sqlite3.Connection, n: int) -> list[tuple[str, str]]:
    """Create ``n`` annotators; returns their (name, token) — the only time the tokens are readable."""
    if n < 1:
        raise VidtuneError(f"--annotators must be >= 1, got {n}")
    out = []
    with transaction(conn):
        start = conn.execute("SELECT COUNT(*) FROM annotators").fetchone()[0]
        for i in range(start + 1, start + n + 1):
            name, token = f"annotator-{i:02d}", new_token()
            conn.execute("INSERT INTO annotators (name, token_hash, created_at) VALUES (?, ?, ?)",
                         (name, hash_token(token), time.time()))
            out.append((name, token))
    return out


def study_info(conn: sqlite3.Connection) -> dict:
    row = conn.execute("SELECT name, system_a, system_b, aspects, settings FROM study").fetchone()
    n_items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    return {"name": row["name"], "system_a": row["system_a"], "system_b": row["system_b"],
            "aspects": json.loads(row["aspects"]), "settings": json.loads(row["settings"]), "n_items": n_items}


_ASSIGNMENT_SQL = """SELECT s.id, s.item_id, i.prompt, i.seed, s.a_side, i.clip_a, i.clip_b, s.status
FROM assignments s JOIN items i ON i.id = s.item_id WHERE s.annotator_id = ? AND s.id = ?"""


def _assignment(row: sqlite3.Row) -> Assignment:
    left, right = (row["clip_a"], row["clip_b"]) if row["a_side"] == "left" else (row["clip_b"], row["clip_a"])
    return Assignment(row["id"], row["item_id"], row["prompt"], row["seed"], row["a_side"], left, right,
                      row["status"])


def get_assignment(conn: sqlite3.Connection, annotator_id: int, assignment_id: int) -> Assignment:
    """The annotator's own assignment; another annotator's and a missing one give the same 404 (no existence leak)."""
    row = conn.execute(_ASSIGNMENT_SQL, (annotator_id, assignment_id)).fetchone()
    if row is None:
        raise NotFoundError(f"no assignment {assignment_id} for this annotator")
    return _assignment(row)


def next_assignment(conn: sqlite3.Connection, annotator_id: int, rng: random.Random | None = None
                    ) -> Assignment | None:
    """The annotator's open assignment, else a new one on an item they have never been given (fewest judgments
    first, random among equals) with A's side drawn uniformly; None when every item has been seen."""
    rng = rng or secrets.SystemRandom()
    with transaction(conn):
        row = conn.execute("SELECT id FROM assignments WHERE annotator_id = ? AND status = 'open'",
                           (annotator_id,)).fetchone()
        if row is None:
            item = conn.execute(
                """SELECT i.id FROM items i WHERE NOT EXISTS
                     (SELECT 1 FROM assignments s WHERE s.item_id = i.id AND s.annotator_id = ?)
                   ORDER BY (SELECT COUNT(*) FROM assignments s WHERE s.item_id = i.id AND s.status != 'skipped'),
                            random() LIMIT 1""", (annotator_id,)).fetchone()
            if item is None:
                return None
            side = "left" if rng.random() < 0.5 else "right"
            cur = conn.execute("INSERT INTO assignments (annotator_id, item_id, a_side, created_at) "
                               "VALUES (?, ?, ?, ?)", (annotator_id, item["id"], side, time.time()))
            row = {"id": cur.lastrowid}
        return get_assignment(conn, annotator_id, row["id"])


def validate_votes(conn: sqlite3.Connection, votes: object) -> dict[str, str]:
    """``votes`` must map every study aspect (and nothing else) to one of ``left``, ``same``, ``right``."""
    aspects = json.loads(conn.execute("SELECT aspects FROM study").fetchone()[0])
    if not isinstance(votes, dict):
        raise AnnotateError("'votes' must be an object {aspect: 'left' | 'same' | 'right'}")
    unknown, missing = sorted(set(votes) - set(aspects)), [a for a in aspects if a not in votes]
    if unknown or missing:
        raise AnnotateError(f"votes must cover exactly the aspects {aspects}; unknown {unknown}, missing {missing}")
    bad = {a: v for a, v in votes.items() if v not in CHOICES}
    if bad:
        raise AnnotateError(f"each vote must be one of {list(CHOICES)}; got {bad}")
    return {a: votes[a] for a in aspects}


def _close_open(conn: sqlite3.Connection, annotator_id: int, assignment_id: int, status: str) -> Assignment:
    a = get_assignment(conn, annotator_id, assignment_id)
    if a.status != "open":
        raise ConflictError(f"assignment {assignment_id} was already {'answered' if a.status == 'done' else a.status}")
    conn.execute("UPDATE assignments SET status = ?, answered_at = ? WHERE id = ? AND status = 'open'",
                 (status, time.time(), assignment_id))
    return a


def record_votes(conn: sqlite3.Connection, annotator_id: int, assignment_id: int, votes: object) -> None:
    """Store one G/S/B per aspect for the annotator's open assignment atomically (all aspects or none)."""
    votes = validate_votes(conn, votes)
    with transaction(conn):
        a = _close_open(conn, annotator_id, assignment_id, "done")
        conn.executemany("INSERT INTO votes (assignment_id, aspect, choice, outcome) VALUES (?, ?, ?, ?)",
                         [(a.id, asp, c, outcome(c, a.a_side)) for asp, c in votes.items()])


def skip(conn: sqlite3.Connection, annotator_id: int, assignment_id: int) -> None:
    """Skip the annotator's open assignment; the item is not offered to them again."""
    with transaction(conn):
        _close_open(conn, annotator_id, assignment_id, "skipped")


def progress(conn: sqlite3.Connection, annotator_id: int) -> tuple[int, int]:
    """(items answered or skipped by the annotator, items in the study)."""
    seen = conn.execute("SELECT COUNT(*) FROM assignments WHERE annotator_id = ? AND status != 'open'",
                        (annotator_id,)).fetchone()[0]
    return seen, conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]


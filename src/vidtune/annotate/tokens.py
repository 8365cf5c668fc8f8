"""Access tokens: random, shown once at creation, stored only as SHA-256 hashes; one per annotator plus an admin."""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from typing import NamedTuple

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class Principal(NamedTuple):
    kind: str  # "annotator" | "admin"
    id: int  # annotator id (0 for the admin)
    name: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(18)  # 144 random bits, 24 URL-safe characters


def authenticate(conn: sqlite3.Connection, token: str | None) -> Principal | None:
    """The annotator or admin holding ``token``; None for a missing, malformed or unknown token."""
    if not token or not _TOKEN_RE.match(token):
        return None
    h = hash_token(token)
    row = conn.execute("SELECT id, name FROM annotators WHERE token_hash = ?", (h,)).fetchone()
    if row is not None:
        return Principal("annotator", row["id"], row["name"])
    if conn.execute("SELECT 1 FROM study WHERE admin_token_hash = ?", (h,)).fetchone():
        return Principal("admin", 0, "admin")
    return None

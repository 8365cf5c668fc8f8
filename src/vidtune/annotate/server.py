"""The annotation web app (Flask): token login, side-by-side synchronised clips with G/S/B per aspect, an admin page
with live GSB tables. Loopback by default; meant for a lab study, not the open internet.

Security: every route but the login page needs a valid token (HttpOnly SameSite=Strict cookie set at login, or an
``Authorization: Bearer`` header for scripts); annotators reach only their own assignments (another's id answers
404 like a missing one), and clips are addressed by assignment and side, never by path — the stored path is still
resolved and must lie inside ``STUDY/clips``. JSON bodies are size-limited and validated; a Content-Security-Policy
allows only the app's own scripts.
"""

from __future__ import annotations

import sqlite3
from functools import wraps
from pathlib import Path

from flask import Flask, Response, g, jsonify, redirect, render_template, request, send_file

from vidtune.annotate import store
from vidtune.annotate.results import gsb_tables
from vidtune.annotate.tokens import Principal, authenticate

COOKIE = "vidtune_token"
VIDEO_SUFFIXES = (".mp4", ".gif", ".webm")
CSP = ("default-src 'self'; img-src 'self'; media-src 'self'; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'")


def clip_file(study: str | Path, rel: str) -> Path:
    """The video ``rel`` inside ``STUDY/clips/``; anything resolving outside it (``..``, an absolute path, a symlink
    pointing out) or not a video file is refused with 404."""
    root = (Path(study) / "clips").resolve()
    path = (Path(study) / rel).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
        raise store.NotFoundError(f"clip {rel!r} is not a video inside the study's clips folder")
    return path


def _db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = store.connect(store.db_path(g.study))
    return g.db


def _principal() -> Principal | None:
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.startswith("Bearer ") else request.cookies.get(COOKIE)
    return authenticate(_db(), token)


def _json_error(message: str, status: int) -> tuple[Response, int]:
    return jsonify(error=message), status


def require(kind: str, api: bool = True):
    """Route decorator: the caller must hold a token of ``kind``; pages redirect to the login, APIs answer 401/403."""

    def wrap(view):
        @wraps(view)
        def inner(*args, **kwargs):
            who = _principal()
            if who is None:
                return _json_error("a valid token is required", 401) if api else redirect("/login")
            if who.kind != kind:
                return _json_error(f"this needs an {kind} token", 403) if api else redirect(
                    "/admin" if who.kind == "admin" else "/")
            g.who = who
            return view(*args, **kwargs)

        return inner

    return wrap


def _assignment_json(a: store.Assignment | None) -> dict:
    seen, total = store.progress(_db(), g.who.id)
    if a is None:
        return {"finished": True, "progress": {"done": seen, "total": total}}
    kind = lambda rel: "image" if rel.lower().endswith(".gif") else "video"  # noqa: E731
    return {"finished": False, "assignment_id": a.id, "prompt": a.prompt,
            "left": {"url": f"/clip/{a.id}/left", "kind": kind(a.left_clip)},
            "right": {"url": f"/clip/{a.id}/right", "kind": kind(a.right_clip)},
            "aspects": store.study_info(_db())["aspects"], "progress": {"done": seen, "total": total}}


def _assignment_id(body: object) -> int:
    if not isinstance(body, dict):
        raise store.AnnotateError("the request body must be a JSON object")
    aid = body.get("assignment_id")
    if not isinstance(aid, int) or isinstance(aid, bool) or aid < 1:
        raise store.AnnotateError(f"'assignment_id' must be a positive integer, got {aid!r}")
    return aid


def create_app(study: str | Path) -> Flask:
    """The app for one study folder (checked now: a bad folder fails before the server starts)."""
    study = Path(study).resolve()
    store.open_study(study).close()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=16 * 1024, STUDY=study)
    app.json.sort_keys = False  # aspects stay in the study's display order

    @app.before_request
    def _bind():
        g.study = study

    @app.teardown_appcontext
    def _close(_exc):
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if request.path.startswith("/api/") or resp.mimetype == "text/html":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(store.AnnotateError)
    def _refused(e: store.AnnotateError):
        return _json_error(str(e), e.status)

    @app.errorhandler(413)
    def _too_large(_e):
        return _json_error("request body too large", 413)

    @app.get("/favicon.ico")
    def favicon():
        return Response(status=204)

    @app.get("/login")
    def login_page():
        return render_template("login.html", study=study.name, error=None)

    @app.post("/login")
    def login():
        token = request.form.get("token", "").strip()
        who = authenticate(_db(), token)
        if who is None:
            return render_template("login.html", study=study.name, error="Unknown token."), 401
        resp = redirect("/admin" if who.kind == "admin" else "/")
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", max_age=7 * 24 * 3600)
        return resp

    @app.post("/logout")
    def logout():
        resp = redirect("/login")
        resp.delete_cookie(COOKIE)
        return resp

    @app.get("/")
    @require("annotator", api=False)
    def annotate_page():
        return render_template("annotate.html", study=study.name, who=g.who.name)

    @app.get("/api/next")
    @require("annotator")
    def api_next():
        return jsonify(_assignment_json(store.next_assignment(_db(), g.who.id)))

    @app.post("/api/vote")
    @require("annotator")
    def api_vote():
        body = request.get_json(silent=True)
        aid = _assignment_id(body)
        store.record_votes(_db(), g.who.id, aid, body.get("votes"))
        seen, total = store.progress(_db(), g.who.id)
        return jsonify(ok=True, progress={"done": seen, "total": total})

    @app.post("/api/skip")
    @require("annotator")
    def api_skip():
        store.skip(_db(), g.who.id, _assignment_id(request.get_json(silent=True)))
        seen, total = store.progress(_db(), g.who.id)
        return jsonify(ok=True, progress={"done": seen, "total": total})

    @app.get("/clip/<int:assignment_id>/<side>")
    @require("annotator")
    def clip(assignment_id: int, side: str):
        if side not in ("left", "right"):
            raise store.NotFoundError("side must be 'left' or 'right'")
        a = store.get_assignment(_db(), g.who.id, assignment_id)
        path = clip_file(study, a.left_clip if side == "left" else a.right_clip)
        return send_file(path, conditional=True, max_age=0, download_name=f"{side}{path.suffix}")

    @app.get("/admin")
    @require("admin", api=False)
    def admin_page():
        return render_template("admin.html", study=study.name)

    @app.get("/api/admin/stats")
    @require("admin")
    def admin_stats():
        tables = gsb_tables(_db())
        people = _db().execute(
            """SELECT a.name, SUM(s.status = 'done') AS done, SUM(s.status = 'skipped') AS skipped
               FROM annotators a LEFT JOIN assignments s ON s.annotator_id = a.id GROUP BY a.id ORDER BY a.name""")
        tables["annotators"] = [{"name": r["name"], "done": r["done"] or 0, "skipped": r["skipped"] or 0}
                                for r in people]
        return jsonify(tables)

    return app


def serve(study: str | Path, host: str = "127.0.0.1", port: int = 8750):
    """A threaded WSGI server (werkzeug) for the study; returns it unstarted (``serve_forever`` runs it)."""
    from werkzeug.serving import make_server

    return make_server(host, port, create_app(study), threaded=True)

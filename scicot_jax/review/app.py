"""The `scicot-review serve` web app on aiohttp: pages rendered on the server, a JSON route per
action, a token on every request.

Why aiohttp: every install already has it (gcsfs, the gs:// backend, depends on it), so the app
adds no server package; it is one well-kept library (aio-libs) that is both the framework and
the server, so there is no second package (Starlette needs uvicorn) and no separate process.

Security: bound to 127.0.0.1 by default; each request needs the random token (from the printed
URL's ?token=, then a cookie for this port, or the X-Review-Token header, which every POST must
carry: another site cannot send it); only loopback Host headers are answered (DNS rebinding);
each page has a Content-Security-Policy that runs only its own script; paths from requests
resolve inside RUN_DIR or are refused.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from scicot_jax.data.store import RationaleStore
from scicot_jax.review import rationales, report
from scicot_jax.review.render import page
from scicot_jax.review.rundir import OutsideRun, RunDir, inside
from scicot_jax.review.state import Conflict, ReviewState
from scicot_jax.teacher.review import ReviewError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
TOKEN_HEADER = "X-Review-Token"
PLAIN_TEXT = (".md", ".json", ".jsonl", ".txt", ".csv", ".log", ".gin", ".toml")


class ReviewApp:
    """One run directory, its review states (one per store, loaded on first use), a token."""

    def __init__(self, run_dir: str | Path, token: str | None = None, host: str = "127.0.0.1"):
        self.run = RunDir(Path(run_dir))
        self.token = token or secrets.token_urlsafe(24)
        self.host = host
        self.port = 0
        self._states: dict[Path, ReviewState] = {}
        self._states_lock = threading.Lock()

    @property
    def cookie(self) -> str:
        return f"scicot_review_{self.port}"  # cookies ignore ports: one name per server

    # ------------------------------------------------------------------ guards
    def _allowed_host(self, request: web.Request) -> bool:
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        return host in LOOPBACK or host == self.host

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self._allowed_host(request):
            raise web.HTTPForbidden(text="403: unknown Host header (only loopback names)")
        given = (
            request.query.get("token")
            or request.headers.get(TOKEN_HEADER)
            or request.cookies.get(self.cookie)
            or ""
        )
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            raise web.HTTPForbidden(
                text="403: open the URL with the token that scicot-review printed"
            )
        if request.method != "GET" and not secrets.compare_digest(
            request.headers.get(TOKEN_HEADER, "").encode(), self.token.encode()
        ):
            raise web.HTTPForbidden(text=f"403: actions need the {TOKEN_HEADER} header")
        request["nonce"] = secrets.token_urlsafe(16)
        response = await handler(request)
        if "token" in request.query:
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict")
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
            f"script-src 'nonce-{request['nonce']}'; connect-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # the URL carries the token
        response.headers["Cache-Control"] = "no-store"
        return response

    def _path(self, rel: str) -> Path:
        try:
            return inside(self.run.root, rel)
        except OutsideRun as e:
            raise web.HTTPForbidden(text=f"403: {e}") from None

    def state(self, rel: str) -> ReviewState:
        """The review state of the store at RUN_DIR/rel (loaded, or read again if changed)."""
        path = self._path(rel or ".")
        with self._states_lock:  # two first requests at once load the store once
            if path not in self._states:
                if path not in self.run.stores():
                    raise web.HTTPNotFound(
                        text=f"404: {rel!r} is not a rationale store of this run"
                    )
                try:
                    self._states[path] = ReviewState(path)
                except (ReviewError, ValueError, OSError) as e:
                    raise web.HTTPBadRequest(text=f"400: {e}") from None
            st = self._states[path]
        try:
            st.refresh()
        except (ReviewError, ValueError, OSError) as e:
            raise web.HTTPBadRequest(text=f"400: {e}") from None
        return st

    def _nav(self) -> list[str]:
        return [self.run.rel(s) for s in self.run.stores()]

    # ------------------------------------------------------------------ pages
    async def index(self, request: web.Request) -> web.Response:
        stores = []
        for path in self.run.stores():
            m = RationaleStore.read_manifest(path)
            about = m.get("source") or " ".join(
                str(m[k]) for k in ("kind", "prompt", "temperature") if m.get(k) is not None
            )
            stores.append((self.run.rel(path), about, (path / "review.jsonl").exists()))
        return _html(
            page(
                "index.html",
                nonce=request["nonce"],
                run_dir=str(self.run.root),
                stores=stores,
                has_results=(self.run.root / "results.json").is_file(),
            )
        )

    async def rationales_page(self, request: web.Request) -> web.Response:
        stores = self._nav()
        rel = request.query.get("store") or (stores[0] if stores else "")
        if not rel:
            raise web.HTTPNotFound(text="404: this run has no rationale store")
        st = await asyncio.to_thread(self.state, rel)
        query = rationales.Query.parse(request.query)
        try:
            verdicts = await asyncio.to_thread(
                rationales.selection_verdicts, self.run, st.store_dir
            )
        except ValueError as e:  # a bad line of a selection's decisions.jsonl
            raise web.HTTPBadRequest(text=f"400: {e}") from None
        ctx = rationales.view(st, verdicts, query)
        return _html(
            page(
                "rationales.html",
                nonce=request["nonce"],
                token=self.token,
                stores=stores,
                store=self.run.rel(st.store_dir),
                review_file=str(st.path),
                progress=st.progress(),
                query=query,
                filters=rationales.FILTERS,
                sorts=rationales.SORTS,
                default_name=st.default_name(),
                **ctx,
            )
        )

    async def report_page(self, request: web.Request) -> web.Response:
        try:
            html = await asyncio.to_thread(report.served, self.run, request["nonce"], self._nav())
        except ValueError as e:  # a bad line of results.json, metrics or predictions
            raise web.HTTPBadRequest(text=f"400: {e}") from None
        return _html(html)

    async def file(self, request: web.Request) -> web.StreamResponse:
        path = self._path(request.match_info["path"])
        if not path.is_file():
            raise web.HTTPNotFound(text="404: no such file in the run directory")
        if path.suffix in PLAIN_TEXT:  # never rendered as a page
            return web.Response(body=path.read_bytes(), content_type="text/plain", charset="utf-8")
        return web.FileResponse(path)

    # ------------------------------------------------------------------ actions
    async def decide(self, request: web.Request) -> web.Response:
        body = await _json(request)
        key = (body.get("example_id"), body.get("sample_index"))
        version = body.get("version")
        if not isinstance(key[0], str) or type(key[1]) is not int or type(version) is not int:
            return _error(400, "example_id (string), sample_index and version (integers) needed")
        st = await asyncio.to_thread(self.state, str(body.get("store") or ""))
        try:
            item = await asyncio.to_thread(
                st.decide, key, body.get("decision"), body.get("rationale"), version
            )
        except Conflict as c:
            return web.json_response(
                {"conflict": c.item.public(), "progress": st.progress()}, status=409
            )
        except KeyError as e:
            return _error(404, str(e.args[0]))
        except ValueError as e:
            return _error(400, str(e))
        return web.json_response({"item": item.public(), "progress": st.progress()})

    async def apply(self, request: web.Request) -> web.Response:
        body = await _json(request)
        st = await asyncio.to_thread(self.state, str(body.get("store") or ""))
        try:
            result = await asyncio.to_thread(st.apply, str(body.get("name") or ""))
        except (ReviewError, ValueError, OSError) as e:
            return _error(400, str(e))
        out = Path(result["out_dir"])
        result["store"] = self.run.rel(out) if out.is_relative_to(self.run.root) else None
        return web.json_response(result)

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=4 << 20)
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/rationales", self.rationales_page),
                web.get("/report", self.report_page),
                web.get("/file/{path:.*}", self.file),
                web.post("/api/decide", self.decide),
                web.post("/api/apply", self.apply),
            ]
        )
        return app


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="400: the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="400: the body is not a JSON object")
    return body

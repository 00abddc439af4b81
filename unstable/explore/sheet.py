"""The contact sheet of an exploration in the browser: each variant's latest grid and its training
loop (progress.gif), scores and lineage; star or discard variants, then breed the next generation.

Same server rules as the control page (unstable/control/webserver.py): one aiohttp server in its
own thread; the access checks of access.py (loopback needs nothing, any other client the token
`?token=` once then a cookie, or an address on the allow list; the Host check against DNS
rebinding; GET only; a body limit) and the connection limits of connections.py.

    GET /explore                 the page
    GET /explore/state.json      every variant: lineage, scores, mark, whether it has trained
    GET /explore/v/ID/grid.png   its latest grid; /explore/v/ID/progress.gif its loop so far
    GET /explore/mark?id=ID&mark=star|discard|none   the artist's choice (marks.json)
    GET /explore/breed           breed the next generation now

The two that change something need the header `X-Unstable-Explore: 1`: a page from another site
cannot send a custom header to this server without a CORS preflight, which is refused (OPTIONS is
not served), so loopback's "no token needed" does not let any web page star or breed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from pathlib import Path
from typing import Iterable

from ..control.access import HostCheck, TokenGate
from ..control.connections import ConnectionGuard
from ..control.osclog import RateLimitedLog
from ..control.serving import serve_in_thread
from ..control.transport import AllowList, is_loopback, parse_allow
from ..errors import UnstableError
from .page import PAGE
from .records import MARKS, read_json, read_lineage, read_marks, read_scores, variant_dir, write_marks

log = logging.getLogger("unstable.explore")

__all__ = ["ContactSheet", "sheet_state"]

_FILES = {"grid.png": "image/png", "progress.gif": "image/gif"}


def sheet_state(root: Path, waiting: int | None = None, finished: bool = False) -> dict:
    """What the page draws: the variants, newest generation first, with everything known of each."""
    root = Path(root)
    settings = read_json(root / "explore.json", {}) or {}
    scores, marks = read_scores(root), read_marks(root)
    variants = []
    for r in sorted(read_lineage(root), key=lambda r: (-r.generation, r.id)):
        folder = variant_dir(root, r)
        result = read_json(folder / "explore" / "result.json")
        variants.append({"id": r.id, "generation": r.generation, "parents": list(r.parents),
                         "operation": r.operation, "changes": list(r.changes), "mark": marks.get(r.id, ""),
                         "scores": scores.get(r.id, {}), "done": result is not None,
                         "has_grid": (folder / "grid.png").exists(),
                         "has_loop": (folder / "progress.gif").exists()})
    return {"name": settings.get("base", {}).get("name", root.name), "waiting": waiting, "finished": finished,
            "variants": variants}


class ContactSheet:
    """The contact sheet server of `explorer` (an Explorer: its folder, and `advance()`)."""

    def __init__(self, explorer, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 allow: Iterable[str] | None = None, hosts: Iterable[str] = ()):
        self.explorer = explorer
        self.root = Path(explorer.root)
        self.host, self.requested_port = host, int(port)
        self.token = token or secrets.token_urlsafe(12)
        self.stats = dict.fromkeys(("requests", "refused", "not_found", "bad_request", "oversize"), 0)
        self.warn = RateLimitedLog(log, 2.0, per_minute=60)
        names = [*hosts] + ([] if host in ("0.0.0.0", "::", "") else [host])
        self.gate = TokenGate(self.token, AllowList(parse_allow(allow) or ()), 16 * 1024, self.stats, self.warn,
                              HostCheck(names))
        self._lock = threading.Lock()  # marks.json: read, change, write as one
        self._loop = self._thread = self._runner = self.guard = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        return self._port if self._port is not None else self.requested_port

    def url(self) -> str:
        """The page's URL; with the token when the server listens beyond loopback."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/explore" + ("" if is_loopback(host) else f"?token={self.token}")

    def start(self) -> "ContactSheet":
        """Bind and serve in a thread of its own; a port in use is an UnstableError."""
        def took(loop):
            self._loop = loop

        self._thread = serve_in_thread("unstable-explore-web", f"the contact sheet on {self.host}:{self.requested_port}",
                                       self._serve, self._shutdown, self.warn, took)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        self._thread = None

    def __enter__(self) -> "ContactSheet":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        if self.guard is not None:
            self.guard.close()
        await self._runner.cleanup()

    async def _serve(self) -> None:
        from aiohttp import web
        app = web.Application(middlewares=[ConnectionGuard.middleware(lambda: self.guard), self.gate.middleware()],
                              client_max_size=16 * 1024)
        app.router.add_get("/", self._home)
        app.router.add_get("/explore", self._page)
        app.router.add_get("/explore/state.json", self._state)
        app.router.add_get("/explore/mark", self._mark)
        app.router.add_get("/explore/breed", self._breed)
        app.router.add_get("/explore/v/{id}/{file}", self._file)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, keepalive_timeout=5.0)
        await self._runner.setup()
        self.guard = ConnectionGuard(self._runner.server, self.warn, self.stats, idle_timeout=5.0)
        self._port = self.guard.listen(self.host, self.requested_port)

    # -- handlers ----------------------------------------------------------------------------

    def _json(self, data, status: int = 200):
        from aiohttp import web
        return web.json_response(data, status=status, headers={"Cache-Control": "no-cache"})

    def _refuse(self, request, status: int, why: str):
        self.stats["bad_request" if status == 400 else "not_found"] += 1
        self.warn.warning(("explore", request.remote, status), "explore: %s from %s: %s", request.path_qs[:120],
                          request.remote, why)
        return self._json({"error": why}, status)

    async def _home(self, request):
        from aiohttp import web
        raise web.HTTPFound("/explore")

    async def _page(self, request):
        from aiohttp import web
        resp = web.Response(text=PAGE, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-cache"})
        return self.gate.with_cookie(request, resp)

    async def _state(self, request):
        loop = asyncio.get_running_loop()
        try:
            state = await loop.run_in_executor(None, sheet_state, self.root, self.explorer.waiting,
                                               self.explorer.finished)
        except UnstableError as e:
            return self._json({"error": str(e)}, 500)
        return self._json(state)

    def _changing(self, request) -> str | None:
        if request.headers.get("X-Unstable-Explore") != "1":
            return "changes need the header X-Unstable-Explore: 1 (sent by the contact sheet's own page)"
        return None

    async def _mark(self, request):
        why = self._changing(request)
        if why:
            return self._refuse(request, 403, why)
        vid, mark = request.query.get("id", ""), request.query.get("mark", "")
        if mark not in (*MARKS, "none"):
            return self._refuse(request, 400, f"mark={mark[:20]!r}: expected star, discard or none")
        if vid not in {r.id for r in read_lineage(self.root)}:
            return self._refuse(request, 404, f"id={vid[:20]!r}: no such variant")
        with self._lock:
            marks = read_marks(self.root)
            if mark == "none":
                marks.pop(vid, None)
            else:
                marks[vid] = mark
            write_marks(self.root, marks)
        log.info("explore: %s %s", vid, "unmarked" if mark == "none" else f"{mark}red" if mark == "star" else "discarded")
        return self._json({"id": vid, "mark": "" if mark == "none" else mark})

    async def _breed(self, request):
        why = self._changing(request)
        if why:
            return self._refuse(request, 403, why)
        if self.explorer.waiting is None:
            return self._json({"breeding": False, "why": "the current generation is still training"}, 409)
        self.explorer.advance()
        return self._json({"breeding": True})

    async def _file(self, request):
        from aiohttp import web
        vid, name = request.match_info["id"], request.match_info["file"]
        if name not in _FILES or vid not in {r.id for r in read_lineage(self.root)}:
            return self._refuse(request, 404, f"no file {name[:30]!r} of a variant {vid[:20]!r}")
        path = variant_dir(self.root, vid) / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return self._refuse(request, 404, f"{vid} has no {name} yet")
        return web.Response(body=data, content_type=_FILES[name], headers={"Cache-Control": "no-cache"})

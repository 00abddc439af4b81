"""The control page's and OSCQuery's HTTP answers: the page and its assets, the show's schema for
the page, the preview frame, and the OSCQuery tree with its attributes and HOST_INFO; a websocket
upgrade on any path goes to the server's hub. Every request has passed the server's connection
guard and token gate (its middlewares) before it gets here.
"""

from __future__ import annotations

from importlib import resources

from .oscquery import EXTENSIONS
from .osclog import shorten

__all__ = ["ControlRoutes"]

_ASSETS = {"index.html": "text/html", "page.js": "text/javascript", "page.css": "text/css"}


class ControlRoutes:
    """The GET routes of a `WebServer` (its space, scenes, preview, gate, hub, stats and warnings)."""

    def __init__(self, server):
        self.server = server

    def add_to(self, app) -> None:
        """Route `app`'s GET requests here."""
        app.router.add_get("/control", self._page)
        app.router.add_get("/control/", self._page)
        app.router.add_get("/control/show.json", self._show_json)
        app.router.add_get("/control/preview.jpg", self._preview)
        app.router.add_get("/control/{name}", self._asset)
        app.router.add_get("/favicon.ico", self._no_icon)
        app.router.add_get("/{path:.*}", self._root)

    async def _page(self, request):
        return self.server.gate.with_cookie(request, self._file("index.html"))

    async def _asset(self, request):
        name = request.match_info["name"]
        if name not in _ASSETS:
            return self._not_found(request, f"no file {name!r} on the control page")
        return self._file(name)

    def _file(self, name: str):
        from aiohttp import web
        data = resources.files("unstable.control").joinpath("web", name).read_bytes()
        return web.Response(body=data, content_type=_ASSETS[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _no_icon(self, request):
        from aiohttp import web
        return web.Response(status=204)  # browsers ask for one on every page: not worth a log line

    async def _show_json(self, request):
        from aiohttp import web
        return web.json_response(self.server.space.page_schema(self.server.scenes))

    async def _preview(self, request):
        from aiohttp import web
        got = self.server.preview() if self.server.preview is not None else None
        if got is None:
            return web.Response(status=503, text="503: no preview frame yet\n", headers={"Retry-After": "1"})
        number, data = got
        return web.Response(body=data, content_type="image/jpeg",
                            headers={"Cache-Control": "no-store", "X-Frame": str(number)})

    def _not_found(self, request, why: str):
        from aiohttp import web
        self.server.stats["not_found"] += 1
        self.server.warn.warning("not_found", "web: %s from %s: %s", shorten(request.path_qs), request.remote, why)
        return web.Response(status=404, text=f"404: {why}\n")

    async def _root(self, request):
        from aiohttp import web
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.server.hub.handle(request)
        path = "/" + request.match_info["path"]
        path = path.rstrip("/") or "/"
        attrs = [k for k in request.query if k != "token"]
        if len(attrs) > 1:
            self.server.stats["bad_request"] += 1
            return web.Response(status=400, text=f"400: ask for one attribute at a time, got {', '.join(attrs)}\n")
        if attrs and attrs[0] == "HOST_INFO":
            return web.json_response(self._host_info(request))
        if attrs:
            status, body = self.server.space.attribute(path, attrs[0])
            if status == 400:
                self.server.stats["bad_request"] += 1
                self.server.warn.warning("attribute", "web: %s from %s: unknown attribute %s", shorten(path),
                                  request.remote, shorten(attrs[0]))
                return web.Response(status=400, text=f"400: unknown attribute {attrs[0][:40]!r}\n")
            if status == 404:
                return self._not_found(request, f"no OSC node at {path[:80]}")
            if status == 204:
                return web.Response(status=204)
            return web.json_response(body)
        node = self.server.space.node(path)
        if node is None:
            return self._not_found(request, f"no OSC node at {path[:80]}")
        return web.json_response(node)

    def _host_info(self, request) -> dict:
        here = (request.transport.get_extra_info("sockname") or ("127.0.0.1",))[0] if request.transport else "127.0.0.1"
        osc_ip = here if self.server.osc_host in ("0.0.0.0", "::", "") else self.server.osc_host
        info = {"NAME": self.server.space.name, "OSC_TRANSPORT": "UDP", "WS_IP": here, "WS_PORT": self.server.port,
                "EXTENSIONS": dict(EXTENSIONS)}
        if self.server.osc_port is not None:
            info.update(OSC_IP=osc_ip, OSC_PORT=self.server.osc_port)
        return info

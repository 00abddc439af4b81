"""Who may reach a show's web server: a client on this machine (loopback) needs nothing; any other
needs the show's token (`?token=` once, then a cookie) or an address on the `[web] allow` list.
Every request also passes the body limit and GET-only checks here, before any handler runs."""

from __future__ import annotations

import secrets

from .osclog import RateLimitedLog, shorten
from .transport import AllowList, is_loopback

__all__ = ["TokenGate", "COOKIE"]

COOKIE = "unstable_token"


class TokenGate:
    """The access checks of one web server; `stats` and `warn` are the server's."""

    def __init__(self, token: str, allow: AllowList, max_body: int, stats: dict, warn: RateLimitedLog):
        self.token = token
        self.allow = allow
        self.max_body = int(max_body)
        self.stats = stats
        self.warn = warn

    def trusted(self, request) -> bool:
        """Whether `request` may reach the show: loopback, an allowed address, or the token."""
        peer = request.remote or ""
        if is_loopback(peer) or self.allow(peer):
            return True
        given = request.query.get("token") or request.cookies.get(COOKIE)
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    def middleware(self):
        """The aiohttp middleware every request passes: the token, the body limit, GET only."""
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            self.stats["requests"] += 1
            if not self.trusted(request):
                self.stats["refused"] += 1
                self.warn.warning(("refused", request.remote), "web: %s %s from %s refused: no valid token "
                                  "(open the URL `unstable live` printed, with ?token=)",
                                  request.method, shorten(request.path), request.remote)
                return web.Response(status=403, text="403: this show needs its token: open the URL that "
                                    "`unstable live` printed (…/control?token=…)\n")
            length = request.content_length
            if length is not None and length > self.max_body:
                self.stats["oversize"] += 1
                self.warn.warning("oversize", "web: %s %s from %s refused: a body of %d bytes (at most %d)",
                                  request.method, shorten(request.path), request.remote, length, self.max_body)
                return web.Response(status=413, text=f"413: a body of {length} bytes is over this server's "
                                    f"limit of {self.max_body}\n")
            if request.method not in ("GET", "HEAD"):
                self.stats["bad_request"] += 1
                self.warn.warning("method", "web: %s %s from %s refused: only GET is served",
                                  request.method, shorten(request.path), request.remote)
                return web.Response(status=405, text=f"405: {request.method} is not served here, only GET\n",
                                    headers={"Allow": "GET"})
            return await handler(request)

        return guard

    def with_cookie(self, request, response):
        """`response`, with the token as a cookie when `request` brought it in its URL."""
        # The page's later requests (preview, websocket) carry the token as a cookie, not in URLs.
        if "token" in request.query and not is_loopback(request.remote or ""):
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        return response

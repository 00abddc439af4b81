"""Who may reach a show's web server: a client on this machine (loopback) needs nothing; any other
needs the show's token (`?token=` once, then a cookie) or an address on the `[web] allow` list.
Every request also passes the Host check, the body limit and GET-only checks here, before any
handler runs.

The Host check is against DNS rebinding: a web page from attacker.example whose name is made to
resolve to 127.0.0.1 reaches this server from loopback (no token needed) and is same-origin with
it in the browser, so neither the token nor the websocket's Origin check stops it. Its requests
still say `Host: attacker.example`, so only names this machine answers to are served: loopback
names and addresses, this machine's own addresses and host name, the show's zeroconf name, and the
names in `[web] hosts`. A request without a Host header (not from a browser) passes.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from typing import Iterable

from .osclog import RateLimitedLog, shorten
from .transport import AllowList, is_loopback

__all__ = ["TokenGate", "HostCheck", "COOKIE"]

COOKIE = "unstable_token"


def host_name(header: str) -> str:
    """The name in a Host header, without its port, brackets, trailing dot or case."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class HostCheck:
    """Which names a request may call this server by (its Host header); see the module doc.

    `names`: the show's own extra names (`[web] hosts`, its zeroconf name); host names or
    addresses. This machine's addresses are read again, at most every `refresh` seconds, when an
    address not known yet is asked for (a DHCP lease may change them while a show runs).
    """

    def __init__(self, names: Iterable[str] = (), refresh: float = 5.0):
        here = socket.gethostname().lower()
        self.names = {"localhost", here, f"{here}.local"} | {host_name(n) for n in names if n}
        self.refresh = float(refresh)
        self._addresses: set[str] = set()
        self._read_at = -float("inf")
        self._read_addresses()

    def _read_addresses(self) -> None:
        self._read_at = time.monotonic()
        try:
            import ifaddr
            found = set()
            for adapter in ifaddr.get_adapters():
                for ip in adapter.ips:
                    found.add(str(ip.ip if isinstance(ip.ip, str) else ip.ip[0]).split("%", 1)[0].lower())
            self._addresses = found
        except Exception:  # no address list on this system: loopback and the named hosts still pass
            pass

    def __call__(self, header: str | None) -> bool:
        """Whether a request with this Host header is for this server (None: no header, allowed)."""
        if header is None:
            return True
        host = host_name(header)
        if host in self.names:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        ip = getattr(ip, "ipv4_mapped", None) or ip
        if ip.is_loopback or ip.is_unspecified:
            return True
        if str(ip) in self._addresses:
            return True
        if time.monotonic() - self._read_at >= self.refresh:
            self._read_addresses()
        return str(ip) in self._addresses


class TokenGate:
    """The access checks of one web server; `stats` and `warn` are the server's; `hosts` is the
    HostCheck (None: every Host header passes)."""

    def __init__(self, token: str, allow: AllowList, max_body: int, stats: dict, warn: RateLimitedLog,
                 hosts: HostCheck | None = None):
        self.token = token
        self.hosts = hosts
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
            host = request.headers.get("Host")
            if self.hosts is not None and not self.hosts(host):
                self.stats["refused"] += 1
                self.stats["wrong_host"] = self.stats.get("wrong_host", 0) + 1
                self.warn.warning(("wrong_host", request.remote), "web: %s %s from %s refused: Host %s is not a "
                                  "name of this machine (a web page whose domain points here?); if it is "
                                  "yours, add it to [web] hosts", request.method, shorten(request.path),
                                  request.remote, shorten(host))
                return web.Response(status=403, text=f"403: this server does not answer to the name "
                                    f"{host_name(host)[:80]!r}; add it to [web] hosts in the show file if it "
                                    f"is yours\n")
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

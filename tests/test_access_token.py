"""The web token gate on its own: requests from another machine (an aiohttp request whose peer is
not loopback) pass with the whole token only, never with an empty, partial or longer one."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from unstable.control.access import COOKIE, TokenGate
from unstable.control.osclog import RateLimitedLog
from unstable.control.transport import AllowList

TOKEN = "k3J9-aQ0x_TZ7p2Lm5Rw"


def request(path: str, peer: str = "10.1.2.3", cookie: str | None = None):
    """A GET from `peer` (a real aiohttp request, its transport's peer address set)."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (peer, 50000) if key == "peername" else default
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie is not None else {}
    return make_mocked_request("GET", path, headers=headers, transport=transport)


def gate(allow=()) -> TokenGate:
    import ipaddress
    stats = {"requests": 0, "refused": 0, "oversize": 0, "bad_request": 0}
    return TokenGate(TOKEN, AllowList([ipaddress.ip_network(n) for n in allow]), 1 << 16, stats,
                     RateLimitedLog(mock.Mock()))


@pytest.mark.parametrize("given", ["", TOKEN[:1], TOKEN[:8], TOKEN[:-1], TOKEN + "x", "x" + TOKEN, TOKEN.upper()])
def test_only_the_whole_token_lets_another_machine_in(given):
    g = gate()
    assert g.trusted(request(f"/control?token={given}")) is False, repr(given)
    assert g.trusted(request("/control", cookie=given)) is False, repr(given)
    assert g.trusted(request(f"/control?token={TOKEN}")) is True
    assert g.trusted(request("/control", cookie=TOKEN)) is True
    assert g.trusted(request("/control")) is False  # nothing given


def test_loopback_and_allowed_addresses_need_no_token():
    g = gate(allow=["10.9.0.0/16"])
    assert g.trusted(request("/control", peer="127.0.0.1")) and g.trusted(request("/control", peer="::1"))
    assert g.trusted(request("/control", peer="10.9.4.4"))
    assert not g.trusted(request("/control", peer="10.8.4.4"))


def test_the_middleware_refuses_a_partial_token_with_403_and_counts_it():
    g = gate()
    guard = g.middleware()

    async def handler(req):
        return web.Response(text="page")

    async def status(req):
        return (await guard(req, handler)).status

    assert asyncio.run(status(request(f"/control?token={TOKEN[:4]}"))) == 403
    assert asyncio.run(status(request("/control?token="))) == 403
    assert asyncio.run(status(request(f"/control?token={TOKEN}"))) == 200
    assert g.stats["refused"] == 2 and g.stats["requests"] == 3


# Pinned by mutation testing (docs/mutation.md): the Host check, the cookie, the body and method limits.

def test_host_names_lose_port_brackets_trailing_dot_and_case():
    from unstable.control.access import host_name
    assert host_name(" Show.Example.:8080 ") == "show.example"
    assert host_name("[::1]:8765") == "::1" and host_name("[fe80::1]") == "fe80::1"
    assert host_name("::1") == "::1"  # a bare IPv6 address keeps its colons
    assert host_name("10.0.0.2:80") == "10.0.0.2" and host_name("studio") == "studio"
    assert host_name("box.") == "box" and host_name("x.x") == "x.x"  # only the trailing dot goes


def test_the_host_check_serves_only_names_of_this_machine():
    import ipaddress
    import socket

    import ifaddr
    from unstable.control.access import HostCheck
    check = HostCheck(["Studio.Example:8080", "", "show.local"])
    here = socket.gethostname().lower()
    for ok in (None, "localhost", "LOCALHOST:8765", here, f"{here}.local", "studio.example", "show.local.",
               "127.0.0.1:80", "127.8.9.1", "[::1]:8765", "0.0.0.0", "::ffff:127.0.0.1"):
        assert check(ok), ok
    for bad in ("attacker.example", "studio.example.evil", "8.8.8.8", "[2001:db8::1]", "", "show"):
        assert not check(bad), bad
    own = [ip.ip if isinstance(ip.ip, str) else ip.ip[0] for a in ifaddr.get_adapters() for ip in a.ips]
    own = [a for a in own if not ipaddress.ip_address(a).is_loopback]
    for addr in own:  # this machine's own addresses (a LAN's), with a port; IPv6 in brackets, any case
        port = f"[{addr.upper()}]:8765" if ":" in addr else f"{addr}:8765"
        assert check(addr) and check(port), addr


def test_the_token_in_a_url_becomes_a_cookie_for_another_machine_only():
    g = gate()
    resp = g.with_cookie(request(f"/control?token={TOKEN}"), web.Response(text="page"))
    cookie = resp.cookies[COOKIE]
    assert cookie.value == TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
    assert COOKIE not in g.with_cookie(request("/control", cookie=TOKEN), web.Response()).cookies
    assert COOKIE not in g.with_cookie(request(f"/control?token={TOKEN}", peer="127.0.0.1"), web.Response()).cookies


def test_the_middleware_refuses_other_hosts_big_bodies_and_other_methods():
    import ipaddress

    from unstable.control.access import HostCheck
    stats = {"requests": 0, "refused": 0, "oversize": 0, "bad_request": 0}
    g = TokenGate(TOKEN, AllowList([ipaddress.ip_network("10.0.0.0/8")]), 100, stats, RateLimitedLog(mock.Mock()),
                  HostCheck(["show.local"]))
    guard = g.middleware()

    async def handler(req):
        return web.Response(text="page")

    def send(method="GET", host="show.local", length=None):
        headers = {"Host": host} if host is not None else {}
        if length is not None:
            headers["Content-Length"] = str(length)
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda k, d=None: ("10.1.2.3", 5) if k == "peername" else d
        resp = asyncio.run(guard(make_mocked_request(method, "/x", headers=headers, transport=transport), handler))
        return resp.status, resp.headers.get("Allow")

    assert send() == (200, None) and send(host=None) == (200, None)
    assert send(host="attacker.example") == (403, None) and stats["wrong_host"] == 1
    assert send(length=100) == (200, None)
    assert send(length=101) == (413, None) and stats["oversize"] == 1
    assert send("POST") == (405, "GET") and stats["bad_request"] == 1
    assert send("HEAD") == (200, None)
    assert stats["requests"] == 7 and stats["refused"] == 1

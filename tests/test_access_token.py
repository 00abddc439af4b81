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

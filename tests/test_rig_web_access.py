"""MIDI learn and presets from the web: the control page's schema (which lists the presets and the
learned MIDI bindings) and its websocket (which arms MIDI learn and saves, recalls and morphs
presets) answer a foreign Host header, and a peer on another machine without the show's token,
with 403, and nothing changes: no learn armed, no preset event, no file. With the token the same
messages from that machine arrive (so the refusals are not the test's own failure to connect).
"Another machine" is the `other_machine` network namespace (conftest: a veth pair)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys

import aiohttp
import pytest

from helpers import wait_for
from test_web_hardening import get, osc
from unstable.control.midi_map import learn_specs
from unstable.control.oscquery import AddressSpace
from unstable.control.store import ParameterStore
from unstable.control.webserver import WebServer
from unstable.schema import ParamSpec, show_specs

TOKEN = "rig-token-0123456789abcdef"


@contextlib.contextmanager
def serve(**kw):
    store = ParameterStore({"eq": [ParamSpec("hue", -180, 180, 0)], "show": show_specs(2) + learn_specs(6)})
    space = AddressSpace(store, name="t")
    space.add_presets(lambda: ["secret-look"])
    space.page_extras["midi"] = lambda: [{"source": "cc7", "target": "eq.hue", "learned": True}]
    srv = WebServer(store, space, port=0, advertise=False, **kw).start()
    try:
        yield srv
    finally:
        srv.stop()


def osc_str(addr, *args) -> bytes:
    from pythonosc.osc_message_builder import OscMessageBuilder
    b = OscMessageBuilder(address=addr)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


RIG_MESSAGES = [osc("/unstable/show/midi_learn/raw", 2.0), osc_str("/unstable/preset/save", "stolen"),
                osc_str("/unstable/preset/recall", "secret-look"), osc_str("/unstable/preset/morph", "secret-look", 2.0)]


def untouched(srv) -> bool:
    return srv.store.get("show", "midi_learn") == 0.0 and srv.store.drain_events() == []


def test_a_foreign_host_gets_403_and_changes_no_learn_and_no_preset():
    with serve() as srv:
        p = srv.port
        status, body = get(p, "/control/show.json", host=f"attacker.example:{p}")
        assert status == 403 and b"secret-look" not in body and b"eq.hue" not in body
        status, body = get(p, "/control/show.json")              # our own page: the presets and bindings
        assert status == 200 and b"secret-look" in body and b"eq.hue" in body

        async def attack():
            async with aiohttp.ClientSession() as s:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    ws = await s.ws_connect(f"http://127.0.0.1:{p}/", headers={"Host": f"attacker.example:{p}"},
                                            origin=f"http://attacker.example:{p}")
                    for m in RIG_MESSAGES:
                        await ws.send_bytes(m)
                return refused.value.status

        assert asyncio.run(attack()) == 403
        assert not wait_for(lambda: not untouched(srv), timeout=0.5)


PEER = r"""
import asyncio, json, sys, urllib.request, urllib.error
import aiohttp
base, token, messages = sys.argv[1], sys.argv[2], [bytes.fromhex(m) for m in json.loads(sys.argv[3])]
out = {}
def fetch(url):
    try:
        return urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
out["schema"] = fetch(base + "/control/show.json")
out["schema_wrong"] = fetch(base + "/control/show.json?token=wrong-" + token[6:])
async def ws(query, cookie=None):
    async with aiohttp.ClientSession(cookies=cookie) as s:
        try:
            w = await s.ws_connect(base + "/" + query, origin=base)
        except aiohttp.WSServerHandshakeError as e:
            return e.status
        for m in messages:
            await w.send_bytes(m)
        await asyncio.sleep(0.5)
        await w.close()
        return 101
out["ws"] = asyncio.run(ws(""))
out["ws_wrong_cookie"] = asyncio.run(ws("", {"unstable_token": "x" * len(token)}))
if sys.argv[4] == "with-token":
    out["ws_token"] = asyncio.run(ws("?token=" + token))
print(json.dumps(out))
"""


def from_other_machine(ns, base, with_token: bool) -> dict:
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PEER, base, TOKEN,
                        json.dumps([m.hex() for m in RIG_MESSAGES]), "with-token" if with_token else "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_another_machine_without_the_token_gets_403_and_changes_nothing(other_machine):
    ns, here, there = other_machine
    with serve(host="0.0.0.0", token=TOKEN) as srv:
        base = f"http://{here}:{srv.port}"
        got = from_other_machine(ns, base, with_token=False)
        assert got == {"schema": 403, "schema_wrong": 403, "ws": 403, "ws_wrong_cookie": 403}, got
        assert not wait_for(lambda: not untouched(srv), timeout=0.5)
        assert srv.stats["refused"] >= 4
        # The same messages with the token: learn is armed and the preset requests arrive.
        got = from_other_machine(ns, base, with_token=True)
        assert got["ws_token"] == 101, got
        assert wait_for(lambda: srv.store.get("show", "midi_learn") == 2.0)
        kinds = [e.kind for e in srv.store.drain_events()]
        assert kinds == ["preset/save", "preset/recall", "preset/morph"], kinds

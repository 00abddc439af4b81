"""The OSC server over real UDP on loopback: values, feedback, and every kind of bad input."""

import logging
import math
import random
import struct
import time

import pytest
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from helpers import Client, wait_for

from unstable.control.osc import OscServer
from unstable.control.store import Event, ParameterStore
from unstable.errors import UnstableError
from unstable.schema import ParamSpec, address, show_specs


def groups():
    return {
        "eq": [ParamSpec("alpha", 0.0, 2.0, 1.0), ParamSpec("lr", 1e-5, 1e-1, 1e-3, log=True),
               ParamSpec("steps", 0, 10, 5, kind="int"), ParamSpec("hue", -180, 180, 0)],
        "bad": [ParamSpec("beta", -1.0, 1.0, 0.0), ParamSpec("hue", -180, 180, 0)],
        "show": show_specs(scenes=4),
    }


@pytest.fixture
def params():
    return ParameterStore(groups())


@pytest.fixture
def server(params):
    srv = OscServer(params, port=0, log_interval=60.0).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    c = Client(server.port)
    yield c
    c.close()


def test_normalised_and_raw_values_reach_the_store_and_snapshot(server, client, params):
    client.send(address("eq", "alpha"), 0.25)               # 0..1 fader -> [0, 2]
    client.send(address("eq", "lr"), 0.5)                   # log fader: geometric middle
    client.send(address("bad", "beta", raw=True), -0.5)     # own units
    client.send(address("eq", "steps"), 0.74)               # int: rounded
    client.send(address("eq", "hue", raw=True), 90, types=["i"])  # an int argument is a number
    assert wait_for(lambda: server.stats["applied"] == 5)
    snap = params.snapshot(0.0)
    assert snap["eq"]["alpha"] == pytest.approx(0.5)
    assert snap["eq"]["lr"] == pytest.approx(math.sqrt(1e-5 * 1e-1), rel=1e-5)
    assert snap["bad"]["beta"] == pytest.approx(-0.5)
    assert snap["eq"]["steps"] == 7.0
    assert snap["eq"]["hue"] == 90.0
    assert snap["bad"]["hue"] == 0.0


def test_fader_positions_map_onto_ranges_that_do_not_start_at_zero(server, client, params):
    client.send(address("bad", "hue"), 0.75)   # [-180, 180]
    client.send(address("bad", "beta"), 0.25)  # [-1, 1]
    client.send(address("eq", "hue"), 0.0)
    assert wait_for(lambda: server.stats["applied"] == 3)
    assert params.get("bad", "hue") == pytest.approx(90.0)
    assert params.get("bad", "beta") == pytest.approx(-0.5)
    assert params.get("eq", "hue") == pytest.approx(-180.0)


def test_bundle_timetags_are_not_slept_on(server, client, params):
    b = OscBundleBuilder(time.time() + 3600)  # an hour ahead: strict timing would block the thread
    m = OscMessageBuilder(address=address("eq", "alpha", raw=True))
    m.add_arg(1.5)
    b.add_content(m.build())
    client.send_raw(b.build().dgram)
    assert wait_for(lambda: params.get("eq", "alpha") == 1.5, timeout=30.0)
    client.send(address("bad", "beta", raw=True), 0.5)  # the thread is free for the next message
    assert wait_for(lambda: params.get("bad", "beta") == 0.5, timeout=30.0)


def test_osc_patterns_reach_every_matching_parameter(server, client, params):
    client.send("/unstable/*/hue/raw", 45.0)
    assert wait_for(lambda: params.get("eq", "hue") == 45.0 and params.get("bad", "hue") == 45.0)
    client.send("/unstable/*", 9000)  # matches actions too, but patterns only reach parameters
    client.send("/unstable/{eq,bad}/nothing", 1.0)
    assert wait_for(lambda: server.stats["unknown"] == 2)
    assert server.subscribers == [] and params.drain_events() == []
    assert params.get("show", "scene") == 0.0


def subscribe(c, n_params):
    c.send("/unstable/subscribe", c.port, types=["i"])
    # Subscribing sends the full state: two messages (0..1 and raw) per parameter.
    got = c.recv_all(2 * n_params)
    assert len(got) == 2 * n_params
    return got


def test_feedback_goes_to_subscribers_but_not_back_to_the_sender(server, params):
    a, b = Client(server.port), Client(server.port)
    try:
        n = len(params.keys())
        state_a = dict(subscribe(a, n))
        subscribe(b, n)
        assert state_a[address("eq", "alpha")] == [pytest.approx(0.5)]   # default 1.0 of [0, 2]
        assert state_a[address("eq", "alpha", raw=True)] == [pytest.approx(1.0)]
        assert set(server.subscribers) == {("127.0.0.1", a.port), ("127.0.0.1", b.port)}

        a.send(address("eq", "alpha"), 0.75)
        got = dict(b.recv_all(2))
        assert got == {address("eq", "alpha"): [pytest.approx(0.75)],
                       address("eq", "alpha", raw=True): [pytest.approx(1.5)]}
        assert a.recv(timeout=0.3) is None  # no echo to the controller that moved the fader

        # A change by the engine itself (a preset, a scene) goes to everyone.
        params.update({"bad": {"beta": 0.5}})
        for c in (a, b):
            assert dict(c.recv_all(2)) == {address("bad", "beta"): [pytest.approx(0.75)],
                                           address("bad", "beta", raw=True): [pytest.approx(0.5)]}

        # /sync: the full state to the subscribers on the sender's host (here both), each at most
        # once a second (b had its full state a moment ago: its copy comes when that second is over).
        b.send("/unstable/sync")
        for c in (a, b):
            state = dict(c.recv_all(2 * n))
            assert state[address("eq", "alpha", raw=True)] == [pytest.approx(1.5)]
            assert state[address("bad", "beta", raw=True)] == [pytest.approx(0.5)]

        b.send("/unstable/unsubscribe", b.port)
        assert wait_for(lambda: server.subscribers == [("127.0.0.1", a.port)])
        params.set("eq", "alpha", 0.2)
        assert len(a.recv_all(2)) == 2
        assert b.recv(timeout=0.3) is None
    finally:
        a.close()
        b.close()


def test_no_echo_to_a_controller_that_sends_and_receives_on_different_ports(server, params):
    # As the generated Max patch does (`udpsend` from an ephemeral port, `udpreceive` on the
    # feedback port it subscribes with) and TouchOSC: one socket sends, another one listens.
    out, inp, other = Client(server.port), Client(server.port), Client(server.port)
    try:
        n = len(params.keys())
        out.send("/unstable/subscribe", inp.port)  # sent from `out`, feedback to `inp`
        assert len(inp.recv_all(2 * n)) == 2 * n
        subscribe(other, n)
        assert out.recv(timeout=0.1) is None  # nothing goes to the sending port

        out.send(address("eq", "alpha"), 0.75)
        assert dict(other.recv_all(2)) == {address("eq", "alpha"): [pytest.approx(0.75)],
                                           address("eq", "alpha", raw=True): [pytest.approx(1.5)]}
        assert inp.recv(timeout=0.3) is None  # no echo of its own move
        # Another controller's move and the engine's changes still reach it.
        other.send(address("bad", "beta"), 0.25)
        assert dict(inp.recv_all(2)) == {address("bad", "beta"): [pytest.approx(0.25)],
                                         address("bad", "beta", raw=True): [pytest.approx(-0.5)]}
        params.set("eq", "alpha", 0.2)
        assert dict(inp.recv_all(2))[address("eq", "alpha", raw=True)] == [pytest.approx(0.2)]
    finally:
        for c in (out, inp, other):
            c.close()


def test_show_actions_are_queued_as_events(server, client, params):
    client.send("/unstable/scene", 2)
    client.send("/unstable/record", 1)
    client.send("/unstable/still", 1.0)
    client.send("/unstable/still", 0.0)  # a button's release: not a second still
    client.send("/unstable/still")
    client.send(address("show", "scene"), 1.0)  # the scene fader: last scene
    client.send(address("show", "master_fade"), 0.5)  # a plain parameter, no event
    assert wait_for(lambda: server.stats["messages"] == 7)
    events = [(e.kind, e.value) for e in params.drain_events()]
    # Stills (and records) coalesce: a burst waits as one, the newest; scene jumps keep their order.
    assert events == [("scene", 2.0), ("record", 1.0), ("still", None), ("scene", 3.0)]
    assert params.get("show", "scene") == 3.0 and params.get("show", "record") == 1.0
    assert params.drain_events() == []


def test_out_of_range_is_clamped_with_a_warning(server, client, params, caplog):
    caplog.set_level(logging.WARNING, logger="unstable.osc")
    client.send(address("eq", "alpha"), 1.5)
    client.send(address("bad", "beta", raw=True), -7.0)
    assert wait_for(lambda: server.stats["applied"] == 2)
    assert params.get("eq", "alpha") == 2.0
    assert params.get("bad", "beta") == -1.0
    assert server.stats["clamped"] == 2
    assert any("/unstable/eq/alpha" in r.getMessage() and "clamped" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("args, types, why", [
    (["loud"], None, "expected a number"),
    ([b"\x00\x01"], None, "expected a number"),
    ([], None, "expected one number"),
    ([0.1, 0.2], None, "expected one number"),
    ([float("nan")], ["f"], "not a finite number"),
    ([float("inf")], ["d"], "not a finite number"),
    ([float("-inf")], ["f"], "not a finite number"),
])
def test_bad_arguments_are_rejected_with_a_line_naming_the_address(server, client, params, caplog,
                                                                  args, types, why):
    caplog.set_level(logging.WARNING, logger="unstable.osc")
    client.send(address("eq", "alpha", raw=True), *args, types=types)
    assert wait_for(lambda: server.stats["rejected"] == 1)
    assert params.get("eq", "alpha") == 1.0
    lines = [r.getMessage() for r in caplog.records]
    assert any("/unstable/eq/alpha/raw" in line and why in line for line in lines), lines


def test_subscribe_needs_a_port(server, client):
    for bad in (0, 70000, 1.5, "9000"):
        client.send("/unstable/subscribe", bad)
    assert wait_for(lambda: server.stats["rejected"] == 4)
    assert server.subscribers == []


def test_malformed_packets_are_counted_and_survived(server, client, params):
    rng = random.Random(0)
    for _ in range(50):
        client.send_raw(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
    client.send_raw(b"/unstable/eq/alpha\x00\x00,i\x00\x00\x00\x01")  # int tag, half an int
    client.send_raw(b"/unstable/eq/alpha\x00\x00,s\x00\x00abc")       # unterminated string
    client.send_raw(b"#bundle\x00" + b"\x00" * 8 + b"\x00\x00\x01\x00")  # element longer than packet
    client.send_raw(b"")
    assert wait_for(lambda: server.stats["packets"] == 54)
    assert server.stats["malformed"] >= 52
    assert server.stats["errors"] == 0
    assert params.get("eq", "alpha") == 1.0
    client.send(address("eq", "alpha", raw=True), 0.5)
    assert wait_for(lambda: params.get("eq", "alpha") == 0.5)
    assert server.running


def test_unknown_addresses_are_logged_rate_limited(server, client, params, caplog):
    caplog.set_level(logging.WARNING, logger="unstable.osc")
    for i in range(20):
        client.send(f"/unstable/eq/nothing{i}", 0.5)
    client.send("/other/app", 1)
    assert wait_for(lambda: server.stats["unknown"] == 21)
    lines = [r.getMessage() for r in caplog.records if "not in the schema" in r.getMessage()]
    assert len(lines) == 1 and "/unstable/eq/nothing0" in lines[0]
    assert params.targets() == ParameterStore(groups()).targets()


def test_senders_outside_the_allow_list_are_ignored(params):
    # Everything on loopback comes from 127.0.0.1: an allow-list without it refuses us.
    srv = OscServer(params, port=0, allow=["10.1.2.3", "192.168.7.0/24"], log_interval=60.0).start()
    c = Client(srv.port)
    try:
        c.send(address("eq", "alpha", raw=True), 0.5)
        c.send("/unstable/subscribe", c.port)
        assert wait_for(lambda: srv.stats["foreign"] == 2)
        assert params.get("eq", "alpha") == 1.0 and srv.subscribers == []
    finally:
        c.close()
        srv.stop()
    srv = OscServer(params, port=0, allow=["127.0.0.0/8"]).start()
    c = Client(srv.port)
    try:
        c.send(address("eq", "alpha", raw=True), 0.5)
        assert wait_for(lambda: params.get("eq", "alpha") == 0.5)
        assert srv.stats["foreign"] == 0
    finally:
        c.close()
        srv.stop()


def test_listening_beyond_loopback_needs_an_allow_list(params):
    with pytest.raises(UnstableError, match="allow-list"):
        OscServer(params, host="0.0.0.0", port=0)
    with pytest.raises(UnstableError, match="not an IP address"):
        OscServer(params, host="0.0.0.0", port=0, allow=["my-phone"])


def test_long_strings_and_oversized_packets_are_rejected(server, client, params, caplog):
    caplog.set_level(logging.WARNING, logger="unstable.osc")
    client.send(address("eq", "alpha"), "x" * 1000)
    client.send("/unstable/" + "a" * 400, 0.5)
    client.send("/unstable/eq/alpha\n/fake log line", 0.5)
    assert wait_for(lambda: server.stats["rejected"] == 3)
    assert any("longer than 256" in r.getMessage() for r in caplog.records)
    m = OscMessageBuilder(address=address("eq", "alpha"))
    m.add_arg(b"\x00" * 20000)
    client.send_raw(m.build().dgram)
    assert wait_for(lambda: server.stats["oversize"] == 1)
    assert params.get("eq", "alpha") == 1.0


def test_a_raising_handler_does_not_kill_the_server(server, client, params):
    def boom(client_address, addr, *args):
        raise RuntimeError("handler bug")

    server.map("/unstable/boom", boom)

    def bad_listener(keys, origin):
        raise RuntimeError("listener bug")

    params.add_listener(bad_listener)
    client.send("/unstable/boom", 1.0)
    client.send(address("eq", "alpha", raw=True), 0.5)  # a listener raises inside this write
    assert wait_for(lambda: server.stats["errors"] == 1 and params.get("eq", "alpha") == 0.5)
    assert server.running
    client.send(address("bad", "beta", raw=True), 0.25)
    assert wait_for(lambda: params.get("bad", "beta") == 0.25)


def test_a_burst_of_10000_messages_loses_none(server, client, params):
    n = 10_000
    seen = []
    params.add_listener(lambda keys, origin: seen.append(keys[0]))  # every distinct write counts
    b = OscMessageBuilder(address=address("eq", "alpha", raw=True))
    b.add_arg(0.0, "f")
    head = b.build().dgram[:-4]
    # All distinct in float32, so every message is a change the listener hears.
    datagrams = [head + struct.pack(">f", (i + 1) * 1.9 / n) for i in range(n)]
    for d in datagrams:
        client.send_raw(d)
    assert wait_for(lambda: server.stats["packets"] == n, timeout=60.0), server.stats
    assert server.stats["applied"] == n
    assert len(seen) == n
    assert params.get("eq", "alpha") == pytest.approx(1.9)


# Pinned by mutation testing (docs/mutation.md). The datagram path without the socket: the bytes a
# controller sends go through parsing, dispatch and the handlers in this thread (the allow-list
# belongs to the transport's verify_request and is checked on its own below).

def dgram(addr, *args, types=None):
    b = OscMessageBuilder(address=addr)
    for i, a in enumerate(args):
        b.add_arg(a, types[i] if types else None)
    return b.build().dgram


def feed(srv, data, sender):
    """One datagram from `sender` = (host, port), as the UDP server hands it to the dispatcher."""
    srv.dispatcher.call_handlers_for_packet(data, sender)


def test_booleans_are_numbers_for_toggles_and_faders(params):
    srv = OscServer(params, port=0)
    feed(srv, dgram("/unstable/show/record", True), ("127.0.0.1", 5000))
    assert params.get("show", "record") == 1.0
    feed(srv, dgram(address("eq", "alpha", raw=True), False), ("127.0.0.1", 5000))
    assert params.get("eq", "alpha") == 0.0
    assert srv.stats["applied"] == 2 and srv.stats["rejected"] == 0 and srv.stats["errors"] == 0


def test_a_rejected_argument_names_its_type_and_value(params, caplog):
    caplog.set_level(logging.WARNING, logger="unstable.osc")
    srv = OscServer(params, port=0)
    feed(srv, dgram(address("eq", "alpha"), "loud"), ("127.0.0.1", 5000))
    assert srv.stats["rejected"] == 1
    assert any(r.getMessage() == "OSC /unstable/eq/alpha from 127.0.0.1:5000 rejected: expected a number, "
               "got str 'loud'" for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_subscribe_port_bounds_and_the_rejection_line(params, caplog):
    caplog.set_level(logging.WARNING, logger="unstable.osc")
    srv = OscServer(params, port=0)
    for port in (0, 1, 65535, 65536):
        feed(srv, dgram("/unstable/subscribe", port, types=["i"]), ("127.0.0.1", 5000))
    assert srv.subscribers == [("127.0.0.1", 1), ("127.0.0.1", 65535)]
    assert srv.stats["rejected"] == 2
    lines = [r.getMessage() for r in caplog.records]
    assert "OSC /unstable/subscribe from 127.0.0.1:5000 rejected: expected a port 1..65535, got 0.0" in lines
    srv = OscServer(params, port=0)  # a fresh rate limit: one line per (address, kind) per interval
    srv.subscribe("127.0.0.1", 65535)
    feed(srv, dgram("/unstable/subscribe", "x"), ("127.0.0.1", 5000))
    assert any(line.startswith("OSC /unstable/subscribe from 127.0.0.1:5000 rejected: expected a number")
               for line in [r.getMessage() for r in caplog.records])
    feed(srv, dgram("/unstable/unsubscribe", 1, types=["i"]), ("127.0.0.1", 5000))
    assert srv.subscribers == [("127.0.0.1", 65535)]


def test_clamp_warnings_only_outside_the_range_and_name_the_value(params, caplog):
    caplog.set_level(logging.WARNING, logger="unstable.osc")
    srv = OscServer(params, port=0)
    origin = ("127.0.0.1", 5000)
    for u in (0.0, 1.0, 0.5):  # the ends of a fader are inside its range
        feed(srv, dgram(address("eq", "alpha"), u), origin)
    feed(srv, dgram(address("eq", "alpha", raw=True), 1.5), origin)  # raw: [0, 2] applies
    feed(srv, dgram(address("eq", "alpha", raw=True), 2.0), origin)
    feed(srv, dgram(address("eq", "alpha", raw=True), 0.0), origin)
    assert srv.stats["clamped"] == 0 and srv.stats["applied"] == 6
    feed(srv, dgram(address("eq", "alpha", raw=True), 3.0), origin)
    feed(srv, dgram(address("bad", "beta"), 1.25), origin)  # another address: its own line
    assert srv.stats["clamped"] == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["OSC /unstable/eq/alpha/raw from 127.0.0.1:5000: 3.0 is outside [0, 2], clamped",
                     "OSC /unstable/bad/beta from 127.0.0.1:5000: 1.25 is outside [0, 1], clamped"]


def test_a_still_event_carries_its_sender(params):
    srv = OscServer(params, port=0)
    feed(srv, dgram("/unstable/still"), ("127.0.0.1", 5000))
    feed(srv, dgram("/unstable/still", 1.0), ("127.0.0.1", 5001))
    feed(srv, dgram("/unstable/still", 0.0), ("127.0.0.1", 5002))  # a button's release
    # Stills coalesce in the queue (a burst is one still): the newest request waits, with its sender.
    assert params.drain_events() == [Event("still", None, ("127.0.0.1", 5001))]


def test_hosts_and_allow_list_entries():
    OscServer(ParameterStore(groups()), host="localhost", port=0)  # loopback by name: no allow-list needed
    with pytest.raises(UnstableError, match="reaches beyond this machine"):
        OscServer(ParameterStore(groups()), host="osc.example.invalid", port=0)  # not an address: not loopback
    # a host address with a prefix names its network (not strict about the host bits)
    srv = OscServer(ParameterStore(groups()), host="0.0.0.0", allow=[" 192.168.1.20/24 "], port=0)
    assert srv._allowed("192.168.1.77") and not srv._allowed("192.168.2.1")


def test_still_and_unsubscribe_count_and_name_what_they_reject(params, caplog):
    caplog.set_level(logging.WARNING, logger="unstable.osc")
    srv = OscServer(params, port=0)
    origin = ("10.0.0.7", 9000)
    for args in ((), (1.0,), (0.0,), (2,)):  # a bare still, a press, a release (nothing), a press
        feed(srv, dgram("/unstable/still", *args), origin)
    assert srv.stats["applied"] == 3 and srv.stats["rejected"] == 0
    feed(srv, dgram("/unstable/still", "now"), origin)
    feed(srv, dgram("/unstable/unsubscribe", 0, types=["i"]), origin)
    assert srv.stats["applied"] == 3 and srv.stats["rejected"] == 2
    lines = [r.getMessage() for r in caplog.records]
    assert "OSC /unstable/still from 10.0.0.7:9000 rejected: expected a number, got str 'now'" in lines, lines
    assert "OSC /unstable/unsubscribe from 10.0.0.7:9000 rejected: expected a port 1..65535, got 0.0" in lines, lines


def test_sync_asks_for_the_senders_own_full_state(params):
    """/sync is answered on the sender's host only (Feedback.sync(origin)); sync() with no origin
    would send the full state to every subscriber."""
    srv = OscServer(params, port=0)
    asked = []
    srv.feedback.sync = lambda origin=None: asked.append(origin)
    feed(srv, dgram("/unstable/sync"), ("10.0.0.7", 9000))
    assert asked == [("10.0.0.7", 9000)]


def test_piece_actions_become_events_for_that_piece_with_their_sender(params, caplog):
    """/unstable/<piece>/directions/refresh and /clusters/refresh, for every piece but the show:
    an event naming the piece, the action and the sender; a button's release (0) is no event."""
    caplog.set_level(logging.WARNING, logger="unstable.osc")
    srv = OscServer(params, port=0)
    feed(srv, dgram("/unstable/eq/directions/refresh"), ("10.0.0.7", 9000))
    feed(srv, dgram("/unstable/bad/clusters/refresh", 1.0), ("10.0.0.8", 9001))
    feed(srv, dgram("/unstable/bad/directions/refresh", 0.0), ("10.0.0.8", 9001))  # release
    feed(srv, dgram("/unstable/show/directions/refresh"), ("10.0.0.7", 9000))  # the show is no piece
    assert params.drain_events() == [Event("directions/refresh", None, ("10.0.0.7", 9000), group="eq"),
                                     Event("clusters/refresh", None, ("10.0.0.8", 9001), group="bad")]
    assert srv.stats["applied"] == 2 and srv.stats["errors"] == 0 and srv.stats["rejected"] == 0
    feed(srv, dgram("/unstable/eq/clusters/refresh", "go"), ("10.0.0.7", 9000))
    assert srv.stats["rejected"] == 1 and params.drain_events() == []
    assert "OSC /unstable/eq/clusters/refresh from 10.0.0.7:9000 rejected: expected a number, got str 'go'" \
        in [r.getMessage() for r in caplog.records]

"""What the mutation run of control/ws_admission.py found unpinned (scripts/mutation.sh
ws-admission; docs/mutation.md, fourth session)."""

from __future__ import annotations

import logging
import types

import pytest

from unstable.control import ws_admission
from unstable.control.osclog import RateLimitedLog
from unstable.control.websockets import _Client
from unstable.control.ws_admission import Admission, Bucket


class Clock:
    """ws_admission's clock, moved by hand (the hub's tests run the same code on real time)."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(ws_admission, "time", types.SimpleNamespace(monotonic=c.monotonic))
    return c


def admission(max_clients=4, rate=10.0, total_rate=40.0):
    clients, stats = set(), {"ws_dropped": 0, "ws_over_total": 0}
    warn = RateLimitedLog(logging.getLogger("test.admission"), interval=3600.0)
    return Admission(clients, stats, warn, max_clients=max_clients, rate=rate, total_rate=total_rate)


def client(adm, address, number, clock):
    c = _Client(None, (f"{address}:{number}", number), adm.rate, address)
    c.stamp = c.share_stamp = clock.now
    return c


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_bucket_holds_its_burst_refills_at_its_rate_and_never_past_its_cap(clock):
    b = Bucket(10.0)
    assert (b.rate, b.cap, b.tokens) == (10.0, 10.0, 10.0)
    assert [b.take() for _ in range(11)] == [True] * 10 + [False]
    clock.now += 0.25
    assert b.refill() == pytest.approx(2.5)
    assert b.take() and b.tokens == pytest.approx(1.5)
    clock.now += 60.0
    assert b.refill() == 10.0
    assert Bucket(10.0, burst=2.0).cap == 20.0


def test_places_count_clients_and_newcomers_in_their_handshake(clock):
    adm = admission()
    adm.clients.update(client(adm, "10.0.0.1", n, clock) for n in range(2))
    adm.joining.update({"10.0.0.2": 1, "10.0.0.3": 2})
    assert adm.taken() == 5


def test_room_is_made_from_the_oldest_client_of_the_address_holding_two_more(clock, caplog):
    adm = admission(max_clients=5)
    flood = [client(adm, "10.0.0.9", n, clock) for n in (7, 3, 5)]
    phone = client(adm, "10.0.0.2", 4, clock)
    adm.clients.update([*flood, phone])
    adm.joining["10.0.0.2"] = 1  # the phone's second place, in its handshake
    with caplog.at_level(logging.WARNING):
        assert adm.make_room("10.0.0.2") is None        # 3 against 2 (with the one joining): not two more
        assert adm.make_room("10.0.0.5") is flood[1]    # 3 against 0: its oldest connection (3) goes
    assert flood[1] not in adm.clients and adm.stats["ws_displaced"] == 1
    assert warnings(caplog) == ["web: websocket 10.0.0.9:3 closed to make room for 10.0.0.5 (10.0.0.9 holds 3 "
                                "of the 5 places)"]
    del adm.joining["10.0.0.2"]  # the phone's handshake done elsewhere: 2 against its 1
    assert adm.make_room("10.0.0.6") is flood[2] and adm.stats["ws_displaced"] == 2  # then 5 (7 is newer)
    # Another machine filling the places: its own line (the line is limited per address, not for all).
    adm.clients.update(client(adm, "10.0.0.7", n, clock) for n in (11, 12, 13))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert adm.make_room("10.0.0.6").origin[1] == 11
    assert warnings(caplog) == ["web: websocket 10.0.0.7:11 closed to make room for 10.0.0.6 (10.0.0.7 holds 3 "
                                "of the 5 places)"]


def test_no_room_is_made_from_newcomers_or_in_an_empty_hub(clock):
    adm = admission()
    assert adm.make_room("10.0.0.1") is None
    adm.joining["10.0.0.9"] = 4  # the heaviest address holds only places still in their handshake
    adm.clients.add(client(adm, "10.0.0.2", 1, clock))
    assert adm.make_room("10.0.0.1") is None and "ws_displaced" not in adm.stats


def test_a_clients_budget_is_two_seconds_of_its_rate_and_a_flood_is_five(clock, caplog):
    adm = admission(rate=10.0)
    c = client(adm, "10.0.0.1", 1, clock)
    with caplog.at_level(logging.WARNING):
        assert [adm.budget(c) for _ in range(21)] == [True] * 20 + [False]
    assert (adm.stats["ws_dropped"], c.dropped, c.flooded) == (1, 1, False)
    assert warnings(caplog) == ["web: websocket 10.0.0.1:1 sends more than 10 messages/s; dropping the rest"]
    clock.now += 0.1  # one message's worth
    assert adm.budget(c) and not adm.budget(c)
    for _ in range(48):
        adm.budget(c)
    assert (c.dropped, c.flooded) == (50, False)  # 5 s of its rate dropped: not yet a flood
    clock.now += 0.6  # a pause that refills part of its budget: the flood has not ended
    assert adm.budget(c) and c.dropped == 50
    for _ in range(5):
        adm.budget(c)
    assert not adm.budget(c) and c.flooded       # past 5 s of its rate: closed by the hub
    clock.now += 2.0  # full again: what it dropped was a burst that ended
    assert adm.budget(c) and c.dropped == 0
    clock.now += 100.0
    adm.budget(c)
    assert c.tokens == 19.0  # never more than 2 s of its rate


def test_clients_together_take_their_shares_then_the_pool_then_nothing(clock, caplog):
    adm = admission(total_rate=40.0)  # a share of 20/s split among the clients, a pool of 20/s
    a, b = client(adm, "10.0.0.1", 1, clock), client(adm, "10.0.0.2", 2, clock)
    adm.clients.update([a, b])
    assert adm.pool.cap == 20.0
    clock.now += 1.0  # a's share refills to 20 / 2 clients = 10
    with caplog.at_level(logging.WARNING):
        got = [adm.total_budget(a) for _ in range(31)]
    assert got == [True] * 30 + [False]  # 10 of its share, then the pool's 20
    assert a.share == 0.0 and (adm.stats["ws_dropped"], adm.stats["ws_over_total"]) == (1, 1)
    assert warnings(caplog) == ["web: websocket clients together send more than 40 messages/s; dropping the "
                                "rest (2 clients)"]
    b.share_stamp = clock.now
    clock.now += 0.0625  # b: 0.625 of a message of its share, then one of the pool's 1.25
    assert adm.total_budget(b) and b.share == 0.625 and adm.pool.tokens == 0.25
    assert not adm.total_budget(b) and adm.stats["ws_over_total"] == 2

"""Who may come in and what each may send: the websocket hub's places (a client count, and room
made for a newcomer from another address) and its inbound budgets (each client's rate, all
clients' total). Used by `websockets.WebsocketHub`, in the web server's event loop.
"""

from __future__ import annotations

import asyncio
import collections
import time

from .osclog import RateLimitedLog

__all__ = ["Admission", "Bucket", "OutBudget"]


class Bucket:
    """A token bucket: `rate` tokens a second, at most `burst` seconds of them held."""

    def __init__(self, rate: float, burst: float = 1.0):
        self.rate = float(rate)
        self.cap = self.rate * burst
        self.tokens = self.cap
        self.stamp = time.monotonic()

    def refill(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.cap, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens

    def take(self) -> bool:
        """One token, if there is one."""
        if self.refill() >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class OutBudget:
    """What all websocket writers together may send: `rate` messages a second (burst 1 s), granted
    first come, first served. A writer that finds none waits in a queue, and one timer grants the
    queue's head when a batch (`batch` seconds of the rate) is there: 64 writers waiting cost one
    wake-up per grant, not a poll each every token (which took the web thread's CPU under the soak's
    LISTEN fan-out)."""

    def __init__(self, rate: float, batch: float = 0.02):
        self.bucket = Bucket(rate)
        self.batch = max(1.0, self.bucket.rate * batch)
        self.grants = 0
        self._waiters: collections.deque = collections.deque()   # (future, want), oldest first
        self._timer: asyncio.TimerHandle | None = None

    def available(self) -> bool:
        """Whether a message could go now without waiting."""
        return not self._waiters and self.bucket.refill() >= 1.0

    async def acquire(self, want: int) -> int:
        """Wait for a turn and at least one token; take up to `want`, return how many were taken."""
        if self.available():
            n = min(int(want), int(self.bucket.tokens))
            self.bucket.tokens -= n
            return n
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((fut, int(want)))
        self._arm()
        return await fut   # cancelled with its writer: the grant skips it

    def _arm(self) -> None:
        while self._waiters and self._waiters[0][0].done():
            self._waiters.popleft()
        if self._timer is not None or not self._waiters:
            return
        need = min(self.batch, self._waiters[0][1])
        delay = max(0.0, (need - self.bucket.refill()) / self.bucket.rate)
        self._timer = asyncio.get_running_loop().call_later(delay, self._grant)

    def _grant(self) -> None:
        self._timer = None
        self.bucket.refill()
        while self._waiters and self.bucket.tokens >= 1.0:
            fut, want = self._waiters.popleft()
            if fut.done():
                continue
            n = min(want, int(self.bucket.tokens))
            self.bucket.tokens -= n
            self.grants += 1
            fut.set_result(n)
        self._arm()


class Admission:
    """The hub's places and inbound budgets over its set of clients (`clients`, shared with the hub).

    `joining` counts, per address, the newcomers given a place whose handshake is not done yet.
    """

    def __init__(self, clients: set, stats: dict, warn: RateLimitedLog, *, max_clients: int, rate: float,
                 total_rate: float):
        self.clients = clients
        self.stats = stats
        self.warn = warn
        self.max_clients = int(max_clients)
        self.rate = float(rate)
        self.total_rate = float(total_rate)
        self.pool = Bucket(self.total_rate / 2.0)   # the half of the total anyone may take
        self.joining: dict[str, int] = {}

    def taken(self) -> int:
        """Places held: clients, and newcomers still in their handshake."""
        return len(self.clients) + sum(self.joining.values())

    def make_room(self, address: str):
        """Every place is taken: the oldest client of the address holding the most places goes (it is
        returned, for the caller to close), when that address holds at least two more than `address`
        would. One machine filling the places (64 clients from a flood) cannot keep a phone or the
        show's own page out; clients spread evenly over addresses keep theirs. Newcomers still in
        their handshake hold their address's places too, so a burst of them displaces no more."""
        counts = dict(self.joining)
        for c in self.clients:
            counts[c.address] = counts.get(c.address, 0) + 1
        heaviest = max(counts, key=counts.get, default=None)
        if heaviest is None or counts[heaviest] < counts.get(address, 0) + 2:
            return None
        victim = min((c for c in self.clients if c.address == heaviest), key=lambda c: c.origin[1], default=None)
        if victim is None:  # all of its places are newcomers' still in their handshake
            return None
        self.clients.discard(victim)
        self.stats["ws_displaced"] = self.stats.get("ws_displaced", 0) + 1
        self.warn.warning(("displaced", heaviest), "web: websocket %s closed to make room for %s (%s holds %d of "
                          "the %d places)", victim.origin[0], address, heaviest, counts[heaviest], self.max_clients)
        return victim

    def budget(self, client) -> bool:
        """A token bucket of `rate` messages a second, burst 2 s: past it messages are dropped, and a
        client that keeps flooding for 5 s worth of its budget is closed (its drops count from the
        last time its budget was full)."""
        now = time.monotonic()
        client.tokens = min(self.rate * 2.0, client.tokens + (now - client.stamp) * self.rate)
        client.stamp = now
        if client.tokens >= self.rate * 2.0:
            # A full budget: what it dropped before was a burst that ended, not a flood going on.
            client.dropped = 0
        if client.tokens >= 1.0:
            client.tokens -= 1.0
            return True
        client.dropped += 1
        self.stats["ws_dropped"] += 1
        self.warn.warning(("flood", client.origin[0]), "web: websocket %s sends more than %g messages/s; "
                          "dropping the rest", client.origin[0], self.rate)
        client.flooded = client.dropped > self.rate * 5
        return False

    def total_budget(self, client) -> bool:
        """Whether all clients together are within `total_rate`: the client's even share first (the
        pool's other half split among the clients now connected), then the common pool."""
        now = time.monotonic()
        share = self.total_rate / 2.0 / max(1, len(self.clients))
        client.share = min(share, client.share + (now - client.share_stamp) * share)
        client.share_stamp = now
        if client.share >= 1.0:
            client.share -= 1.0
            return True
        if self.pool.take():
            return True
        self.stats["ws_dropped"] += 1
        self.stats["ws_over_total"] += 1
        self.warn.warning("ws_total", "web: websocket clients together send more than %g messages/s; dropping "
                          "the rest (%d clients)", self.total_rate, len(self.clients))
        return False

"""The show's web server in a process of its own (`[web] process = true`, the default): the show's
side. It spawns unstable.control.web_child (the same WebServer over a replica of the store), keeps
the replica following the show's store and brings what web clients do into the show's store, with
their origin, as if the server ran here.

Why: in the show's interpreter, the web thread under a network attack took 7-8 CPU seconds a
minute and the render thread waited for the GIL while it ran (docs/figures.md). A process shares no
GIL with the frames, runs niced without the priority inversion a niced thread holding the GIL
causes, and keeps a connection flood off the show's file descriptors.

Both ways, changes are never echoed back: the show sends the replica only changes from origins that
are not a web client's, and the replica sends only what its clients wrote. A killed web process is
one logged line and a new process on the same port (at most every RESTART_EVERY seconds); a killed
show ends the web process (it watches its parent).
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import queue
import secrets
import threading
import time
from typing import Iterable

from ..control.transport import is_loopback
from ..control.web_child import child_main
from ..control.webserver import page_url
from ..errors import UnstableError
from .train_process import _lowest_level
from .web_feed import SpaceView, StoreFeed

log = logging.getLogger("unstable.web")

__all__ = ["WebProcess"]


class _Child:
    """One web process, its two queues and how far the show has applied its moves (`acked`)."""

    def __init__(self, ctx, spec: bytes):
        self.inbox, self.outbox = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=child_main, args=(spec, self.inbox, self.outbox), name="unstable-web",
                                   daemon=True)
        self.acked = 0
        self.reported = False
        self.listener: threading.Thread | None = None

    def send(self, msg: tuple) -> None:
        try:
            self.inbox.put(msg)  # a multiprocessing queue takes puts from any thread
        except (ValueError, OSError):  # closed: the process has ended
            pass

    def close(self) -> None:
        for q in (self.inbox, self.outbox):
            q.close()
            q.cancel_join_thread()  # nobody reads a dead process's queue: do not wait to flush it


class WebProcess:
    """A WebServer's stand-in on the show's side: the same constructor arguments (and `nice`), the
    same attributes (port, url, token, host, stats, running, space, advertise, penalty) and pushes
    (show_pieces, telemetry), the server itself in a spawned process."""

    START_WAIT = 60.0     # seconds for a new process to bind (a spawn imports the control modules, and
                          # the main module again: a benchmark script that imports torch takes 20 s loaded)
    RESTART_EVERY = 3.0   # at most one new process this often
    STATS_WAIT = 0.5

    def __init__(self, store, space, *, host: str = "127.0.0.1", port: int = 9080, token: str | None = None,
                 allow: Iterable[str] | None = None, osc_host: str = "127.0.0.1", osc_port: int | None = None,
                 scenes: Iterable[str] = (), preview=None, advertise: bool = True, hosts: Iterable[str] = (),
                 idle_timeout: float = 5.0, max_connections: int = 256, max_per_address: int = 32,
                 penalty: float = 30.0, nice: int = 5):
        self.store = store
        self.space = SpaceView(space, lambda names: self.feed.presets_added(names), lambda: self.feed.send_extras())
        self.feed = StoreFeed(store, self.space, lambda: self._child)
        self.host = host
        self.requested_port = int(port)
        self.token = token or secrets.token_urlsafe(12)
        self.advertise = advertise and not is_loopback(host)
        self.penalty = float(penalty)
        self.preview = preview
        self.nice = int(nice)
        self._server = dict(host=host, token=self.token, allow=list(allow) if allow else None, advertise=advertise,
                            osc_host=osc_host, osc_port=osc_port, scenes=list(scenes), hosts=list(hosts),
                            idle_timeout=idle_timeout, max_connections=max_connections,
                            max_per_address=max_per_address, penalty=penalty)
        self._shown = list(space.shown)
        self._ctx = multiprocessing.get_context("spawn")
        self._child: _Child | None = None
        self._port: int | None = None
        self._life = threading.Lock()        # one start or stop at a time
        self._stopping = threading.Event()
        self._stats: dict = {}
        self._stats_before: dict = {}        # counters of the processes that ended
        self._stats_cond = threading.Condition()
        self._stats_asked = self._stats_seen = 0
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    # -- the WebServer's attributes -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        return self._port if self._port is not None else self.requested_port

    def url(self, host: str | None = None) -> str:
        """The control page's URL; with the token when the server listens beyond loopback."""
        return page_url(self.host, self.port, self.token, host)

    @property
    def running(self) -> bool:
        child = self._child
        return child is not None and child.process.is_alive() and not self._stopping.is_set()

    @property
    def stats(self) -> dict:
        """The web process's counters (asked for now; the last ones it sent if it does not answer),
        added to those of the processes before it."""
        self._ask_stats(self.STATS_WAIT)
        with self._stats_cond:
            return {k: self._stats_before.get(k, 0) + self._stats.get(k, 0)
                    for k in {*self._stats_before, *self._stats}}

    def _ask_stats(self, timeout: float) -> bool:
        """Ask for the counters, wait; True if they came (and so all sent before: one ordered inbox)."""
        child = self._child
        if child is None or not child.process.is_alive() or self._stopping.is_set():
            return False
        with self._stats_cond:
            self._stats_asked += 1
            n = self._stats_asked
            child.send(("stats?", n))
            return self._stats_cond.wait_for(lambda: self._stats_seen >= n, timeout)

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until the web process has applied every change the show's store has had so far:
        the page and OSCQuery answer from a replica a batch (at most VALUES_EVERY) behind the show,
        so a tool or a test that sets a value and reads it over HTTP calls this between. False if
        the web process did not answer within `timeout` seconds."""
        self.feed.flush()
        return self._ask_stats(timeout)

    def show_pieces(self, pieces: Iterable[str]) -> None:
        """The current scene shows these pieces: the tree follows, PATH_CHANGED if it changed."""
        self._shown = list(pieces)
        self.space.set_shown(self._shown)
        self.feed.send(("shown", self._shown))

    def telemetry(self, line: dict) -> None:
        """One second's telemetry to the clients that asked for it."""
        self.feed.send(("telemetry", line))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "WebProcess":
        """Spawn the web process and wait until it listens; a port in use is an UnstableError."""
        with self._life:
            self._start_child(self.requested_port)
        self.feed.start()
        self._watcher = threading.Thread(target=self._watch, name="unstable-web-watch", daemon=True)
        self._watcher.start()
        return self  # the process said where it serves, in the show's log

    def _spec(self, port: int) -> bytes:
        s = self.space._space
        return pickle.dumps({
            "groups": self.store.groups, "values": self.store.targets(), "name": s.name, "pieces": list(s.pieces),
            "actions": dict(s.actions), "shown": self._shown, "server": {**self._server, "port": port},
            "preview": self.preview is not None, "preview_interval": self._preview_interval(),
            "presets": self.feed.presets, "extras": self.feed.extras, "nice": self.nice, "log_level": _lowest_level()})

    def _preview_interval(self) -> float:
        sink = getattr(self.preview, "__self__", None)
        return float(getattr(sink, "interval", 0.25))

    def _start_child(self, port: int) -> None:
        child = _Child(self._ctx, self._spec(port))
        child.process.start()
        end = time.monotonic() + self.START_WAIT
        where = f"{self.host}:{port}"
        while True:
            try:
                msg = child.outbox.get(timeout=max(0.05, min(0.5, end - time.monotonic())))
            except queue.Empty:
                if child.process.is_alive() and time.monotonic() < end:
                    continue
                self._end(child)
                raise UnstableError(f"cannot serve the control page on {where}: the web process "
                                    + ("did not start in time" if time.monotonic() >= end else "ended at its start"))
            if msg[0] == "failed":
                self._end(child)
                raise UnstableError(msg[1])
            if msg[0] == "started":
                break
            self._take(child, msg)
        self._port = msg[1]
        self._child = child
        child.listener = threading.Thread(target=self._listen, args=(child,), name="unstable-web-link", daemon=True)
        child.listener.start()

    def _end(self, child: _Child) -> None:
        child.process.join(5.0)
        if child.process.is_alive():
            child.process.kill()
            child.process.join(5.0)
        child.close()

    def _watch(self) -> None:
        """A web process that ended: one line, and a new one on the same port."""
        last_start = time.monotonic()
        while not self._stopping.wait(0.25):
            child = self._child
            if child is None or child.process.is_alive():
                continue
            if not child.reported:
                child.reported = True
                log.error("web: the web process ended (exit code %s); the show goes on, a new one starts",
                          child.process.exitcode)
            if time.monotonic() - last_start < self.RESTART_EVERY:
                continue
            last_start = time.monotonic()
            with self._life:
                if self._stopping.is_set():
                    return
                with self._stats_cond:
                    self._stats_before = {k: self._stats_before.get(k, 0) + self._stats.get(k, 0)
                                          for k in {*self._stats_before, *self._stats}}
                    self._stats = {}
                self._end(child)
                try:
                    self._start_child(self.port)
                except UnstableError as e:
                    log.error("web: a new web process could not start: %s; trying again in %g s", e,
                              self.RESTART_EVERY)
                    continue
                self.restarts += 1
                log.info("web: a new web process serves %s", self.url())

    def stop(self) -> None:
        """Close the web process's sockets and end it (killed if it does not end in 10 s)."""
        with self._life:
            if self._stopping.is_set():
                return
            self._stopping.set()
            self.feed.stop()
            child = self._child
            if child is not None:
                if child.process.is_alive():
                    child.send(("stop",))
                    child.listener.join(10.0)
                self._end(child)
                if child.listener is not None:
                    child.listener.join(5.0)
        if self._watcher is not None:
            self._watcher.join(5.0)

    def __enter__(self) -> "WebProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- web process -> show --------------------------------------------------------------------

    def _listen(self, child: _Child) -> None:
        while True:
            try:
                msg = child.outbox.get(timeout=0.5)
            except queue.Empty:
                if not child.process.is_alive():
                    return
                continue
            except (EOFError, OSError, ValueError):
                return
            if msg[0] == "done":
                return
            self._take(child, msg)

    def _take(self, child: _Child, msg: tuple) -> None:
        kind = msg[0]
        try:
            if kind == "set":
                values: dict = {}
                for group, name, value in msg[1]:
                    values.setdefault(group, {})[name] = value
                self.store.update(values, msg[2])  # not set(): the event of a scene or record comes on its own
                child.acked = msg[3]
            elif kind == "event":
                ev = msg[1]
                self.store.post_event(ev.kind, ev.value, ev.origin, ev.group, name=ev.name, unit=ev.unit,
                                      curve=ev.curve)
            elif kind == "preview?":
                child.send(("preview", msg[1], self.preview() if self.preview is not None else None))
            elif kind == "stats":
                with self._stats_cond:
                    self._stats = msg[2]
                    if msg[1] is not None:
                        self._stats_seen = max(self._stats_seen, msg[1])
                    self._stats_cond.notify_all()
            elif kind == "log":
                record = msg[1]
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):  # the show's levels decide, as for its own lines
                    logger.handle(record)
        except Exception:  # noqa: BLE001 - one bad message: the show and the page go on
            log.exception("web: a message from the web process could not be applied: %s", kind)

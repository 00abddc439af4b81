"""The show's web server in a process of its own (`[web] process = true`; unstable.live.web_process
starts it): the same `WebServer` as the show's thread, over a replica of the show's parameter store.

Why here and not in unstable.live: a spawned child imports the module of its entry point, and
importing unstable.live brings torch and the whole engine (many seconds and hundreds of MB before
the port is bound); this module needs only unstable.control.

What crosses the boundary, each way one queue:
  show -> here  ("values", [(origin, {group: {name: v}})], acked)  changes in the show's store from
                                          other origins; `acked`: the newest of our moves it had applied
                ("shown", [pieces])       the scene shows these pieces (PATH_CHANGED if that changed)
                ("telemetry", line)       one second's telemetry for the pages that asked
                ("extras", {key: value})  the page's extras (MIDI bindings...), as they are now
                ("presets", folder)       list the presets saved in `folder` (None: names from extras)
                ("preview", n, got)       the answer to our ("preview?", n): (frame, JPEG) or None
                ("stats?", n)             send the counters now
                ("stop",)                 close the sockets and end
  here -> show  ("started", port) | ("failed", line)   after binding
                ("set", [(group, name, value)], origin, seq)   a web client moved these
                ("event", Event)          an action a web client asked for (scene, record, still...)
                ("preview?", n)           a client asked for the preview
                ("stats", n, {...})       the counters (n None: the once-a-second push)
                ("log", LogRecord)        every log line of this process, to the show's log
                ("done",)                 after "stop"
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time

from ..log_forward import SendQueue
from ..schema import PREFIX
from .store import ParameterStore

log = logging.getLogger("unstable.web")

__all__ = ["ReplicaStore", "child_main"]

STATS_EVERY = 1.0
PREVIEW_WAIT = 1.0    # longest a preview request waits for the show's frame
PREVIEW_STALE = 5.0   # an ask unanswered this long is asked again


class ReplicaStore(ParameterStore):
    """The show's store, copied: what web clients write goes to the show as it happens (moves with
    their origin, actions as events); what the show sends is applied without being sent back."""

    def __init__(self, groups, send):
        super().__init__(groups)
        self._send = send
        self._local = threading.local()
        self._seq_lock = threading.Lock()
        self._seq = 0
        self._moved: dict[tuple[str, str], int] = {}  # key -> seq of our newest move of it
        self.add_listener(self._heard)  # before the web server's hub: the show hears a move first

    def _queue(self, ev) -> None:
        # Called under the store's lock (from set or post_event): the show queues it, not us.
        self._send(("event", ev))

    def _heard(self, keys, origin) -> None:
        if getattr(self._local, "applying", False):
            return
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
            for k in keys:
                self._moved[k] = seq
        self._send(("set", [(g, n, self.get(g, n)) for g, n in keys], origin, seq))

    def apply(self, batches, acked: int) -> None:
        """The show's changes: each key our newest move of which the show had not applied when it
        read its values is left alone (the show's value will be ours once it does)."""
        self._local.applying = True
        try:
            for origin, values in batches:
                with self._seq_lock:
                    kept = {g: {n: v for n, v in t.items() if self._moved.get((g, n), 0) <= acked}
                            for g, t in values.items()}
                self.update({g: t for g, t in kept.items() if t}, origin)
        finally:
            self._local.applying = False


class _Preview:
    """The server's `preview` callable: the show's newest (frame, JPEG), asked for when a client
    asks and the one held is older than the preview's interval, so a flood of requests asks the
    show at most `fps` times a second once a frame exists. While an ask is unanswered, requests get
    what is held at once: a slow show makes one request wait (PREVIEW_WAIT at most), not the page."""

    def __init__(self, send, interval: float):
        self._send = send
        self.interval = interval
        self._lock = threading.Lock()
        self._answered_cv = threading.Condition(self._lock)
        self._asked = self._answered = 0
        self._asked_at = -float("inf")
        self._got = None
        self._at = -float("inf")

    def __call__(self):
        with self._lock:
            now = time.monotonic()
            if self._got is not None and now - self._at < self.interval:
                return self._got
            if self._asked > self._answered and now - self._asked_at < PREVIEW_STALE:
                return self._got
            self._asked += 1
            n, self._asked_at = self._asked, now
            self._send(("preview?", n))
            self._answered_cv.wait_for(lambda: self._answered >= n, PREVIEW_WAIT)
            return self._got

    def answer(self, n: int, got) -> None:
        with self._lock:
            if n > self._answered:
                self._answered = n
                self._got, self._at = got, time.monotonic()
                self._answered_cv.notify_all()


def _serve(spec: dict, send):
    """The replica store, its address space and the started WebServer (UnstableError if it cannot bind)."""
    from .oscquery import AddressSpace
    from .webserver import WebServer

    store = ReplicaStore(spec["groups"], send)
    store.apply([(None, spec["values"])], 0)
    extras = dict(spec["extras"])
    space = AddressSpace(store, actions=spec["actions"], name=spec["name"], pieces=spec["pieces"],
                         shown=spec["shown"])
    preview = _Preview(send, spec["preview_interval"]) if spec["preview"] else None
    server = WebServer(store, space, preview=preview, **spec["server"])
    _take_extras(space, extras, {})
    _take_presets(space, store, extras, spec["presets"])
    return store, space, server.start(), preview, extras


def _take_extras(space, extras: dict, new: dict) -> None:
    extras.update(new)
    for key in extras:
        if key != "presets" or "presets" not in space.page_extras:
            space.page_extras[key] = (lambda k=key: extras[k])


def _take_presets(space, store, extras: dict, folder) -> None:
    """List the presets the way the show does: from its folder (read at each query, as the show's
    own server does) or, without one, from the names the show sends with the extras."""
    if folder is False or f"{PREFIX}/preset/save" in space.methods:
        return
    if folder is not None:
        from .presets import PresetBank
        space.add_presets(PresetBank(store, folder).names)
    else:
        space.add_presets(lambda: list((extras.get("presets") or {}).get("names", [])))


def child_main(spec_bytes: bytes, inbox, outbox) -> None:
    """The web process's body (spawned by unstable.live.web_process.WebProcess)."""
    # Ctrl-C and a SIGTERM to the group (systemd, a terminal) reach us too: the show stops us when
    # it stops (ended here first, we would be started again by a show that is closing). Without a
    # show, a SIGTERM ends us.
    parent = multiprocessing.parent_process()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: None if parent is not None and parent.is_alive() else os._exit(0))
    send = outbox.put  # a multiprocessing queue takes puts from any thread
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(SendQueue(send))]
    spec = pickle.loads(spec_bytes)
    root.setLevel(spec["log_level"])
    try:  # below the show's render thread: a whole process niced has no GIL to hold it up with
        os.nice(spec["nice"])
    except (AttributeError, OSError):
        pass
    from ..errors import UnstableError
    try:
        store, space, server, preview, extras = _serve(spec, send)
    except UnstableError as e:
        send(("failed", str(e)))
        return
    except Exception as e:  # said in the show's log; the show goes on without its page
        log.exception("the web process could not start")
        send(("failed", f"the web process could not start: {type(e).__name__}: {e}"))
        return
    send(("started", server.port))
    next_stats = time.monotonic() + STATS_EVERY
    while True:
        now = time.monotonic()
        if now >= next_stats:
            send(("stats", None, dict(server.stats)))
            next_stats = now + STATS_EVERY
        try:
            msg = inbox.get(timeout=0.2)
        except queue.Empty:
            if parent is not None and not parent.is_alive():  # the show was killed: no orphan
                break
            continue
        except (EOFError, OSError):
            break
        kind = msg[0]
        if kind == "values":
            store.apply(msg[1], msg[2])
        elif kind == "shown":
            server.show_pieces(msg[1])
        elif kind == "telemetry":
            server.telemetry(msg[1])
        elif kind == "extras":
            _take_extras(space, extras, msg[1])
        elif kind == "presets":
            _take_presets(space, store, extras, msg[1])
        elif kind == "preview" and preview is not None:
            preview.answer(msg[1], msg[2])
        elif kind == "stats?":
            send(("stats", msg[1], dict(server.stats)))
        elif kind == "stop":
            break
    server.stop()
    send(("stats", None, dict(server.stats)))
    send(("done",))

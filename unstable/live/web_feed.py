"""The show's store to its web process (web_process.py): every change from an origin that is not a
web client's, a lone one at once and a burst in batches, with how far the show had applied the web
process's own moves (so a move of its own that the show had not seen yet is not overwritten there),
and the page's extras (MIDI bindings...) and presets as the show has them."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("unstable.web")

__all__ = ["SpaceView", "StoreFeed", "from_web"]


def from_web(origin) -> bool:
    """A web client's origin (("web:<address>", n), websockets.py): the web process already has it."""
    return isinstance(origin, tuple) and bool(origin) and isinstance(origin[0], str) and origin[0].startswith("web:")


class _Extras(dict):
    """The page's extras; one set (the MIDI link's bindings, after the show's first frame) is sent to
    the web process at once, not at the next round of the feed (a page opened meanwhile lacks it)."""

    def __init__(self, items, on_set: Callable[[], None]):
        super().__init__(items)
        self._on_set = on_set

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self._on_set()


class SpaceView:
    """The show's AddressSpace as the engine and the show's inputs see it (methods, page_extras,
    page_schema...); `add_presets` and what is set in `page_extras` also reach the web process."""

    def __init__(self, space, on_presets: Callable, on_extras: Callable[[], None]):
        self._space = space
        self._on_presets = on_presets
        space.page_extras = _Extras(space.page_extras, on_extras)

    def add_presets(self, names: Callable[[], list[str]]) -> None:
        """List the presets here and in the web process."""
        self._space.add_presets(names)
        self._on_presets(names)

    def __getattr__(self, name):
        return getattr(self._space, name)


class StoreFeed:
    """Feeds the current web process (`child()`: its `send` and `acked`, or None) from the show's store."""

    VALUES_EVERY = 0.02   # the show's changes go in batches at most this often (a lone one at once)
    EXTRAS_EVERY = 0.5

    def __init__(self, store, space: SpaceView, child: Callable):
        self.store = store
        self.space = space
        self.child = child
        self.presets: object = False  # False: none listed; a folder, or None: names sent with the extras
        self.extras: dict = {}
        self._extras_lock = threading.Lock()
        self._dirty: dict = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()       # set: a batch waits for the feed thread
        self._sent_at = -1.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "StoreFeed":
        self.store.add_listener(self.heard)
        self._thread = threading.Thread(target=self._run, name="unstable-web-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.store.remove_listener(self.heard)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def send(self, msg: tuple) -> None:
        child = self.child()
        if child is not None:
            child.send(msg)

    def heard(self, keys, origin) -> None:
        """Store listener: changes from anyone but a web client go to the replica, a lone one at once
        (in the writer's thread: a queue put, the pickling is the queue's thread's), a burst in
        batches every VALUES_EVERY seconds by the feed thread."""
        if from_web(origin):
            return
        with self._lock:
            for k in keys:
                self._dirty[k] = origin
            now = time.monotonic()
            if self._wake.is_set() or now - self._sent_at < self.VALUES_EVERY:
                self._wake.set()
                return
            self._sent_at = now
        self.flush()

    def flush(self) -> None:
        """Send what is waiting for the next batch now (a lone change, a batch, WebProcess.sync)."""
        # Extras first: a change may tell the page to read them again (the end of a MIDI learn).
        self.send_extras()
        self._send_values()

    def _send_values(self) -> None:
        child = self.child()
        # Read and put under the lock: two senders (a writer, the feed thread) keep their order.
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            if child is None or not dirty:
                return
            acked = child.acked  # read before the values: a move applied after it is the newer
            batches: dict = {}
            for (group, name), origin in dirty.items():
                batches.setdefault(origin, {}).setdefault(group, {})[name] = self.store.get(group, name)
            child.send(("values", list(batches.items()), acked))

    def _run(self) -> None:
        next_extras = 0.0
        while not self._stop.is_set():
            self._wake.wait(self.EXTRAS_EVERY)
            if self._stop.is_set():
                return
            if time.monotonic() >= next_extras:
                next_extras = time.monotonic() + self.EXTRAS_EVERY
                self.send_extras()
            if not self._wake.is_set():
                continue
            self._stop.wait(max(0.0, self._sent_at + self.VALUES_EVERY - time.monotonic()))
            with self._lock:
                self._wake.clear()
                self._sent_at = time.monotonic()
            self.flush()

    def send_extras(self) -> None:
        """The page's extras that changed since they were last sent (any thread)."""
        with self._extras_lock:
            self._send_extras()

    def _send_extras(self) -> None:
        extras = {}
        for key, fn in list(self.space.page_extras.items()):
            if key == "presets" and self.presets is not None:
                continue  # the web process reads the presets' folder itself
            try:
                extras[key] = fn()
            except Exception:  # noqa: BLE001 - one extra unreadable now: the page shows the last sent
                log.debug("page extra %s unreadable", key, exc_info=True)
        new = {k: v for k, v in extras.items() if self.extras.get(k) != v}
        if new:
            self.extras.update(new)
            self.send(("extras", new))

    def presets_added(self, names) -> None:
        """The show lists presets: the web process reads the same folder (a PresetBank's `names`),
        or takes the names with the extras."""
        folder = getattr(getattr(names, "__self__", None), "folder", None)
        self.presets = str(folder) if folder is not None else None
        self.send_extras()
        self.send(("presets", self.presets))

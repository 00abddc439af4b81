"""MIDI input for a live show: a controller's port (through mido and python-rtmidi), kept open
across unplugging, its messages mapped into the parameter store, its LEDs fed back, and learn.

    link = MidiLink(store, settings, run_dir).start()   # [midi] port, or --midi PORT
    ...
    link.stop()

The port's messages arrive on rtmidi's thread and go straight through the `MidiMapper` into the
store (a dict write); a watcher thread looks for the port once every `watch` seconds: a port that
disappears is one log line, and it is opened again when it comes back. Feedback leaves on the
watcher's thread too, never in a writer's.

Learn: with the show parameter `midi_learn` on, the next control a performer touches on the page
(or any controller but MIDI) becomes the target, and the next note or CC that arrives is bound to
it: the binding is added at once, appended to `<run>/midi-learn.toml` (loaded at every start) and
`midi_learn` goes off again.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ..schema import SHOW
from .midi_map import MidiMap, MidiMapper, MidiSettings, check_maps
from .osclog import RateLimitedLog

log = logging.getLogger("unstable.midi")

__all__ = ["MidiLink", "LEARN_FILE", "load_learned", "backend"]

LEARN_FILE = "midi-learn.toml"
APIS = {"": None, "alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}


def backend(api: str = ""):
    """mido's rtmidi backend on `api` ('' rtmidi's own choice: ALSA on Linux)."""
    import mido
    rt = APIS[api]
    return mido.Backend("mido.backends.rtmidi" + (f"/{rt}" if rt else ""), load=True)


def load_learned(path: Path, groups, source: str | None = None) -> list[MidiMap]:
    """The bindings learned in earlier runs (`<run>/midi-learn.toml`); one that does not fit the
    show it is loaded into (a parameter renamed) is one log line and left out."""
    from ..config import load_dataclass, read_toml
    from ..errors import ConfigError
    if not path.is_file():
        return []
    try:
        entries = read_toml(path).get("map", [])
    except ConfigError as e:
        log.error("midi learn: %s; no learned bindings loaded", e)
        return []
    out = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        try:
            m = load_dataclass(MidiMap, entry, source=str(path), prefix=f"map[{i}]")
            check_maps([m], groups, str(path), key=f"map[{i}]")
        except ConfigError as e:
            log.error("midi learn: %s; that binding is left out", e)
            continue
        out.append(m)
    return out


class MidiLink:
    """A show's MIDI controller: input port, mapping, feedback, learn, reconnecting."""

    ORIGIN_HOST = "midi"
    RETRY = 10.0  # seconds between looks for a MIDI system that is not there

    def __init__(self, store, settings: MidiSettings, run_dir: Path | None = None, *, source: str = "",
                 api: str = "", watch: float = 0.25, port: str | None = None):
        self.store = store
        self.settings = settings
        self.pattern = settings.port if port is None else port
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.source = source
        self.api = api
        self.watch = watch
        groups = store.groups
        maps = list(settings.map)
        if self.run_dir is not None:
            maps += load_learned(self.run_dir / LEARN_FILE, groups)
        self.mapper = MidiMapper(store, maps)
        self.origin = (self.ORIGIN_HOST, 0)
        self.inport = None
        self.outport = None
        self.port_name: str | None = None
        self.received = 0
        self.reconnects = 0
        self.learn_target: tuple[str, str, float] | None = None  # (group, name, value) touched while learning
        self.learned: list[MidiMap] = []
        self._lock = threading.Lock()
        self._pending: set = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backend = None
        self._said_missing = False
        self.system_down = False
        self.looks = 0                   # times the port was looked for (tests: a missing system is looked for seldom)
        self._warn = RateLimitedLog(log, 5.0)

    # -- lifetime -------------------------------------------------------------------------------

    def start(self) -> "MidiLink":
        """Open the port if it is there (else say so once and keep looking) and start watching."""
        self._backend = backend(self.api)
        self.store.add_listener(self._on_change)
        self._connect()
        self._thread = threading.Thread(target=self._watch, name="unstable-midi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the ports and stop the watcher."""
        self.store.remove_listener(self._on_change)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._close()

    # -- the port -------------------------------------------------------------------------------

    def _names(self, outputs: bool = False) -> list[str]:
        try:
            names = list(self._backend.get_output_names() if outputs else self._backend.get_input_names())
        except Exception as e:  # noqa: BLE001 - no MIDI system (no ALSA sequencer, no JACK): one line
            if not self.system_down:
                log.warning("midi: no MIDI system to list ports on (%s); the show plays on and looks again "
                            "every %g s", e, self.RETRY)
            self.system_down = True
            return []
        if self.system_down:
            log.warning("midi: the MIDI system is there again")
            self.system_down = False
        return names

    def _match(self, names: list[str]) -> str | None:
        want = self.pattern.lower()
        return next((n for n in names if n == self.pattern), None) or next((n for n in names if want in n.lower()), None)

    def _connect(self) -> None:
        self.looks += 1
        names = self._names()
        name = self._match(names)
        if name is None:
            if not self._said_missing and not self.system_down:
                log.warning("midi: no input port matches %r (ports now: %s); the show plays on and opens it "
                            "when it appears", self.pattern, ", ".join(map(repr, names)) or "none")
                self._said_missing = True
            return
        try:
            self.inport = self._backend.open_input(name, callback=self._receive)
        except Exception as e:  # noqa: BLE001 - gone between listing and opening: next round
            self._warn.warning("open", "midi: cannot open %r (%s)", name, e)
            return
        self.port_name = name
        if self.settings.feedback:
            out = self._match(self._names(outputs=True))
            if out is not None:
                try:
                    self.outport = self._backend.open_output(out)
                except Exception as e:  # noqa: BLE001 - input without LEDs still plays
                    self._warn.warning("open_out", "midi: cannot open the feedback port %r (%s)", out, e)
        if self._said_missing:
            self.reconnects += 1
            log.warning("midi: %r is back; reconnected", name)
        else:
            log.info("midi: listening to %r%s", name, f", feedback to {self.outport.name!r}" if self.outport else "")
        self._said_missing = False
        self._queue(set(self.store.keys()))  # the controller's LEDs to the show's state

    def _close(self) -> None:
        for p in (self.inport, self.outport):
            if p is not None:
                try:
                    p.close()
                except Exception:  # noqa: BLE001, S110 - a port already gone cannot be closed twice
                    pass
        self.inport = self.outport = None

    def _watch(self) -> None:
        next_look = time.monotonic() + self.watch
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_look - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                break
            self._send_feedback()
            if time.monotonic() < next_look:
                continue  # woken for feedback: listing ports opens a client, once a `watch` is enough
            # Without a MIDI system each look would open a client (and ALSA prints to stderr): seldom.
            next_look = time.monotonic() + (self.RETRY if self.system_down else self.watch)
            if self.inport is None:
                self._connect()
            elif self.port_name not in self._names():
                log.warning("midi: %r disappeared (unplugged?); the show plays on and reconnects when it is back",
                            self.port_name)
                self._close()
                self._said_missing = True

    # -- in -------------------------------------------------------------------------------------

    def _receive(self, msg) -> None:
        """rtmidi's thread: one message from the controller."""
        self.received += 1
        try:
            if self.learn_target is not None and self._learn(msg):
                return
            self.mapper.handle(msg, self.origin)
        except Exception:  # noqa: BLE001 - a bad message must not end the port's thread
            self._warn.warning("handle", "midi: message %s not applied", msg, exc_info=True)

    def inject(self, msg) -> None:
        """A message as if it came from the port (benchmarks; a file played live)."""
        self._receive(msg)

    # -- learn ----------------------------------------------------------------------------------

    def _learn(self, msg) -> bool:
        group, name, _ = self.learn_target
        value = self.store.get(group, name)  # now: a scene button's click lands before its pad is hit
        if msg.type == "control_change" and msg.control < 120:
            src = {"cc": msg.control}
        elif msg.type == "note_on" and msg.velocity > 0:
            src = {"note": msg.note}
        else:
            return False
        if (group, name) == (SHOW, "scene"):
            m = MidiMap(**src, channel=msg.channel + 1, scene=int(value))
        elif (group, name) in ((SHOW, "record"), (SHOW, "tap")):
            m = MidiMap(**src, channel=msg.channel + 1, action=name)
        else:
            m = MidiMap(**src, channel=msg.channel + 1, param=f"{group}.{name}")
        self.learn_target = None
        self.mapper.add(m)
        self.learned.append(m)
        self._save(m)
        log.info("midi learn: %s -> %s", m.source(), m.target())
        self.store.set(SHOW, "midi_learn", 0)
        return True

    def _save(self, m: MidiMap) -> None:
        if self.run_dir is None:
            return
        fields = {"cc": m.cc, "note": m.note, "channel": m.channel, "param": m.param, "scene": m.scene,
                  "action": m.action}
        body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in fields.items()
                       if v not in ("", -1))
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / LEARN_FILE, "a") as f:
                f.write(f"[[map]]\n{body}\n")
        except OSError as e:
            log.error("midi learn: %s not saved (%s); it works until the show stops", m.source(), e)

    def bindings(self) -> list[dict]:
        """Every mapping, as the page lists them: [{"source": "cc21", "target": "eq.hue", "learned": bool}]."""
        learned = set(self.learned) | set(load_learned(self.run_dir / LEARN_FILE, self.store.groups)
                                          if self.run_dir is not None else ())
        return [{"source": m.source(), "target": m.target(), "learned": m in learned} for m in self.mapper.maps]

    # -- the store's side -----------------------------------------------------------------------

    def _on_change(self, keys, origin) -> None:
        learn = int(self.store.get(SHOW, "midi_learn")) if (SHOW, "midi_learn") in self.store else 0
        if (SHOW, "midi_learn") in keys:
            self.learn_target = None
            every = self.store.keys()
            if learn == 1:
                log.info("midi learn: click a control on the page, then move a knob or press a pad")
            elif 2 <= learn < len(every) + 2:
                self._target(*every[learn - 2])
        elif learn == 1 and origin is not None and origin != self.origin:
            self._target(*keys[-1])  # a fader moved on a controller (TouchOSC) while armed
        if origin != self.origin:
            self.mapper.disengage(keys)
        if self.settings.feedback:
            # The knob that moved a value shows it already; a scene pad lights, and the others go out.
            self._queue(keys if origin != self.origin else [k for k in keys if k == (SHOW, "scene")])

    def _target(self, group: str, name: str) -> None:
        if group == SHOW and name not in ("scene", "record", "tap", "tempo", "master_fade"):
            return  # midi_learn itself
        self.learn_target = (group, name, self.store.get(group, name))
        log.info("midi learn: move a knob or press a pad for %s/%s", group, name)

    def _queue(self, keys) -> None:
        with self._lock:
            self._pending.update(keys)
        self._wake.set()

    def _send_feedback(self) -> None:
        with self._lock:
            keys, self._pending = self._pending, set()
        if not keys or self.outport is None:
            return
        for msg in self.mapper.feedback(keys):
            try:
                self.outport.send(msg)
            except Exception as e:  # noqa: BLE001 - the watcher notices a port that went away
                self._warn.warning("send", "midi: feedback to %r failed (%s)", self.port_name, e)
                return

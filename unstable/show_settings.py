"""The tables of a show file that set up the machine rather than the art: where controllers and
browsers reach the show (`[osc]`, `[web]`, `[controllers]`), how much of the machine training takes
(`[training]`), how often actions may fire (`[actions]`) and what the show may keep on disk
(`[disk]`). unstable.show holds the rest and re-exports these.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .config import setting

__all__ = ["OscSettings", "WebSettings", "ControllerSettings", "TrainingBudget", "ActionSettings", "DiskSettings"]


@dataclass(frozen=True)
class OscSettings:
    """`[osc]`: where performers' controllers reach the show, and who gets feedback."""

    enabled: bool = setting(True, doc="listen for OSC at all")
    host: str = setting("127.0.0.1", doc="address to listen on (anything but loopback needs `allow`)")
    port: int = setting(9000, ge=0, le=65535, doc="UDP port to listen on (0: any free port)")
    allow: tuple[str, ...] = setting((), doc="controller hosts or networks accepted, e.g. ['192.168.1.0/24'] "
                                            "(empty: anyone who can reach a loopback socket)")
    subscribe: tuple[str, ...] = setting((), doc="controllers that get feedback from the start, as 'host:port'")
    feedback_interval: float = setting(0.01, ge=0, le=10, doc="seconds between feedback batches")

    def __post_init__(self):
        for i, entry in enumerate(self.subscribe):
            _parse_target(entry, f"subscribe[{i}]")
        _check_allow(self.allow)

    def targets(self) -> list[tuple[str, int]]:
        """The `subscribe` entries as (host, port)."""
        return [_parse_target(e, "subscribe") for e in self.subscribe]


def _check_allow(allow) -> None:
    """Every `allow` entry an IP address or network (the OSC and web allow-lists alike)."""
    for i, entry in enumerate(allow):
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError(f"allow[{i}]: {entry!r} is not an IP address or network, "
                             "expected e.g. '192.168.1.20' or '192.168.1.0/24'") from None


def _parse_target(entry: str, key: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{key}: {entry!r} is not 'host:port', expected e.g. '192.168.1.20:9001'")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class WebSettings:
    """`[web]`: the OSCQuery server and the control page (HTTP and websocket on one port)."""

    enabled: bool = setting(True, doc="serve OSCQuery and the control page at all")
    host: str = setting("127.0.0.1", doc="address to listen on ('0.0.0.0' opens it to the LAN: other "
                        "machines then need the token, or an address in `allow`)")
    port: int = setting(9080, ge=0, le=65535, doc="TCP port of the page, the OSCQuery tree and its websocket "
                        "(0: any free port)")
    token: str = setting("", doc="what a browser on another machine must show (in the printed URL); '' makes "
                         "a new random one at each start")
    allow: tuple[str, ...] = setting((), doc="hosts or networks that need no token (OSCQuery tools such as "
                                     "Chataigne cannot send one), e.g. ['192.168.1.20']")
    advertise: bool = setting(True, doc="announce _oscjson._tcp and _osc._udp over zeroconf when listening "
                              "beyond loopback")
    preview_fps: float = setting(4.0, gt=0, le=30, doc="preview frames a second on the page (only while a "
                                 "page is watching)")
    preview_width: int = setting(320, ge=16, le=4096, doc="preview width in pixels (at most)")
    hosts: tuple[str, ...] = setting((), doc="names this machine is reached by besides its own host name and "
                                     "addresses (a DNS name, e.g. ['show.example.org']); a request for any "
                                     "other Host is refused, against DNS rebinding")
    idle_timeout: float = setting(5.0, gt=0, le=3600, doc="seconds a connection may stay open without a "
                                  "request (a websocket is not idle)")
    max_connections: int = setting(256, ge=1, le=65536, doc="connections open at once, in all (at most half "
                                   "the process's file-descriptor limit)")
    max_per_address: int = setting(32, ge=1, le=65536, doc="connections open at once from one address (an "
                                   "IPv6 /64 counts as one)")
    penalty: float = setting(30.0, ge=0, le=3600, doc="seconds an address is refused at once after it flooded "
                             "(over max_per_address, a request begun and never finished, a websocket closed "
                             "for flooding); never loopback (0: off)")
    process: bool = setting(True, doc="serve from a process of its own (no frame waits for the web "
                            "server's Python, a connection flood stays off the show's files); false: a "
                            "thread of the show")
    nice: int = setting(5, ge=0, le=19, doc="how much lower the web process's CPU priority is than the "
                        "show's (Linux niceness; with `process`)")

    def __post_init__(self):
        _check_allow(self.allow)
        for i, name in enumerate(self.hosts):
            bare = name.strip("[]")
            if not bare or not all(ch.isalnum() or ch in ".-:" for ch in bare):
                raise ValueError(f"hosts[{i}]: {name!r} is not a host name or address, expected e.g. "
                                 "'show.example.org'")
        if self.token and (len(self.token) < 8 or not self.token.replace("-", "").replace("_", "").isalnum()):
            raise ValueError(f"token: {self.token!r} should be at least 8 letters, digits, '-' or '_' "
                             "(it goes in a URL), or '' for a random one")


@dataclass(frozen=True)
class ControllerSettings:
    """`[controllers]`: the TouchOSC / Max layouts `unstable controllers SHOW` writes."""

    touchosc: str = setting("", doc="TouchOSC file (.tosc) to write, relative to the show file ('' = none)")
    max: str = setting("", doc="Max patch (.maxpat) to write, relative to the show file ('' = none)")
    host: str = setting("127.0.0.1", doc="the show machine's address, as the controller must send to it")
    feedback_port: int = setting(9001, ge=1, le=65535, doc="port the controller listens on for feedback")

    def __post_init__(self):
        if self.touchosc and not self.touchosc.endswith(".tosc"):
            raise ValueError(f"touchosc: {self.touchosc!r} should end in .tosc")
        if self.max and not self.max.endswith(".maxpat"):
            raise ValueError(f"max: {self.max!r} should end in .maxpat")


@dataclass(frozen=True)
class TrainingBudget:
    """`[training]`: how much of the machine live training may take. The display always comes first."""

    on: bool = setting(True, doc="train the pieces while the show runs")
    duty: float = setting(1.0, gt=0, le=1, doc="largest fraction of wall time the training thread may "
                          "spend in steps (it sleeps for the rest)")
    max_steps_per_second: float = setting(0.0, ge=0, doc="cap on each piece's steps per second (0: no cap)")
    threads: int = setting(1, ge=1, le=256, doc="torch threads of the training thread (CPU)")
    render_threads: int = setting(1, ge=1, le=256, doc="torch threads of the render loop (CPU)")
    nice: int = setting(10, ge=0, le=19, doc="how much lower the training thread's CPU priority is than "
                        "the display's (Linux niceness added to the thread; 0: the same)")
    sync_every: float = setting(0.25, gt=0, le=60, doc="seconds between copies of the trained weights "
                                "into the sampling mirror the display draws from")
    checkpoint_every: float = setting(300.0, ge=0, doc="seconds between checkpoints of each piece "
                                      "(0: only at the end); always one at the end")
    process: bool = setting(True, doc="on a CPU, train in a process of its own (the display keeps its "
                            "interpreter to itself: no frame waits for a training step's Python); false: a "
                            "thread of the show, as on a GPU")


@dataclass(frozen=True)
class ActionSettings:
    """`[actions]`: how often controllers may start and stop recordings, take stills and refresh a
    piece's directions or clusters. A burst of requests is one action: within the interval only the
    newest wish counts, applied when it ends."""

    record_min_interval: float = setting(2.0, ge=0, le=3600, doc="seconds between a recording's start and "
                                         "its stop (or the next start)")
    still_min_interval: float = setting(1.0, ge=0, le=3600, doc="seconds between stills")
    still_checkpoint_every: float = setting(60.0, ge=0, doc="a still also writes checkpoints, at most this "
                                            "often (seconds)")
    refresh_min_interval: float = setting(5.0, ge=0, le=3600, doc="seconds between two computations of a "
                                          "piece's directions (or of its clusters): the first press acts at "
                                          "once, presses within the interval are one computation at its end")


@dataclass(frozen=True)
class DiskSettings:
    """`[disk]`: what a show may keep on disk over weeks (recordings, stills, telemetry, automation)."""

    min_free_mb: float = setting(512.0, ge=0, doc="a recording stops, and none starts, with less free space "
                                 "than this on its disk: the checkpoints keep the rest")
    stills_keep: int = setting(1000, ge=0, doc="newest stills kept in <run>/stills (0: all)")
    recordings_budget_mb: float = setting(20000.0, ge=0, doc="recordings started over OSC (<run>/record-*.mp4): "
                                          "the oldest are removed past this many MB (0: no limit)")
    telemetry_max_mb: float = setting(64.0, ge=0, doc="--telemetry is rotated past this many MB, one older "
                                      "file kept (0: never)")
    automation_max_mb: float = setting(512.0, ge=0, doc="a live automation file (a recording's, or --automation) "
                                       "stops past this many MB, with one logged line: the show goes on and the "
                                       "file replays up to there (0: no cap; 64 MB free on its disk stays the floor)")

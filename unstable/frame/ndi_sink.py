"""NDI out: the composed frame (and, with `panels`, each panel) published as NDI sources.

    sink = NdiSink(NdiSettings(name="gallery", panels=True), size=(1920, 1080), fps=30,
                   panel_images=lambda: {"eq/g0": tensor_3hw, ...})
    sink.put(n, compositor)       # in the render thread, like every sink (unstable.frame.sinks)

A mixer (Resolume, TouchDesigner, OBS, vMix) sees `<host> (gallery)` and, with panels,
`<host> (gallery.eq.g0)`: NDI turns '/' (and ':', '|') in a source name into spaces, so a panel's
`piece/panel` is written with dots. Each source sends on its own thread: the render thread only copies the
frame into a free buffer and leaves it in a one-frame mailbox. A frame still waiting when the next
arrives is replaced (dropped, counted), and with no free buffer a frame is not even read, so a
receiver that stops reading, a slow network or NDI's own compression costs the show at most one
copy per frame, never a wait and never a queue that grows. With no receiver connected nothing is
read back at all. The whole frame is read back as RGBX into the mailbox's buffer (`read_rgbx`:
GL's four components read several times faster than three, and NDI sends four), so it reaches
cyndilib with no repacking and no copy of ours. NDI stamps each frame with the wall time it was
handed over (the receiver's `timestamp`); `NdiSource.frame_at(timestamp)` names the show frame sent
then, and a metadata frame `<unstable frame="n"/>` goes before each video frame.

Discovery without multicast (a venue network with IGMP off, a loopback test): NDI reads
`$NDI_CONFIG_DIR/ndi-config.v1.json`; `{"ndi": {"networks": {"ips": "192.168.1.20,127.0.0.1"}}}`
lists the machines to ask directly (`write_ndi_config` writes one).

The NDI runtime comes inside `cyndilib`'s wheel (NDI SDK licence, Vizrt NDI AB): NDI® is a
registered trademark of Vizrt NDI AB, https://ndi.video.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..config import setting

log = logging.getLogger("unstable.ndi")

__all__ = ["NdiSettings", "NdiSink", "NdiSource", "write_ndi_config", "check_ndi_name"]

MAX_NAME = 200  # NDI source names beyond this are cut by some receivers


def check_ndi_name(name: str, where: str = "outputs.ndi.name") -> str:
    """`name` if NDI publishes it as it is; ValueError naming `where` otherwise (NDI would rename a
    source with '/', ':' or '|' in it, and parentheses wrap the name in `<host> (name)`)."""
    if not isinstance(name, str) or len(name) > MAX_NAME or any(c in name for c in '()\\/:|"') \
            or not name.isprintable():
        raise ValueError(f"{where}: {name!r} cannot name an NDI source (at most {MAX_NAME} characters, "
                         "none of ( ) / \\ : | \" or control characters)")
    return name


@dataclass(frozen=True)
class NdiSettings:
    """`[outputs.ndi]`: publish the show's frames as NDI sources (present: on)."""

    name: str = setting("", doc="the NDI source name ('' : the show's name); panels are NAME.<piece>.<panel>")
    panels: bool = setting(False, doc="also publish each panel as its own source, at the piece's own size")
    groups: str = setting("", doc="NDI groups to publish in ('' : the default group), e.g. 'stage,foh'")
    nice: int = setting(5, ge=0, le=19, doc="how much lower the sending threads' CPU priority is than the "
                        "display's (Linux niceness; NDI's encoder runs there): on a busy machine NDI drops "
                        "frames before the show does")

    def __post_init__(self):
        check_ndi_name(self.name, "name")


def write_ndi_config(folder: str | os.PathLike, ips: list[str]) -> Path:
    """Write `folder/ndi-config.v1.json` naming the hosts NDI asks for sources directly (no
    multicast discovery); point NDI_CONFIG_DIR at `folder` before the first NDI call."""
    path = Path(folder) / "ndi-config.v1.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ndi": {"networks": {"ips": ",".join(ips), "discovery": ""},
                                        "multicast": {"send": {"enable": False}, "recv": {"enable": False}}}},
                               indent=2))
    return path


class NdiSource:
    """One NDI source fed from the render thread through a one-frame mailbox, sent on its own
    thread. `offer` never waits for the network; `send` is the (replaceable) sending step."""

    BUFFERS = 3  # one being filled, one waiting, one being sent: never more
    POLL = 0.25  # seconds between asking NDI for receivers while nothing is sent

    def __init__(self, name: str, fps: float, groups: str = "",
                 send: Callable[[int, np.ndarray], None] | None = None, nice: int = 0):
        self.name = name
        self.nice = nice
        self.fps = Fraction(fps).limit_denominator(1001)
        self.groups = groups
        self._custom_send = send is not None  # a replacement sending step (tests): always wanted
        self._send = send or self._send_ndi
        self._cond = threading.Condition()
        self._pending: tuple[int, object] | None = None
        self._free: list[np.ndarray] = []
        self._made = 0
        self._stop = False
        self.offered = 0
        self.sent = 0
        self.dropped = 0           # frames replaced in the mailbox or not taken (no free buffer)
        self.last_sent = -1
        self.receivers = 0         # connected receivers, as NDI said after the last send or poll
        self.sends: collections.deque = collections.deque(maxlen=4096)  # (frame, before, after) wall times
        self.error: str | None = None
        self._sender = None
        self._video = None
        self._rgba: np.ndarray | None = None  # [H, W, 4] uint8 a three-channel frame spread to RGBX
        self._alpha = False
        self._size: tuple[int, int] | None = None
        self._thread = threading.Thread(target=self._run, name=f"unstable-ndi {name}", daemon=True)
        self._thread.start()

    # -- the render thread's side -----------------------------------------------------------------

    def offer(self, frame: int, image) -> bool:
        """Hand frame `frame` over: an [H, W, 3|4] uint8 array (copied: the caller may reuse it) or
        a [3|4, H, W] tensor in 0..1 (kept as it is and converted on the sending thread). Returns
        False when it was dropped at once (no free buffer)."""
        array = isinstance(image, np.ndarray)
        with self._cond:
            go, buf = self._claim(image.shape if array else None)
        if not go:
            return False
        if array:
            np.copyto(buf, image)  # outside the lock: this buffer is the render thread's until posted
        self._post(frame, buf if array else image.detach(), False)
        return True

    def offer_into(self, frame: int, shape: tuple[int, int, int], fill: Callable[[np.ndarray], object]) -> bool:
        """Hand frame `frame` over by filling a free [H, W, 4] uint8 buffer with `fill(buffer)`
        (the compositor's `read_rgbx`), sent as opaque RGBX: no copy and no repacking of our own.
        False when dropped at once (no free buffer: then `fill` is not even called)."""
        with self._cond:
            go, buf = self._claim(shape)
        if not go:
            return False
        try:
            fill(buf)  # outside the lock: this buffer is the render thread's until posted
        except BaseException:
            with self._cond:
                self._free.append(buf)
            raise
        self._post(frame, buf, True)
        return True

    def _claim(self, shape) -> tuple[bool, np.ndarray | None]:
        """Under the lock: count an offer, replace a frame still waiting (dropped), claim a buffer of
        `shape` (None: none needed), the replaced one's if it fits. (False, None): dropped at once."""
        self.offered += 1
        if self._stop:
            return False, None
        old = None
        if self._pending is not None:  # the sender has not taken the last one: it is replaced
            self.dropped += 1
            old, self._pending = self._pending[1], None
        if isinstance(old, np.ndarray):
            if shape is not None and old.shape == tuple(shape):
                return True, old
            self._free.append(old)
        if shape is None:
            return True, None
        buf = self._buffer(shape)
        if buf is None:
            self.dropped += 1
            return False, None
        return True, buf

    def _post(self, frame: int, item, rgbx: bool) -> None:
        with self._cond:
            self._pending = (frame, item, rgbx)
            self._cond.notify()

    def _buffer(self, shape) -> np.ndarray | None:
        while self._free:
            b = self._free.pop()
            if b.shape == tuple(shape):
                return b
            self._made -= 1  # a buffer of an old size: let it go
        if self._made >= self.BUFFERS:
            return None
        self._made += 1
        return np.empty(shape, np.uint8)

    # -- the sending thread -------------------------------------------------------------------

    def _run(self) -> None:
        if self.nice > 0 and hasattr(os, "setpriority"):
            # Linux schedules threads one by one, and the threads NDI starts for this source (made
            # when it opens, from this thread) inherit its niceness: compressing 1080p takes the
            # CPU the display leaves, as training does.
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
            except OSError as e:
                log.warning("NDI source %r: could not lower its thread's priority: %s", self.name, e)
        failures = 0
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    if not self._cond.wait(self.POLL):
                        break
                if self._stop:
                    return
                if self._pending is None:  # nothing to send: see whether anyone connected
                    self._poll()
                    continue
                frame, item, rgbx = self._pending
                self._pending = None
            pooled = item if isinstance(item, np.ndarray) else None  # a mailbox buffer, to give back
            try:
                if pooled is None:
                    item, rgbx = _to_hwc4(item)  # a tensor: converted here, not on the render thread
                if self._custom_send:  # a replacement step takes [H, W, 3|4] as `offer` does
                    self._send(frame, item[..., :3] if rgbx else item)
                else:
                    self._send_ndi(frame, item, rgbx)
                self.sent += 1
                self.last_sent = frame
                failures = 0
                self._poll()
            except Exception as e:  # an output failing must never reach the show
                failures += 1
                self.error = f"{type(e).__name__}: {e}"[:200]
                if failures == 1 or failures % 1000 == 0:
                    log.error("NDI source %r: sending frame %d failed (%d in a row): %s; the show goes on",
                              self.name, frame, failures, self.error)
            finally:
                if pooled is not None:
                    with self._cond:
                        self._free.append(pooled)

    def frame_at(self, timestamp: float) -> int | None:
        """The frame whose sending began at or before `timestamp` (a received frame's NDI
        timestamp, POSIX seconds) and ended at or after it; None if no recent one did."""
        for frame, t0, t1 in reversed(self.sends):
            if t0 <= timestamp <= t1:
                return frame
        return None

    def wants(self) -> bool:
        """Whether a frame is worth offering: before the first (it opens the source, so that
        receivers can find it) and while a receiver is connected. Without one the show skips
        the read-back and the copy altogether."""
        return self._custom_send or self._sender is None or self.receivers > 0

    def _poll(self) -> None:
        s = self._sender
        if s is not None:
            try:
                self.receivers = s.get_num_connections(0.0)
            except Exception:
                self.receivers = 1  # unknown: keep sending

    def _send_ndi(self, frame: int, rgb: np.ndarray, rgbx: bool = False) -> None:
        """Send one [H, W, 3|4] uint8 frame through cyndilib: RGBX (`rgbx`: opaque) or RGBA, as it is;
        three channels are spread into RGBX first, a strided copy dearer than NDI's compression."""
        h, w, c = rgb.shape
        alpha = c == 4 and not rgbx
        if self._video is None or self._size != (w, h) or self._alpha != alpha:
            self._open(w, h, alpha=alpha)
        if c == 4:
            data = rgb
        else:
            if self._rgba is None:
                self._rgba = np.full((h, w, 4), 255, np.uint8)
            self._rgba[..., :3] = rgb
            data = self._rgba
        t0 = time.time()  # NDI's timestamp of the frame falls between these two
        # A metadata frame before each video frame: without one, receivers in other processes on
        # the same host can get no video at all (cause unknown: NDI's or cyndilib's receive
        # side); it also tells a receiver the frame's number, though it may arrive a
        # frame apart from the picture (the timestamp is exact).
        self._sender.send_metadata("unstable", {"frame": str(frame)})
        self._sender.write_video(data.reshape(-1))
        self.sends.append((frame, t0, time.time()))

    def _open(self, w: int, h: int, alpha: bool) -> None:
        """(Re)make the NDI sender at this size (a piece's panels may change size)."""
        from cyndilib import FourCC, Sender, VideoSendFrame
        self._close_sender()
        vf = VideoSendFrame()
        vf.set_resolution(w, h)
        vf.set_fourcc(FourCC.RGBA if alpha else FourCC.RGBX)
        vf.set_frame_rate(self.fps)
        # The show paces itself: NDI's own clocking would make this thread sleep, not the show.
        sender = Sender(self.name, ndi_groups=self.groups, clock_video=False)
        sender.set_video_frame(vf)
        sender.open()
        self._sender, self._video, self._alpha, self._size = sender, vf, alpha, (w, h)
        self._rgba = None  # [H, W, 4] uint8 for three-channel frames, made when one comes

    def _close_sender(self) -> None:
        if self._sender is not None:
            try:
                self._sender.close()
            except Exception:
                log.debug("closing NDI source %r failed", self.name, exc_info=True)
        self._sender = self._video = self._rgba = self._size = None

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the thread (the frame being sent finishes) and close the source; False if the
        thread did not stop within `timeout` (a wedged network call: it is left, a daemon)."""
        with self._cond:
            self._stop = True
            self._pending = None
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._close_sender()
        return True


def _to_hwc4(t) -> tuple[np.ndarray, bool]:
    """[3|4, H, W] tensor in 0..1 -> ([H, W, 4] uint8 on the CPU, opaque): RGBX in the one
    transposing copy (a fourth byte of 255), or RGBA."""
    import torch
    c, h, w = t.shape
    out = torch.full((h, w, 4), 255, dtype=torch.uint8)
    out.permute(2, 0, 1)[:c].copy_(t.detach().float().clamp(0, 1).mul(255).add(0.5).to("cpu", torch.uint8))
    return out.numpy(), c == 3


class NdiSink:
    """A frame-pipeline sink publishing the composed frame as NDI source `settings.name` at the
    show's size and rate, and with `settings.panels` each panel as `NAME.<piece>.<panel>`
    (`panel_images()` gives {display: [3, H, W]}, the pipeline's newest image of each panel)."""

    RGBX = True  # read back as RGBX (False: three channels, spread after; bench_ndi.py --compare)

    def __init__(self, settings: NdiSettings, name: str, size: tuple[int, int], fps: float, *,
                 panel_images: Callable[[], Mapping[str, object]] | None = None,
                 send: Callable[[str], Callable[[int, np.ndarray], None]] | None = None):
        from ..errors import UnstableError
        try:  # fail here, at opening, with one clear line, not on the first frame
            import cyndilib  # noqa: F401
        except ImportError as e:
            raise UnstableError(f"NDI out needs cyndilib (pip install 'cyndilib>=0.1.3,<0.2'): {e}") from None
        try:
            self.name = check_ndi_name(settings.name or name, "--ndi / outputs.ndi.name")
        except ValueError as e:
            raise UnstableError(str(e)) from None
        self.size = size
        self.fps = fps
        self.groups = settings.groups
        self.nice = settings.nice
        self._make_send = send
        self.frame = self._source(self.name)
        self.panel_images = panel_images if settings.panels else None
        self.panels: dict[str, NdiSource] = {}
        self._last: dict[str, object] = {}
        self.idle = 0  # frames not read back: nobody was receiving the whole frame

    def _source(self, name: str) -> NdiSource:
        send = self._make_send(name) if self._make_send is not None else None
        return NdiSource(name, self.fps, self.groups, send=send, nice=self.nice)

    def put(self, frame: int, compositor) -> None:
        """Offer frame `frame` (read back: [H, W, 3] uint8) and each panel sampled anew. A sender
        that is behind has its waiting frame replaced by this one: the newest frame goes out."""
        if self.frame.wants():
            read_rgbx = getattr(compositor, "read_rgbx", None) if self.RGBX else None
            if read_rgbx is not None:  # straight into the mailbox, as NDI sends it
                w, h = getattr(compositor, "size", self.size)
                self.frame.offer_into(frame, (h, w, 4), read_rgbx)  # [H, W, 4] uint8
            else:
                self.frame.offer(frame, compositor.read())  # [H, W, 3] uint8, a reused buffer: copied
        else:
            self.idle += 1
        if self.panel_images is None:
            return
        for display, image in self.panel_images().items():
            if image is None or self._last.get(display) is image:
                continue  # a panel not sampled this frame holds: the receiver keeps its last frame
            self._last[display] = image
            src = self.panels.get(display)
            if src is None:
                src = self.panels[display] = self._source(f"{self.name}.{display.replace('/', '.')}")
            if src.wants():
                src.offer(frame, image)

    def stats(self) -> dict:
        """{source name: {offered, sent, dropped, receivers}}."""
        return {s.name: {"offered": s.offered, "sent": s.sent, "dropped": s.dropped, "receivers": s.receivers}
                for s in [self.frame, *self.panels.values()]}

    def close(self) -> None:
        for s in [self.frame, *self.panels.values()]:
            if not s.close():
                log.warning("NDI source %r: its sending thread did not stop; left behind", s.name)

"""A small copy of the composed frame for the control page's live preview: a frame-pipeline sink
(beside the window and the recorder, unstable.frame.sinks) that the web server reads."""

from __future__ import annotations

import io
import threading
import time
from typing import Callable

import numpy as np

__all__ = ["PreviewSink"]


class PreviewSink:
    """A frame-pipeline sink that keeps a small copy of the composed frame for the page.

    It reads pixels back only while a browser is watching (a preview fetched in the last
    `idle` seconds) and at most `fps` times a second, so a show nobody watches pays nothing.
    The render thread only copies a strided, downscaled array; JPEG encoding happens in the
    web thread when a browser asks.
    """

    def __init__(self, fps: float = 4.0, width: int = 320, idle: float = 3.0,
                 clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / max(fps, 0.1)
        self.width = int(width)
        self.idle = float(idle)
        self._clock = clock
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self._number = -1
        self._taken = -float("inf")
        self._asked = -float("inf")
        self._jpeg: tuple[int, bytes] | None = None
        self.reads = 0  # readbacks made for the preview (tests and benchmarks check it stays 0 unwatched)

    @property
    def watched(self) -> bool:
        return self._clock() - self._asked < self.idle

    def put(self, frame: int, compositor) -> None:
        now = self._clock()
        if now - self._asked >= self.idle or now - self._taken < self.interval:
            return
        self._taken = now
        rgb = compositor.read()  # [H, W, 3] uint8, a reused buffer
        step = max(1, -(-rgb.shape[1] // self.width))
        small = np.ascontiguousarray(rgb[::step, ::step])
        self.reads += 1
        with self._lock:
            self._frame, self._number = small, frame

    def jpeg(self) -> tuple[int, bytes] | None:
        """(frame number, JPEG bytes) of the newest preview, or None before the first; marks the
        preview as watched."""
        self._asked = self._clock()
        with self._lock:
            frame, number = self._frame, self._number
        if frame is None:
            return None
        if self._jpeg is not None and self._jpeg[0] == number:
            return self._jpeg
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=80)
        self._jpeg = (number, buf.getvalue())
        return self._jpeg

    def close(self) -> None:
        pass

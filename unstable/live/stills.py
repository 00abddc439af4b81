"""A live show's PNG stills: written in the background, atomically, the newest `keep` kept.

A still is asked for over OSC or the page at most once a second, but a flood must stay bounded:
while `MAX_THREADS` stills are still being written another is refused (one rate-limited line).
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from ..control.osclog import RateLimitedLog
from ..disk import keep_newest

__all__ = ["StillWriter"]

_unique = itertools.count()


class StillWriter:
    """Stills of show `show` into `folder` (`<show>-<number>.png`). `refused(path)` says (and logs)
    when the disk is too full for one; `keep` > 0 keeps only the newest that many."""

    MAX_THREADS = 2  # stills still being written; more are refused (a flood is bounded)

    def __init__(self, folder: Path, show: str, keep: int, warn: RateLimitedLog,
                 refused: Callable[[Path], bool]):
        self.folder = folder
        self.show = show
        self.keep = keep
        self.warn = warn
        self.refused = refused
        self.paths: list[str] = []  # the stills asked for, newest last (bounded)
        self._threads: list[threading.Thread] = []

    def write(self, frame: np.ndarray, number: int) -> Path | None:
        """Write a PNG of `frame` ([H, W, 3] uint8, copied) in the background; returns its path
        (None: refused)."""
        path = self.folder / f"{self.show}-{number:07d}.png"
        self._threads = [x for x in self._threads if x.is_alive()]
        if len(self._threads) >= self.MAX_THREADS:
            self.warn.warning("stills-busy", "still %s skipped: %d stills are still being written",
                              path, len(self._threads))
            return None
        if self.refused(path):
            return None
        t = threading.Thread(target=self._write, args=(path, frame.copy()), name="unstable-still", daemon=True)
        t.start()
        self._threads.append(t)
        if len(self.paths) >= 1000:
            del self.paths[:500]
        self.paths.append(str(path))
        return path

    def _write(self, path: Path, frame: np.ndarray) -> None:
        import imageio.v3 as iio
        # A unique temporary name: two stills of one frame must not write into each other.
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{next(_unique)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(tmp, frame, extension=".png")
            tmp.replace(path)
        except OSError as e:
            self.warn.warning("still-failed", "still %s failed: %s", path, e)
            tmp.unlink(missing_ok=True)
            return
        if self.keep > 0:
            keep_newest(path.parent.glob(f"{self.show}-*.png"), count=self.keep)

    def close(self) -> None:
        """Wait (10 s at most each) for the stills being written."""
        for t in self._threads:
            t.join(10)

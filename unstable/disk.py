"""Disk that stays bounded over weeks: free space, retention of numbered files, rotated logs.

Every file a run or a show keeps adding goes through one of these:

- `free_bytes(path)`: free space on the filesystem that holds `path` (or would hold it). A live
  recording stops below a floor, so checkpoints never compete with it for the last bytes.
- `thin(files, ...)`: numbered files (kept checkpoints, grids) thinned to the newest few plus
  logarithmically spaced older ones (about `per_octave` per doubling of the step), then to a byte
  budget. The rule for "log-spaced" depends on a file's number alone, so a file kept today is kept
  tomorrow (until the budget says otherwise), and the early steps, where most happens, stay dense.
- `RotatingLines`: a JSON-lines log appended to across restarts and rotated past a size
  (`log.jsonl` -> `log.1.jsonl` -> `log.2.jsonl`, the oldest dropped).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from .errors import UnstableError

log = logging.getLogger("unstable.disk")

__all__ = ["free_bytes", "is_no_space", "log_spaced", "thin", "RotatingLines", "MB", "no_space_line",
           "keep_newest", "exclusive_lock"]

MB = 1 << 20


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to an unprivileged writer on the filesystem of `path` (its nearest existing
    parent when it does not exist yet); a very large number when that cannot be told."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
        return st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            return 1 << 62


def is_no_space(e: BaseException) -> bool:
    """True when `e` says the disk (or a quota) is full, however it was wrapped: torch reports a
    full disk while saving as "unexpected pos ..." rather than ENOSPC."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if "no space left" in text or "unexpected pos" in text or "disk quota" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def no_space_line(path: str | os.PathLike) -> str:
    """The one line a full disk deserves: where, and how much is left."""
    return f"no space left on the disk of {path} ({free_bytes(Path(path).parent) / MB:.1f} MB free)"


def log_spaced(n: int, per_octave: int) -> bool:
    """Whether number `n` (>= 0) is on the log-spaced grid: every number below `per_octave`, then
    `per_octave` evenly spaced numbers in each doubling [2^k, 2^(k+1)). `per_octave` 0: all."""
    if per_octave <= 0 or n < 2 * per_octave:
        return True
    k = n.bit_length() - 1
    spacing = max(1, (1 << k) // per_octave)
    return n % spacing == 0


def thin(files: Sequence[tuple[int, Path]], *, unit: int = 1, recent: int = 4, per_octave: int = 4,
         budget_bytes: int = 0) -> list[Path]:
    """Remove files to keep the newest `recent`, the log-spaced older ones (numbers `step // unit`,
    see `log_spaced`), and within `budget_bytes` (0: no budget) by removing, one at a time, the file
    whose neighbours are closest in log-steps (the first and the newest are removed last).

    `files` are (step, path). Returns the paths removed. A file that cannot be removed is skipped.
    """
    files = sorted(files, key=lambda x: x[0])
    keep = []
    removed: list[Path] = []
    newest = {p for _, p in files[-recent:]} if recent > 0 else set()
    for step, path in files:
        if path in newest or log_spaced(step // max(1, unit), per_octave):
            keep.append((step, path))
        else:
            removed.append(path)
    if budget_bytes > 0:
        sizes = {}
        for _, p in keep:
            try:
                sizes[p] = p.stat().st_size
            except OSError:
                sizes[p] = 0
        total = sum(sizes.values())
        while total > budget_bytes and len(keep) > 1:
            if len(keep) == 2:
                i = 0  # the newest stays: it is what a resume or a timelapse ends on
            else:
                def gap(i):
                    return math.log1p(keep[i + 1][0]) - math.log1p(keep[i - 1][0])
                i = min(range(1, len(keep) - 1), key=gap)
            p = keep.pop(i)[1]
            total -= sizes.get(p, 0)
            removed.append(p)
    gone = []
    for p in removed:
        try:
            p.unlink()
            gone.append(p)
        except FileNotFoundError:
            gone.append(p)
        except OSError as e:
            log.warning("could not remove %s: %s", p, e)
    return gone


def keep_newest(paths: Iterable[Path], count: int = 0, budget_bytes: int = 0) -> list[Path]:
    """Remove the oldest files (by modification time) past the newest `count` (0: any number) and
    past `budget_bytes` in all (0: no budget). Returns the paths removed."""
    entries = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        entries.append((st.st_mtime_ns, p.name, p, st.st_size))
    entries.sort(reverse=True)  # newest first
    removed, total = [], 0
    for i, (_, _, p, size) in enumerate(entries):
        total += size
        if (count and i >= count) or (budget_bytes and total > budget_bytes and i > 0):
            try:
                p.unlink()
                removed.append(p)
            except OSError as e:
                log.warning("could not remove %s: %s", p, e)
    return removed


class RotatingLines:
    """A text log appended to (never truncated on restart) and rotated past `max_bytes`:
    `name.ext` -> `name.1.ext` -> ... -> `name.<keep>.ext`; the oldest is dropped. `max_bytes` 0:
    never rotated. Lines are written whole; `flush()` to make them visible to readers."""

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = 0, keep: int = 2, buffering: int = -1):
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.keep = max(0, int(keep))
        self.buffering = buffering
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=buffering)
        self._size = self._file.tell()

    def rotated(self, i: int) -> Path:
        """The i-th older file (1 = the newest rotated one)."""
        return self.path.with_name(f"{self.path.stem}.{i}{self.path.suffix}")

    def write(self, line: str) -> None:
        if self.max_bytes and self._size + len(line) > self.max_bytes and self._size > 0:
            self.rotate()
        self._file.write(line)
        self._size += len(line.encode()) if not line.isascii() else len(line)

    def rotate(self) -> None:
        self._file.close()
        if self.keep <= 0:
            self.path.unlink(missing_ok=True)
        else:
            self.rotated(self.keep).unlink(missing_ok=True)
            for i in range(self.keep - 1, 0, -1):
                if self.rotated(i).exists():
                    os.replace(self.rotated(i), self.rotated(i + 1))
            os.replace(self.path, self.rotated(1))
        self._file = open(self.path, "a", buffering=self.buffering)
        self._size = 0

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()

    def __enter__(self) -> "RotatingLines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def exclusive_lock(path: Path, busy: str):
    """Hold an exclusive lock on `path` (created if missing) while the returned file is open; when
    another process holds it, raise UnstableError(`busy`) at once instead of waiting."""
    f = open(path, "a+")
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UnstableError(busy) from None
    return f

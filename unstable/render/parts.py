"""How an offline render writes: part files of whole chunks, resumable, closed in the background,
joined without re-encoding; torch thread counts fixed for the whole render."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from ..disk import exclusive_lock
from ..encode import VideoWriter
from ..probe import concat, probe
from ..errors import UnstableError
from ..renderjob import Variation

__all__ = ["default_threads", "torch_threads", "RenderResult", "RenderStats", "Finisher", "Target",
           "lock_parts", "remove_path", "prepare_target", "join_parts"]

_PART = re.compile(r"^(part|tmp)_(\d{6,})-(\d{6,})")


def default_threads() -> int:
    """Torch CPU threads for rendering: half the cores this process may use (the rest encode)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch intra-op threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class RenderResult:
    """One finished output file (or PNG folder) and what it took."""

    variation: str
    path: Path
    frames: int
    fps: Fraction
    width: int
    height: int
    preset: str
    rendered: int             # frames rendered now (the rest came from parts of an earlier run)
    seconds: float


@dataclass
class RenderStats:
    """Where the time of `Renderer.render` went (for the benchmark)."""

    wall_seconds: float = 0.0
    generation_seconds: float = 0.0     # System.sample
    compose_seconds: float = 0.0        # compositor render + read (main thread)
    write_wait_seconds: float = 0.0     # time write() blocked on a full encoder queue
    encode_seconds: float = 0.0         # writer threads' time inside ffmpeg pipes (summed)
    frames: int = 0


class Finisher:
    """Closes the writers of finished chunks in the background and renames the parts into place.

    A chunk's closing starts as soon as its last frame is queued (so an interruption right after
    still keeps it); `submit` then waits for the chunk before it, so at most two chunks are ever
    being encoded and memory stays bounded.
    """

    def __init__(self):
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.encode_seconds = 0.0

    def submit(self, items: list[tuple[VideoWriter, Path, Path]]) -> None:
        def run():
            try:
                for writer, tmp, final in items:
                    stats = writer.close()
                    with self._lock:
                        self.encode_seconds += stats.encode_seconds
                    os.replace(tmp, final)
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread by wait()
                with self._lock:
                    self._errors.append(e)
                for writer, _, _ in items:
                    writer.close(_raise=False)

        thread = threading.Thread(target=run, name="render:finish", daemon=True)
        thread.start()
        self._threads.append(thread)
        self.wait(keep=1)

    def wait(self, keep: int = 0) -> None:
        """Wait until at most `keep` chunks are still closing; raise the first error of any."""
        while len(self._threads) > keep:
            self._threads[0].join()
            self._threads.pop(0)
        with self._lock:
            if self._errors:
                error = self._errors[0]
                self._errors.clear()
                raise error


@dataclass
class Target:
    """One output being made: a variation, its file, its parts folder and the chunks already done."""

    index: int
    variation: Variation
    out: Path
    parts: Path
    chunks: list[tuple[int, int]]
    done: set = field(default_factory=set)
    lock: object = None               # the open lock file while this render owns the parts folder

    def part(self, chunk: tuple[int, int], suffix: str, tmp: bool = False, tag: str = "") -> Path:
        """A chunk's part file; `tag` makes a temporary name unique to one attempt (a cluster may run
        a chunk again while a lost attempt's ffmpeg is still writing its own file)."""
        return self.parts / f"{'tmp' if tmp else 'part'}_{chunk[0]:06d}-{chunk[1]:06d}{'-' + tag if tag else ''}{suffix}"


def lock_parts(path: Path, out: Path):
    """Hold an exclusive lock on `path`: a second render of the same output would delete this one's
    unfinished parts, so it must stop at once instead. Returns the open file (closing it unlocks)."""
    return exclusive_lock(path, f"{out}: another render is writing it right now (it holds {path}); "
                                "wait for it to finish or stop it")


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def prepare_target(index: int, variation: Variation, out: Path, chunks: list[tuple[int, int]], manifest: dict,
                   suffix: str, fresh: bool) -> Target:
    """Own `<out>.parts/` (locked), keep the finished parts of the same render (same manifest key,
    unless `fresh`), drop unfinished or foreign ones, and note which chunks are done."""
    parts = out.with_name(out.name + ".parts")
    target = Target(index, variation, out, parts, chunks)
    path = parts / "manifest.json"
    keep = False
    if parts.is_dir() and path.is_file() and not fresh:
        try:
            keep = json.loads(path.read_text()).get("key") == manifest["key"]
        except (OSError, json.JSONDecodeError):
            keep = False
    parts.mkdir(parents=True, exist_ok=True)
    lock = lock_parts(parts / ".lock", out)
    try:
        for f in parts.iterdir():
            m = _PART.match(f.name)
            if m and (m[1] == "tmp" or not keep):
                remove_path(f)  # unfinished parts, or parts of a different job: only ours, by name
        path.write_text(json.dumps(manifest) + "\n")
    except BaseException:
        lock.close()
        raise
    target.lock = lock
    target.done = {c for c in target.chunks if target.part(c, suffix).exists()}
    return target


def join_parts(t: Target, suffix: str, expected: int, fps: Fraction, sequence: bool):
    """Parts -> the output file, checked for its exact frame count and rate; the parts folder goes."""
    parts = [t.part(c, suffix) for c in t.chunks]
    t.out.parent.mkdir(parents=True, exist_ok=True)
    if sequence:
        info = concat(parts, t.out)
    elif len(parts) == 1:
        os.replace(parts[0], t.out)
        info = probe(t.out)
    else:
        tmp = t.out.with_name(f".{t.out.stem}.joining{t.out.suffix}")
        try:
            concat(parts, tmp)
            os.replace(tmp, t.out)
        finally:
            if tmp.exists():
                tmp.unlink()
        info = probe(t.out)
    if info.frames != expected or info.fps != fps:
        raise UnstableError(f"{t.out}: has {info.frames} frames at {info.fps} fps, expected {expected} at "
                            f"{fps} fps (the parts are kept in {t.parts})")
    shutil.rmtree(t.parts)
    return info

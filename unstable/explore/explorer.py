"""The driver of `unstable explore`: generations bred, trained as Dask tasks, scored, selected.

The driver does no training itself: each variant that has no result yet is one task
(`task.train_variant`) on a Dask cluster (a LocalCluster of `workers` processes by default, a
running scheduler with `scheduler`, or this process with workers = 0). Tasks get plain values
(paths, step counts); a worker that dies takes its task with it and the scheduler gives the task
to another worker, which continues the variant from its last checkpoint. A variant that fails or
explodes finishes as such and is scored as such; the exploration goes on.

Resuming: explore.json holds the settings, lineage.csv the generations bred so far (a generation
is written there only once all its folders are), and each finished variant its result.json, so
running the same command again (or `unstable explore DIR`) breeds nothing twice and trains
nothing twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Mapping

from ..errors import UnstableError
from .breeding import breed_generation
from .records import (read_json, read_lineage, read_marks, read_scores, variant_dir, write_atomic, write_scores)
from .selection import Band, choose_parents, score_table
from .task import train_variant

__all__ = ["Explorer", "new_settings", "load_settings"]

SETTINGS_KEYS = ("piece", "base", "population", "steps", "segments", "seed", "threads", "device",
                 "stasis_floor", "max_guard", "k")


def new_settings(piece_path: str | Path, *, population: int, steps: int, segments: int, seed: int, threads: int,
                 device: str = "cpu", stasis_floor: float = 0.002, max_guard: float = 0.1, k: int = 3) -> dict:
    """An exploration's settings (explore.json) for a piece file: its table with [train] set so
    that each variant trains `steps` steps with a checkpoint and grid per segment."""
    from ..system import load_piece
    from .genome import genome_of, validate
    piece = load_piece(piece_path)
    if piece.kind != "equilibrium":
        raise UnstableError(f"{piece_path}: explore varies equilibrium pieces; this one is kind {piece.kind!r}")
    base = genome_of(piece)
    piece_train = dict(base["train"])  # what an exported variant trains with
    every = max(1, steps // segments)
    base["train"].update(steps=steps, checkpoint_every=every, keep_every=every,
                         grid_every=max(1, min(base["train"]["grid_every"], every)))
    base = validate(base, str(piece_path))
    return {"piece": str(Path(piece_path).resolve()), "base": base, "population": population, "steps": steps,
            "segments": segments, "seed": seed, "threads": threads, "device": device,
            "stasis_floor": stasis_floor, "max_guard": max_guard, "k": k, "piece_train": piece_train}


def load_settings(root: Path) -> dict | None:
    """explore.json of an exploration folder (None when there is none)."""
    s = read_json(Path(root) / "explore.json")
    if s is not None and (not isinstance(s, dict) or any(k not in s for k in SETTINGS_KEYS)):
        raise UnstableError(f"{Path(root) / 'explore.json'}: not an exploration's settings (keys "
                            f"{', '.join(SETTINGS_KEYS)} expected)")
    return s


class _Deferred:
    """A task of `_InProcess`: run when the driver asks for its result, so that an interruption
    leaves the later variants untrained, as on a cluster."""

    def __init__(self, fn, spec):
        self.fn, self.spec = fn, spec

    def result(self):
        return self.fn(self.spec)

    def cancel(self):
        pass


class _InProcess:
    """workers = 0: the tasks run here, one after another (what a cluster's result must equal)."""

    def submit(self, fn, spec, key=None):
        return _Deferred(fn, spec)

    def as_completed(self, futures):
        return iter(futures)

    def close(self):
        pass


class _Dask:
    def __init__(self, client, own: bool):
        self.client, self.own = client, own

    def submit(self, fn, spec, key=None):
        # retries: a task that raised; a worker that died is rescheduled by the scheduler by itself.
        return self.client.submit(fn, spec, key=key, pure=False, retries=1)

    def as_completed(self, futures):
        from dask.distributed import as_completed
        return as_completed(futures)

    def close(self):
        if self.own:
            cluster = getattr(self.client, "cluster", None)
            self.client.close()
            if cluster is not None:
                cluster.close()


def open_client(workers: int | None, scheduler: str | None):
    """A Dask client on a new LocalCluster of `workers` processes (one task at a time each: a
    variant's scores depend on its torch thread count, and a process is what a lost worker takes
    down with it), or joined to the scheduler at `scheduler` as renders join one."""
    import logging
    if scheduler:
        from ..render.scheduler import connect_scheduler
        return connect_scheduler(scheduler)  # checked address, one deadline, one line on failure
    from dask.distributed import Client, LocalCluster
    # On loopback: a local cluster's scheduler and workers are this machine's business alone.
    cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True, dashboard_address=None,
                           memory_limit=0, silence_logs=logging.ERROR, host="127.0.0.1")
    return Client(cluster)


class Explorer:
    """One exploration folder and the loop over its generations (see the module doc).

    `auto`: choose parents by the measures at once; otherwise wait after each generation until the
    artist asks for the next (`advance()`, the contact sheet's button). `client`: a Dask client to
    use (not closed here); else one is opened from `workers` / `scheduler` when there is work.
    """

    def __init__(self, root: str | Path, settings: Mapping, *, workers: int | None = 1, scheduler: str | None = None,
                 client=None, auto: bool = True, echo: Callable[[str], None] = print):
        self.root = Path(root)
        self.settings = dict(settings)
        self.band = Band(settings["stasis_floor"], settings["max_guard"], settings["k"])
        self.workers, self.scheduler, self.client = workers, scheduler, client
        self.auto = auto
        self.echo = echo
        self.submitted: list[str] = []  # ids sent to train in this process's run (tests, benchmark)
        self.waiting: int | None = None  # the generation whose successor waits for the artist
        self._advance = threading.Event()
        self.stopped = threading.Event()
        self.finished = False  # every generation asked for is scored
        self._pool = None
        self._lost: dict[str, dict] = {}  # variants whose worker was lost this run

    # -- the artist's side --------------------------------------------------------------------

    def advance(self) -> None:
        """Breed the next generation now (from the starred variants, or by the measures)."""
        self._advance.set()

    def stop(self) -> None:
        """End the exploration at the next chance (the page's server and the tests)."""
        self.stopped.set()
        self._advance.set()

    # -- the loop -----------------------------------------------------------------------------

    def start(self) -> None:
        """Write explore.json (once; a different one already there is refused)."""
        self.root.mkdir(parents=True, exist_ok=True)
        old = load_settings(self.root)
        if old is None:
            write_atomic(self.root / "explore.json", json.dumps(self.settings, indent=1) + "\n")
            return
        differ = [k for k in SETTINGS_KEYS if k not in ("piece", "device") and old[k] != self.settings[k]]
        if differ:
            raise UnstableError(f"{self.root}: holds an exploration with other settings ({', '.join(differ)} "
                                "differ); continue it with `unstable explore DIR` or choose another --out")

    def run(self, generations: int) -> list[dict]:
        """Breed, train and score up to `generations` generations; returns scores.csv's rows."""
        self.start()
        try:
            for g in range(generations):
                if self.stopped.is_set():
                    break
                rows = [r for r in read_lineage(self.root) if r.generation == g]
                if not rows:
                    if g > 0 and not self.auto:
                        self._wait_for_artist(g - 1)
                        if self.stopped.is_set():
                            break
                    parents, how = self._parents(g)
                    rows = breed_generation(self.root, self.settings, g, parents)
                    self.echo(f"explore: generation {g}: {len(rows)} variants from {', '.join(parents)} ({how})")
                self._train(rows)
                self._score()
            scores = self._score()
            self.finished = not self.stopped.is_set()
            return scores
        finally:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _parents(self, g: int) -> tuple[list[str], str]:
        if g == 0:
            return ["base"], "the piece"
        lineage = [r for r in read_lineage(self.root) if r.generation < g]
        return choose_parents(lineage, list(read_scores(self.root).values()), read_marks(self.root),
                              int(self.settings["population"]))

    def _wait_for_artist(self, g: int) -> None:
        self.waiting = g
        self.echo(f"explore: generation {g} is scored; star variants on the contact sheet, then breed the next")
        self._advance.wait()
        self._advance.clear()
        self.waiting = None

    def results(self) -> dict[str, dict]:
        """The result of every variant that has one."""
        out = {}
        for r in read_lineage(self.root):
            res = read_json(variant_dir(self.root, r) / "explore" / "result.json")
            if res is not None:
                out[r.id] = res
        return out

    def _score(self) -> list[dict]:
        lineage = read_lineage(self.root)
        results = {**self._lost, **self.results()}
        marks = read_marks(self.root)
        scores = score_table(lineage, results, self.band)
        if lineage:
            latest = max(r.generation for r in lineage)
            if all(r.id in results for r in lineage if r.generation == latest):
                chosen, _ = choose_parents(lineage, scores, marks, int(self.settings["population"]))
                for s in scores:
                    s["selected"] = s["id"] in chosen
        write_scores(self.root, scores)
        return scores

    def _open_pool(self):
        if self._pool is None:
            if self.client is not None:
                self._pool = _Dask(self.client, own=False)
            elif self.workers == 0 and not self.scheduler:
                self._pool = _InProcess()
            else:
                self._pool = _Dask(open_client(self.workers, self.scheduler), own=True)
        return self._pool

    def _train(self, rows) -> None:
        pending = [r for r in rows if not (variant_dir(self.root, r) / "explore" / "result.json").exists()]
        if not pending:
            return
        pool = self._open_pool()
        run = uuid.uuid4().hex[:6]
        futures = {}
        for r in pending:
            spec = {"folder": str(variant_dir(self.root, r).resolve()), "id": r.id,
                    "steps": int(self.settings["steps"]), "segments": int(self.settings["segments"]),
                    "threads": int(self.settings["threads"]), "device": self.settings["device"], "cwd": os.getcwd()}
            futures[pool.submit(train_variant, spec, key=f"explore-{r.id}-{run}")] = r.id
            self.submitted.append(r.id)
        started = time.monotonic()
        try:
            for f in pool.as_completed(list(futures)):
                vid = futures[f]
                try:
                    res = f.result()
                except Exception as e:  # noqa: BLE001 - a lost worker, after the scheduler's retries
                    why = (str(e).splitlines() or [type(e).__name__])[0][:200]
                    res = {"id": vid, "status": "failed", "error": f"{type(e).__name__}: {why}", "steps": 0}
                    self._lost[vid] = res  # not written as result.json: the next run tries it again
                self.echo(_line(res, time.monotonic() - started))
                self._score()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _line(r: Mapping, elapsed: float) -> str:
    measures = ", ".join(f"{k.replace('_', ' ')} {r[k]:.3g}" for k in ("motion", "pixel_diversity",
                         "generator_difference", "colour_variety") if r.get(k) is not None)
    tail = f" ({r['error']})" if r.get("error") else ""
    return f"explore: {r['id']} {r['status']} at step {r.get('steps', 0)}, guard {r.get('guard_trips', 0)}; {measures}{tail}"

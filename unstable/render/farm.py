"""`unstable render JOB|SHOW --workers N | --scheduler tcp://HOST:PORT`: a render's chunks on Dask.

The driver (this process) does what a one-process render does before and after the frames: it
opens the job or show (one-line errors before any file is touched), owns each output's parts
folder (lock, manifest, finished parts of an interrupted render kept), and at the end joins the
parts without re-encoding. Between the two, every chunk that is not done yet is one Dask task:

- A task gets plain values (the job or show file's path and the render options), never live
  objects. Each worker opens the sources itself, once (kept per worker thread for later chunks),
  with the driver's torch thread count, and checks that its render key (the hash of everything
  that decides the pixels: job, variation, frame range, checkpoint files, torch version, threads)
  is the driver's; then it renders the chunk through the same `Renderer.draw_chunk` a one-process
  render uses, into a temporary part named for this attempt, and renames it into place. Chunks are
  whole batches aligned to absolute frame numbers, so a chunk's frames do not depend on where it
  is made: the output is frame for frame the one-process render's.
- A failed task is retried (`retries`); a task on a worker that dies is rescheduled by the
  scheduler on another worker. An attempt's part appears only when complete (rename), and a lost
  attempt's leftover temporary file has its own name, so nothing half-written is ever joined.
- The progress bar counts frames as chunks finish anywhere on the cluster.
- Interrupted (Ctrl-C, a driver killed): the finished parts stay; the next render of the same job,
  on a cluster or in one process (same thread count), keeps them and renders the rest.

What workers need to see, at the same paths as the driver (a shared file system on several
machines; automatic on one): the job or show file, its run folders (checkpoints; a timelapse's
checkpoints/), piece files and the base-model cache of untrained sources, an automation file, and
the output folder (each output's `<output>.parts/`, where they write the parts). Relative paths
are the driver's working directory's: workers run there. This is checked on every worker before
any chunk, and a worker that cannot see one of them stops the render with one line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import UnstableError
from ..formats import PRESETS
from .naming import choose_outputs
from .parts import RenderResult, Target, join_parts, torch_threads

__all__ = ["render_on_cluster", "open_client", "render_chunk", "check_worker", "spec_for", "on_cluster"]

_local = threading.local()  # per worker thread: the open renderer (GL contexts are per thread)
last_stats: list[dict] = []  # the last cluster render's tasks (tests/bench/bench_scaleout.py)
last_timing: dict = {}


# --------------------------------------------------------------------------------- worker side

def _open_renderer(spec: dict):
    """The renderer `spec` describes, opened on this worker (kept for the next chunk of the same spec)."""
    key = json.dumps(spec, sort_keys=True)
    cached = getattr(_local, "renderer", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    if cached is not None:
        cached[1].close()
        _local.renderer = None
    _enter(spec)
    from ..renderjob import load_job
    from .renderer import job_renderer, show_renderer
    device = torch.device(spec["device"])
    quiet = lambda *_: None  # noqa: E731
    if spec["kind"] == "show":
        r = show_renderer(spec["path"], seconds=spec["seconds"], preset=spec["preset"],
                          size=tuple(spec["size"]) if spec["size"] else None, automation=spec["automation"],
                          run=spec["run"], device=device, echo=quiet, threads=spec["threads"],
                          audio=spec.get("audio"))
    else:
        r = job_renderer(load_job(spec["path"]), spec["path"], device, echo=quiet, threads=spec["threads"])
    _local.renderer = (key, r)
    return r


def _enter(spec: dict) -> None:
    # Relative paths (runs, outputs, the piece cache) are the driver's: work from its folder.
    if os.getcwd() != spec["cwd"]:
        if not os.path.isdir(spec["cwd"]):
            raise UnstableError(f"worker {socket.gethostname()}: cannot see the driver's working folder {spec['cwd']}")
        os.chdir(spec["cwd"])


def check_worker(spec: dict, paths: list[str], manifests: dict[str, str]) -> list[str]:
    """Run on every worker before any chunk: what of `paths` (and which parts manifests with the
    driver's key) this worker cannot see; empty when all is well."""
    try:
        _enter(spec)
    except UnstableError as e:
        return [str(e)]
    missing = [p for p in paths if not os.path.exists(p)]
    for path, key in manifests.items():
        try:
            if json.loads(Path(path).read_text()).get("key") != key:
                missing.append(f"{path} (another render's)")
        except (OSError, ValueError):
            missing.append(path)
    return missing


def render_chunk(spec: dict, chunk: tuple[int, int], outputs: list[tuple[int, str, str]]) -> dict:
    """One Dask task: render frames [A, B) of the outputs (index, output path, render key) of one
    variation group into their parts folders. Returns what it did (for the driver's figures)."""
    t0 = time.perf_counter()
    renderer = _open_renderer(spec)
    opened = time.perf_counter() - t0
    span = tuple(spec["span"])
    mine = {i: (v, p) for i, v, p in renderer.outputs(spec["out"], span, spec["variations"])}
    suffix = spec["suffix"]
    need = []
    for index, out, key in outputs:
        v, path = mine[index]
        named, chosen = spec["names"][index]  # the driver's choice: a numbered name when `path` existed
        if str(path) != named or chosen != out or renderer.key(v, span) != key:
            raise UnstableError(f"worker {socket.gethostname()}: renders {out} differently from the driver (its "
                                "job, run files, torch version or thread count differ); workers must see the same "
                                "files at the same paths")
        path = Path(chosen)
        need.append(Target(index, v, path, path.with_name(path.name + ".parts"), []))
    tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    sinks: dict = {}
    try:
        with torch_threads(spec["threads"]):
            renderer.open_sinks(need, chunk, suffix, sinks, tag=tag)
            renderer.draw_chunk(chunk, need, sinks)
        for t in need:
            sinks[t.index].close()
            os.replace(t.part(chunk, suffix, tmp=True, tag=tag), t.part(chunk, suffix))
    except BaseException:
        for sink in sinks.values():
            sink.writer.close(_raise=False)
        from .parts import remove_path
        for t in need:
            remove_path(t.part(chunk, suffix, tmp=True, tag=tag))
        raise
    return {"frames": (chunk[1] - chunk[0]) * len(need), "seconds": time.perf_counter() - t0, "open_seconds": opened,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


# --------------------------------------------------------------------------------- driver side

def open_client(workers: int | None = None, scheduler: str | None = None):
    """A Dask client: on a new LocalCluster of `workers` processes (one task at a time each), or
    joined to the scheduler at `scheduler` (tcp://HOST:PORT). Close it when done (the cluster too)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency of the project
        raise UnstableError("--workers/--scheduler need Dask: pip install dask distributed") from None
    if scheduler:
        from .scheduler import connect_scheduler
        return connect_scheduler(scheduler)  # checked address, one deadline, one line on failure
    # One task per worker process: torch's thread count per process is what the frames depend on,
    # and a process is what a lost worker takes down with it. No memory limit: a worker holds a GL
    # context and the models, and a nanny restarting it mid-chunk would only cost a retry.
    cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True, dashboard_address=None,
                           memory_limit=0, silence_logs=logging.ERROR)
    return Client(cluster)


def _paths(identity: Any) -> list[str]:
    """Every file path in a renderer's identity (checkpoints, show file, automation)."""
    out = []
    if isinstance(identity, dict):
        for k, v in identity.items():
            if k == "path" and isinstance(v, str):
                out.append(v)
            else:
                out += _paths(v)
    elif isinstance(identity, (list, tuple)):
        for v in identity:
            out += _paths(v)
    return out


def render_on_cluster(renderer, spec: dict, client, *, out: str | None = None, span: tuple[int, int] | None = None,
                      variations: Sequence[str] = (), fresh: bool = False, show_progress: bool = True,
                      retries: int = 3, echo: Callable[[str], None] = print,
                      overwrite: bool = False) -> list[RenderResult]:
    """Render with `renderer`'s job (opened here, the driver) on the cluster behind `client`; `spec`
    is what workers open it from (see `spec_for`). An existing output is kept and the render takes a
    numbered name beside it (chosen here, once, for every worker), unless `overwrite`."""
    from dask.distributed import as_completed

    from ..progress import progress_bar
    from tqdm import tqdm

    span = span or (0, renderer.spec.length)
    if not 0 <= span[0] < span[1] <= renderer.spec.length:
        raise UnstableError(f"frames {span[0]}:{span[1]}: expected 0 <= A < B <= {renderer.spec.length}")
    named = renderer.outputs(out, span, variations)
    outputs = choose_outputs(named, overwrite, echo)
    # Workers check the job's own names against theirs and write the parts of the chosen ones.
    names = {i: (str(p), str(c)) for (i, _, p), (_, _, c) in zip(named, outputs)}
    spec = {**spec, "out": out, "span": list(span), "variations": list(variations),
            "threads": renderer.threads, "names": names}
    preset = PRESETS[renderer.spec.preset]
    suffix = "" if preset.sequence else outputs[0][2].suffix
    spec["suffix"] = suffix
    t_start = time.perf_counter()
    targets: list[Target] = []
    keys: dict[int, str] = {}
    futures = []
    try:
        for i, v, p in outputs:
            t = renderer.prepare_target(i, v, p, span, fresh)
            targets.append(t)
            keys[i] = renderer.key(v, span)
        _check_workers(client, spec, renderer, targets, keys)
        group_size = renderer.spec.variations_at_once
        tasks = []
        for g in range(0, len(targets), group_size):
            group = targets[g:g + group_size]
            for chunk in group[0].chunks:
                need = [t for t in group if chunk not in t.done]
                if need:
                    tasks.append((chunk, [(t.index, str(t.out), keys[t.index]) for t in need]))
        total = sum((c[1] - c[0]) * len(o) for c, o in tasks)
        desc = f"render {renderer.spec.name} on {len(client.nthreads())} workers"
        bar = progress_bar(desc, total, unit="frame") if show_progress else tqdm(total=total, disable=True)
        run = uuid.uuid4().hex[:6]
        t_submit = time.perf_counter()
        futures = [client.submit(render_chunk, spec, chunk, outs, retries=retries, pure=False,
                                 key=f"render-{renderer.spec.name}-{run}-{outs[0][0]}-{chunk[0]:06d}-{chunk[1]:06d}")
                   for chunk, outs in tasks]
        stats = []
        try:
            for future in as_completed(futures):
                if future.status != "finished":
                    err = future.exception()
                    where = future.key.rsplit("-", 2)
                    raise UnstableError(f"render: frames {int(where[-2])}:{int(where[-1])} failed after {retries} "
                                        f"retries: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                info = future.result()
                stats.append(info)
                bar.update(info["frames"])
        finally:
            bar.close()
        global last_stats, last_timing
        last_stats = stats  # for the benchmark: each task's worker, seconds and first-open seconds
        t_done = time.perf_counter()
        results = []
        wall = time.perf_counter() - t_start
        for t in targets:
            info = join_parts(t, suffix, span[1] - span[0], renderer.spec.fps, preset.sequence)
            done_now = sum(c[1] - c[0] for c, o in tasks if any(i == t.index for i, _, _ in o))
            results.append(RenderResult(t.variation.name, t.out, info.frames, info.fps, info.width, info.height,
                                        renderer.spec.preset, done_now, wall))
        # Driver time before the first task and after the last (checks, join): for the benchmark.
        last_timing = {"before": t_submit - t_start, "tasks": t_done - t_submit,
                       "after": time.perf_counter() - t_done}
        return results
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    finally:
        for t in targets:
            if t.lock is not None:
                t.lock.close()


def _check_workers(client, spec: dict, renderer, targets: list[Target], keys: dict[int, str]) -> None:
    paths = [spec["path"], *_paths(renderer.spec.identity), *renderer.spec.paths]
    manifests = {str((t.parts / "manifest.json").resolve()): keys[t.index] for t in targets}
    try:
        client.wait_for_workers(1, timeout=60)
    except (TimeoutError, OSError):
        raise UnstableError("render: no Dask worker joined the cluster within 60 s") from None
    answers = client.run(check_worker, spec, sorted(set(paths)), manifests)
    for worker, missing in sorted(answers.items()):
        if missing:
            raise UnstableError(f"render: worker {worker} cannot see {missing[0]}"
                                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; workers need the "
                                "job or show file, its run folders and the output folder at the same paths as "
                                f"this machine (working folder {spec['cwd']})")


def spec_for(kind: str, path: str | Path, device: torch.device, **options) -> dict:
    """What a worker opens a render from: plain values only."""
    return {"kind": kind, "path": str(Path(path).resolve()), "cwd": os.getcwd(), "device": str(device),
            "seconds": options.get("seconds"), "preset": options.get("preset", "h264"),
            "size": list(options["size"]) if options.get("size") else None, "automation": options.get("automation"),
            "run": options.get("run"), "audio": options.get("audio")}


def on_cluster(renderer, spec: dict, *, workers: int | None, scheduler: str | None, client, **render) -> list[RenderResult]:
    """Render on `client`, or on a cluster opened for this render (closed after it)."""
    own = client is None
    if own:
        client = open_client(workers, scheduler)
    try:
        return render_on_cluster(renderer, spec, client, **render)
    finally:
        if own:
            cluster = client.cluster if scheduler is None else None
            client.close()
            if cluster is not None:
                cluster.close()

"""Renders on a real Dask cluster on loopback (LocalCluster worker processes): equal to the
one-process render frame for frame (ffv1, lossless), a worker killed mid-render changes nothing,
an interrupted render resumes on the cluster, and a worker that cannot see a path stops the render
with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_render import PIECE, job_file
from unstable.cli import main
from unstable.errors import UnstableError
from unstable.probe import frame_md5s, probe
from unstable.render import render_job
from unstable.trainer import train

pytest.importorskip("distributed")

QUIET = dict(show_progress=False, echo=lambda s: None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("farm-run")
    (root / "tiny.toml").write_text(PIECE)
    return train(root / "tiny.toml", out=root / "run", **QUIET)


@pytest.fixture(scope="module")
def client():
    from unstable.render.farm import open_client
    c = open_client(workers=2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def reference(run, tmp_path_factory):
    """The one-process render of a 40-frame job (chunks of 4: ten tasks), one torch thread."""
    root = tmp_path_factory.mktemp("farm-ref")
    job = job_file(root, run, frames="40")
    return render_job(job, threads=1, out=str(root / "ref.mov"), **QUIET)[0].path


def test_cli_workers_2_equals_the_one_process_render(tmp_path, run, reference):
    job = job_file(tmp_path, run, frames="40")
    res = CliRunner().invoke(main, ["render", str(job), "--workers", "2", "--threads", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out" / "job-main.mov"
    assert "render:" in res.output and "40 frames" in res.output
    info = probe(out)
    assert (info.frames, info.codec) == (40, "ffv1")
    assert frame_md5s(out) == frame_md5s(reference)
    assert not Path(str(out) + ".parts").exists()


def test_a_worker_killed_mid_render_changes_nothing(tmp_path, run, reference, client):
    job = job_file(tmp_path, run, frames="40")
    parts = tmp_path / "out" / "job-main.mov.parts"
    killed = []

    def kill_a_busy_worker():
        # Once the first part is in, kill (SIGKILL) a worker process that is rendering a chunk.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if any(parts.glob("part_*")):
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    try:
        result = render_job(job, threads=1, client=client, **QUIET)[0]
    finally:
        killer.join()
    assert killed, "no worker was killed (the render finished before)"
    assert result.frames == 40
    assert frame_md5s(result.path) == frame_md5s(reference)
    assert not parts.exists()


def test_an_interrupted_render_resumes_on_the_cluster(tmp_path, run, reference, client):
    job = job_file(tmp_path, run, frames="40")
    parts = tmp_path / "out" / "job-main.mov.parts"
    # A real interruption of a one-process render (one torch thread, as the cluster's workers use).
    proc = subprocess.Popen([sys.executable, "-m", "unstable.cli", "render", str(job), "--device", "cpu",
                             "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not any(parts.glob("part_*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    finished = sorted(p.name for p in parts.glob("part_*"))
    assert finished and len(finished) < 10, finished
    result = render_job(job, threads=1, client=client, **QUIET)[0]
    assert result.rendered <= 40 - 4 * len(finished)
    assert frame_md5s(result.path) == frame_md5s(reference)


def test_a_worker_that_cannot_see_a_path_stops_the_render_with_one_line(tmp_path, run, client):
    from unstable.render import farm

    class Elsewhere:
        """A worker on a machine without the shared folder: it sees everything but the run."""

        def __init__(self, real):
            self.real = real

        def wait_for_workers(self, *a, **k):
            pass

        def run(self, fn, spec, paths, manifests):
            hidden = [p for p in paths if "farm-run" in p]
            assert hidden
            spec = {**spec}
            answers = self.real.run(fn, spec, [p + ".elsewhere" if p in hidden else p for p in paths], manifests)
            return answers

    job = job_file(tmp_path, run, frames="8")
    with pytest.raises(UnstableError) as e:
        render_job(job, threads=1, client=Elsewhere(client), **QUIET)
    msg = str(e.value)
    assert "\n" not in msg and "cannot see" in msg and ".elsewhere" in msg and "same paths" in msg
    assert farm.check_worker(farm.spec_for("job", job, "cpu"), [str(job)], {}) == []


def test_a_show_with_its_automation_renders_the_same_on_the_cluster(tmp_path, client):
    from test_one_pipeline import SHOW, play_live
    from test_show import write_show
    from unstable.render import render_show
    show_path = write_show(tmp_path, SHOW)
    auto = tmp_path / "a.automation.jsonl"
    play_live(tmp_path, show_path, auto)  # the run folder and a performance's automation
    opts = dict(seconds=1.2, preset="ffv1", size=(96, 32), run=tmp_path / "run", automation=auto, threads=1, **QUIET)
    one = render_show(show_path, out=str(tmp_path / "one.mov"), **opts)[0]
    farm = render_show(show_path, out=str(tmp_path / "farm.mov"), client=client, **opts)[0]
    assert farm.frames == one.frames == 12
    assert frame_md5s(farm.path) == frame_md5s(one.path)


def _fail_once(marker: str) -> None:
    """Run on a worker: its render_chunk raises once, in the first task that takes `marker` away
    (a transient failure: a full scratch disk, a driver hiccup), then renders as usual."""
    import unstable.render.farm as farm
    real = farm.render_chunk

    def flaky(spec, chunk, outputs):
        try:
            os.remove(marker)
        except FileNotFoundError:
            return real(spec, chunk, outputs)
        raise OSError(f"injected: a transient failure rendering frames {chunk[0]}:{chunk[1]}")

    farm.render_chunk = flaky  # tasks name render_chunk by module and name: they get this one


def test_a_chunk_that_fails_once_is_retried_and_the_render_is_whole(tmp_path, run):
    """A task that raises is Dask's to retry (`retries`), unlike a lost worker, which Dask
    reschedules by itself: this render only finishes because the failed chunk is tried again."""
    from unstable.render.farm import open_client
    marker = tmp_path / "fail-once"
    marker.write_text("")
    job = job_file(tmp_path, run, frames="8")
    c = open_client(workers=1)  # its own cluster: no task has run there, none is cached
    try:
        c.run(_fail_once, str(marker))
        (result,) = render_job(job, client=c, threads=1, out=str(tmp_path / "farm.mov"), **QUIET)
    finally:
        cluster = c.cluster
        c.close()
        cluster.close()
    assert not marker.exists()  # the failure did happen
    (ref,) = render_job(job, threads=1, out=str(tmp_path / "one.mov"), **QUIET)
    assert probe(result.path).frames == 8 and frame_md5s(result.path) == frame_md5s(ref.path)

"""Renders never replace an earlier render without --overwrite: a numbered name beside it instead
(job-main-2.mov, -3, ...), said on the command line; in one process, on a Dask cluster (its parts
folder and join follow the chosen name), through `render concat`, and across an interrupted render
(resumed under the name it started with). Real training steps, real GL, real ffmpeg."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_render import PIECE, job_file
from unstable.cli import main
from unstable.probe import probe
from unstable.render import render_job
from unstable.render.naming import choose_outputs, numbered, unused
from unstable.trainer import train

QUIET = dict(show_progress=False, echo=lambda s: None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("names-run")
    (root / "tiny.toml").write_text(PIECE)
    return train(root / "tiny.toml", out=root / "run", **QUIET)


def render_cli(*args):
    r = CliRunner().invoke(main, ["render", *map(str, args), "--device", "cpu", "--threads", "1"])
    assert r.exit_code == 0, r.output
    return r.output


def test_numbered_names_skip_what_exists_and_what_the_render_itself_takes(tmp_path):
    assert numbered(Path("out/demo.mp4"), 2) == Path("out/demo-2.mp4")
    assert numbered(Path("out/demo"), 3) == Path("out/demo-3")  # a PNG sequence folder
    assert numbered(Path("a.f000000-000030.mov"), 2) == Path("a.f000000-000030-2.mov")
    (tmp_path / "a.mp4").write_bytes(b"1")
    (tmp_path / "a-2.mp4").write_bytes(b"2")
    assert unused(tmp_path / "a.mp4") == tmp_path / "a-3.mp4"
    assert unused(tmp_path / "b.mp4") == tmp_path / "b.mp4"
    said = []
    # a.mp4 exists; b.mp4 and a-3.mp4 are outputs of this same render: a.mp4's new name skips a-3.
    got = choose_outputs([(0, "x", tmp_path / "a.mp4"), (1, "y", tmp_path / "a-3.mp4"), (2, "z", tmp_path / "b.mp4")],
                         False, said.append)
    assert [p.name for _, _, p in got] == ["a-4.mp4", "a-3.mp4", "b.mp4"]
    assert said == [f"render: {tmp_path / 'a.mp4'} exists; writing {tmp_path / 'a-4.mp4'} (--overwrite replaces it)"]
    assert choose_outputs([(0, "x", tmp_path / "a.mp4")], True, said.append)[0][2] == tmp_path / "a.mp4"


def test_a_second_render_goes_beside_the_first_and_overwrite_replaces_it(tmp_path, run):
    job = job_file(tmp_path, run, frames="4")
    first = tmp_path / "out" / "job-main.mov"
    render_cli(job)
    before = first.read_bytes()
    job = job_file(tmp_path, run, frames="6")  # the same output name, another render
    out = render_cli(job)
    second = tmp_path / "out" / "job-main-2.mov"
    assert f"render: {first} exists; writing {second} (--overwrite replaces it)" in out
    assert f"render: {second}  6 frames" in out
    assert first.read_bytes() == before and probe(second).frames == 6
    render_cli(job)
    assert probe(tmp_path / "out" / "job-main-3.mov").frames == 6 and first.read_bytes() == before

    out = render_cli(job, "--overwrite")
    assert "exists; writing" not in out and f"render: {first}  6 frames" in out
    assert probe(first).frames == 6 and not (tmp_path / "out" / "job-main-4.mov").exists()
    assert not list((tmp_path / "out").glob("*.parts"))


def test_concat_keeps_an_existing_out_unless_overwrite(tmp_path, run):
    job = job_file(tmp_path, run, frames="8")
    p1, p2, joined = tmp_path / "p1.mov", tmp_path / "p2.mov", tmp_path / "joined.mov"
    render_cli(job, "--frames", "0:4", "--out", p1)
    render_cli(job, "--frames", "4:", "--out", p2)
    joined.write_bytes(b"an earlier film")
    r = CliRunner().invoke(main, ["render", "concat", str(p1), str(p2), "--out", str(joined)])
    assert r.exit_code == 0, r.output
    assert f"writing {tmp_path / 'joined-2.mov'}" in r.output
    assert joined.read_bytes() == b"an earlier film" and probe(tmp_path / "joined-2.mov").frames == 8
    r = CliRunner().invoke(main, ["render", "concat", str(p1), str(p2), "--out", str(joined), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert probe(joined).frames == 8 and not (tmp_path / "joined-3.mov").exists()


def test_an_interrupted_numbered_render_resumes_under_its_number(tmp_path, run):
    # job-main.mov is an earlier film; the new render (job-main-2.mov) is killed after its first
    # part. Run again, it finds job-main-2.mov.parts and finishes it: no job-main-3, no redone part.
    job = job_file(tmp_path, run, frames="40")
    first = tmp_path / "out" / "job-main.mov"
    first.parent.mkdir(parents=True)
    first.write_bytes(b"an earlier film")
    parts = tmp_path / "out" / "job-main-2.mov.parts"
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
    result = render_job(job, threads=1, **QUIET)[0]
    assert result.path == tmp_path / "out" / "job-main-2.mov"
    assert result.frames == 40 and result.rendered <= 40 - 4 * len(finished)
    assert first.read_bytes() == b"an earlier film" and not (tmp_path / "out" / "job-main-3.mov").exists()


def test_a_cluster_render_writes_its_parts_and_file_under_the_chosen_name(tmp_path, run):
    pytest.importorskip("distributed")
    from unstable.render.farm import open_client
    job = job_file(tmp_path, run, frames="12")
    first = tmp_path / "out" / "job-main.mov"
    render_job(job, threads=1, **QUIET)
    before = first.read_bytes()
    said = []
    client = open_client(workers=1)
    try:
        result = render_job(job, threads=1, client=client, show_progress=False, echo=said.append)[0]
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    second = tmp_path / "out" / "job-main-2.mov"
    assert result.path == second and probe(second).frames == 12
    assert first.read_bytes() == before  # byte-identical
    assert second.read_bytes() == before  # the same job, frame for frame, in the chosen file
    assert any("writing" in s and str(second) in s for s in said), said
    assert not list((tmp_path / "out").glob("*.parts"))


def test_a_live_recording_never_replaces_an_earlier_one_without_overwrite(tmp_path):
    """`unstable live --record FILE` (and `make run`'s runs/demo/demo.mp4) keeps a file that is there:
    the new take goes to FILE-2 and the line says so; --overwrite replaces it."""
    from test_show import write_show

    from unstable.cli import main
    show = write_show(tmp_path)
    take = tmp_path / "take.mp4"
    take.write_bytes(b"an evening's performance")
    args = ["live", str(show), "--headless", "--seconds", "0.5", "--osc-port", "0", "--no-web", "--no-train",
            "--run", str(tmp_path / "run"), "--record", str(take)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert take.read_bytes() == b"an evening's performance"
    second = tmp_path / "take-2.mp4"
    assert f"{take} exists; recording to {second}" in r.output and second.stat().st_size > 1000
    assert (tmp_path / "take-2.mp4.automation.jsonl").exists()   # its automation beside it
    r = CliRunner().invoke(main, args + ["--overwrite"])
    assert r.exit_code == 0, r.output
    assert take.stat().st_size > 1000 and "exists" not in r.output

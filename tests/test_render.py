"""Offline renders of a tiny trained equilibrium run: real training steps, real GL, real ffmpeg.

Frame count / fps / size read back from the file, determinism, the loop seam, parts rendered with
--frames and joined equal the whole render, resume after a killed render, timelapse over a run's
checkpoints, colour variations, and every bad job failing early with one line (exit 2 on the CLI).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from unstable.cli import main
from unstable.probe import frame_md5s, probe, read_frames
from unstable.errors import ConfigError, UnstableError
from unstable.render import job_renderer, render_job
from unstable.renderjob import load_job
from unstable.trainer import train

PIECE = """
name = "tiny-eq"
kind = "equilibrium"
seed = 5
[train]
steps = 3
grid_every = 3
grid_samples = 2
checkpoint_every = 3
keep_every = 1
[generator]
resolution = 8
start_resolution = 8
z_dim = 8
w_dim = 8
mapping_layers = 1
min_channels = 4
max_channels = 8
[generator.optim]
batch = 4
lr = 0.02
[critic]
min_channels = 4
max_channels = 8
embedding_dim = 8
[critic.optim]
batch = 4
"""



def job_file(path: Path, run: Path, name: str = "job", tables: str = "", source: str = "", walk: str = "",
             **top) -> Path:
    """A tiny job: 3 keyframes x 0.5 s at 8 fps, so one loop is 12 frames; `top` overrides top-level
    keys (values written as TOML literals, None leaves a key out)."""
    keys = {"size": "[32, 16]", "fps": "8", "preset": '"ffv1"',
            "output": f'"{(path / "out").as_posix()}/{{job}}-{{variation}}.mov"', "batch": "4", "chunk": "4"}
    keys.update(top)
    text = "".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None)
    text += f'[sources.eq]\nrun = "{Path(run).as_posix()}"\n{source}'
    text += "[walk]\nkeyframes = 3\nperiod = 0.5\nseed = 11\n" + walk + textwrap.dedent(tables)
    f = path / f"{name}.toml"
    f.write_text(text)
    return f


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run of 3 real training steps with a checkpoint kept at every step (steps 0..3)."""
    root = tmp_path_factory.mktemp("render-run")
    (root / "tiny.toml").write_text(PIECE)
    return train(root / "tiny.toml", out=root / "run", show_progress=False, echo=lambda s: None)


def frames_of(path) -> np.ndarray:
    return np.stack(list(read_frames(path))).astype(np.float64)  # [T, H, W, 3]


def test_trainer_keeps_checkpoints(run):
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [f"step_{i:06d}.pt" for i in range(4)]


def test_render_h264_reads_back_exact_count_fps_and_size(tmp_path, run, gl_ctx):
    job = job_file(tmp_path, run, "ntsc", fps='"30000/1001"', preset='"h264"', frames="7",
                   output=f'"{tmp_path.as_posix()}/{{job}}.mp4"')
    results = render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None)
    assert len(results) == 1
    info = probe(results[0].path)
    assert (info.frames, info.fps, info.width, info.height) == (7, Fraction(30000, 1001), 32, 16)
    assert info.codec == "h264"
    assert not Path(str(results[0].path) + ".parts").exists()  # parts are joined and removed


def latents_of(renderer, frame: int) -> dict:
    """{display: z [1, D]} every source shows at `frame`, from its timeline's state (walk time and
    temperature) through the source's walk, as the pipeline samples them."""
    state = renderer.cursor.state(frame)
    out = {}
    for name, src in renderer.cursor.pipeline.sources.items():
        out.update(src.latents([state.walk_times[name]], [state.temperatures[name]]))
    return out


def test_render_is_deterministic_looped_without_seam_and_variations_differ(tmp_path, run, gl_ctx):
    job = job_file(tmp_path, run, tables="""
        [[variations]]
        name = "plain"
        [[variations]]
        name = "turned"
        hue = 120.0
    """)
    first = render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None)
    assert [r.variation for r in first] == ["plain", "turned"]
    plain, turned = (r.path for r in first)
    md5_a = frame_md5s(plain)
    assert len(md5_a) == 12  # one loop: 3 keyframes x 0.5 s x 8 fps
    assert frame_md5s(turned) != md5_a

    again = render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None, out=str(tmp_path / "b-{variation}.mov"),
                       variations=["plain"])
    assert frame_md5s(again[0].path) == md5_a  # same job, same machine: identical frames

    # The loop closes: the frame after the last has exactly the first frame's latents, and in the
    # picture the last-to-first step is like any other step.
    r = job_renderer(load_job(job), str(job), ctx=gl_ctx, echo=lambda s: None)
    try:
        z = [latents_of(r, k) for k in (0, 12, 11)]
        for d in z[0]:
            assert torch.equal(z[0][d], z[1][d]) and not torch.equal(z[0][d], z[2][d])
    finally:
        r.close()
    x = frames_of(plain)
    steps = np.abs(np.diff(x, axis=0)).mean(axis=(1, 2, 3))
    seam = np.abs(x[0] - x[-1]).mean()
    assert steps.min() > 0
    assert seam < 2.5 * np.median(steps), (seam, steps)


def test_parts_with_frames_concat_equal_the_whole_and_cli_errors(tmp_path, run, gl_ctx):
    job = job_file(tmp_path, run)
    whole = render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None)[0].path
    runner = CliRunner()
    p1, p2, joined = tmp_path / "p1.mov", tmp_path / "p2.mov", tmp_path / "joined.mov"
    # Ranges that cut through batches (batch 4) and chunks on purpose.
    for rng, out in (("0:5", p1), ("5:", p2)):
        res = runner.invoke(main, ["render", str(job), "--frames", rng, "--out", str(out), "--device", "cpu"])
        assert res.exit_code == 0, res.output
        assert "render:" in res.output
    assert probe(p1).frames == 5 and probe(p2).frames == 7
    res = runner.invoke(main, ["render", "concat", str(p1), str(p2), "--out", str(joined)])
    assert res.exit_code == 0, res.output
    assert frame_md5s(joined) == frame_md5s(whole)

    # One-line errors, exit status 2: a bad range, a missing part, a bad job file.
    for args, needle in ((["render", str(job), "--frames", "9:3"], "--frames"),
                         (["render", "concat", str(p1), str(tmp_path / "nope.mov"), "--out", str(joined)], "nope.mov"),
                         (["render", str(tmp_path / "missing.toml")], "missing.toml")):
        res = runner.invoke(main, args)
        assert res.exit_code == 2, (args, res.output)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr


def test_killed_render_resumes_without_redoing_finished_parts(tmp_path, run, gl_ctx):
    job = job_file(tmp_path, run, frames="40")
    reference = render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None,
                           out=str(tmp_path / "ref.mov"))[0]
    parts = tmp_path / "out" / "job-main.mov.parts"
    # A real interruption: kill the renderer process once its first part is finished.
    proc = subprocess.Popen([sys.executable, "-m", "unstable.cli", "render", str(job), "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any(parts.glob("part_*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    finished = sorted(p.name for p in parts.glob("part_*"))
    assert finished and len(finished) < 10, finished  # interrupted before the end (40 frames, chunks of 4)
    result = render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None)[0]
    assert result.frames == 40 and result.rendered <= 40 - 4 * len(finished)
    assert frame_md5s(result.path) == frame_md5s(reference.path)
    assert not parts.exists()


def test_timelapse_walks_through_the_checkpoints_with_crossfades(tmp_path, run, gl_ctx):
    job = job_file(tmp_path, run, "lapse", tables="[timelapse]\non = true\nhold = 3\ncrossfade = 1\nat = 0.25\n")
    result = render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None)[0]
    assert result.frames == 4 * 3  # 4 checkpoints (steps 0..3), 3 frames each
    x = frames_of(result.path)
    for k in range(4):
        assert np.array_equal(x[3 * k], x[3 * k + 1])  # held
        if k < 3:
            assert not np.array_equal(x[3 * k], x[3 * k + 3])  # training changed the picture
            # the last frame of a hold is halfway to the next checkpoint
            mid = (x[3 * k] + x[3 * k + 3]) / 2
            assert np.abs(x[3 * k + 2] - mid).max() <= 2.0
    assert np.array_equal(x[-1], x[-2])  # no next checkpoint to fade into


def test_temperature_curve_scales_latents_and_must_close_a_loop(tmp_path, run, gl_ctx):
    job = job_file(tmp_path, run, "temp", temperature="[[0.0, 1.0], [0.75, 2.0], [1.5, 1.0]]")
    r = job_renderer(load_job(job), str(job), ctx=gl_ctx, echo=lambda s: None)
    try:
        states = [r.cursor.state(k) for k in (0, 3, 6, 12)]
        np.testing.assert_allclose([s.temperatures["eq"] for s in states], [1.0, 1.5, 2.0, 1.0])
        walk = r.cursor.pipeline.sources["eq"].walk
        base = walk.latents_at_many([states[1].walk_times["eq"]], temperature=1.0)
        scaled = latents_of(r, 3)
        for d in scaled:
            torch.testing.assert_close(scaled[d], base[d] * 1.5)
        # What is sampled is the walk at that temperature, through the system.
        images = r.cursor.pipeline.images(r.cursor.state(3))
        system = r.cursor.pipeline.sources["eq"].system
        want = system.sample({d.split("/")[1]: z for d, z in scaled.items()}, {})
        for d, x in images.items():
            assert (x - want[d.split("/")[1]][0]).abs().max() < 1e-5
    finally:
        r.close()
    bad = job_file(tmp_path, run, "seam", temperature="[[0.0, 1.0], [1.5, 2.0]]")
    with pytest.raises(ConfigError, match=r"seam\.toml: temperature: .*loops seamlessly"):
        job_renderer(load_job(bad), str(bad), ctx=gl_ctx, echo=lambda s: None)


@pytest.mark.parametrize("top,tables,source,key", [
    ({"preset": '"h265"'}, "", "", "preset"),
    ({"size": "[33, 16]", "preset": '"h264"', "output": '"x.mp4"'}, "", "", "size"),  # yuv420p: even sizes
    ({"fps": "0"}, "", "", "fps"),
    ({"fps": '"abc"'}, "", "", "fps"),
    ({"frames": "4", "duration": "1.0"}, "", "", "frames"),
    ({"output": '"out/{job}.mov"', "hue_rotations": "3"}, "", "", "output"),
    ({"output": '"out/{nope}.mov"'}, "", "", "output"),
    ({"output": '"out/{job}.mp4"'}, "", "", "output"),  # ffv1 writes .mov
    ({}, '[layout]\npanels = ["eq/g0", "eq/g7"]\n', "", "layout.panels"),
    ({}, "", "[sources.eq.params]\nwarp = 1.0\n", "sources.eq.params.warp"),
    ({}, "", "[sources.eq.params]\ntruncation = 9.0\n", "sources.eq.params.truncation"),
    ({}, "", 'panels = ["g9"]\n', "sources.eq.panels"),
    ({}, "[timelapse]\non = true\nhold = 2\ncrossfade = 2\n", "", "timelapse.crossfade"),
    ({"run": True}, "", "", "sources.eq.run"),  # a run that does not exist
])
def test_bad_jobs_fail_before_rendering_with_one_line(tmp_path, run, gl_ctx, top, tables, source, key):
    missing_run = top.pop("run", False)
    job = job_file(tmp_path, tmp_path / "no-such-run" if missing_run else run, tables=tables, source=source, **top)
    with pytest.raises(UnstableError) as err:
        with job_renderer(load_job(job), str(job), ctx=gl_ctx, echo=lambda s: None) as r:
            r.render(show_progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{job}: {key}"), message
    assert not (tmp_path / "out").exists()  # nothing was written

    res = CliRunner().invoke(main, ["render", str(job), "--device", "cpu"])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"error: {message}"


def test_several_sources_share_one_frame_with_namespaced_panels(tmp_path, run, gl_ctx):
    notes = []
    job = job_file(tmp_path, run, "multi", size="[48, 16]", source=textwrap.dedent(f"""
        [sources.other]
        run = "{Path(run).as_posix()}/checkpoints/step_000000.pt"
        panels = ["g1"]
        [sources.later]
        run = "{(tmp_path / 'not-trained-yet').as_posix()}"
        optional = true
        [layout.styles."other/g1"]
        brightness = 0.0
        [layout.styles."later/g0"]
        hue = 30.0
    """))
    with job_renderer(load_job(job), str(job), ctx=gl_ctx, echo=notes.append) as r:
        assert list(r.cursor.pipeline.piece_of) == ["eq/g0", "eq/g1", "other/g1"]
        assert len(notes) == 1 and "sources.later.run" in notes[0]
        (_, _, picture), = list(r.iter_frames(0, 1))
        assert picture[:, :16].max() > 0 and picture[:, 32:].max() == 0  # the third cell is blacked out
        # Each source walks like a piece in a show (its own panel order), so g1 of both sources is
        # at the same latent: step 3 and step 0 of the same generator, and training changed it.
        z = latents_of(r, 0)
        assert torch.equal(z["eq/g1"], z["other/g1"])
        images = r.cursor.pipeline.images(r.cursor.state(0))
        assert not torch.equal(images["eq/g1"], images["other/g1"])


def test_hue_rotations_turn_each_file_by_its_share_of_the_circle(tmp_path, run, gl_ctx):
    # Three rotations: 0, 120 and 240 degrees about the grey axis, which are exact channel
    # permutations (120 turns red into green), so the rotated files are measured against the first
    # file's frames with their channels rolled. Lossless ffv1: the only error is GL rounding.
    job = job_file(tmp_path, run, "rot", hue_rotations="3")
    results = render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None, frame_range="0:4")
    assert [r.variation for r in results] == ["hue000", "hue001", "hue002"]
    base, turned, twice = (frames_of(r.path) for r in results)
    r, g, b = base[..., 0], base[..., 1], base[..., 2]
    assert np.abs(r - g).mean() > 5 and np.abs(g - b).mean() > 5  # colourful enough to see a turn
    assert np.abs(turned - np.stack([b, r, g], axis=-1)).max() <= 2   # red -> green, green -> blue
    assert np.abs(twice - np.stack([g, b, r], axis=-1)).max() <= 2    # red -> blue
    assert np.abs(turned - base).mean() > 5


SHIPPED_JOBS = sorted((Path(__file__).resolve().parents[1] / "render").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED_JOBS, ids=[p.stem for p in SHIPPED_JOBS])
def test_shipped_render_jobs_load_and_validate(path):
    root = path.parents[1]
    job = load_job(path)
    assert job.name == path.stem and job.sources
    names = [v.name for v in job.variation_list()]
    assert names and len(set(names)) == len(names)
    if job.hue_rotations:
        hues = [v.hue for v in job.variation_list()]
        assert hues == pytest.approx([360.0 * i / job.hue_rotations for i in range(job.hue_rotations)])
    # Each source is a run that a shipped piece (`unstable train pieces/X.toml` -> runs/X) or the
    # demo show (`unstable demo` -> runs/live/demo/<piece>) makes.
    from unstable.show import load_show
    demo = load_show(root / "shows" / "demo.toml")
    for name, source in job.sources.items():
        run = Path(source.run)
        if run.parent.as_posix() == "runs/live/demo":
            assert run.name in demo.pieces, (name, run)
        else:
            assert run.parent.as_posix() == "runs" and (root / "pieces" / f"{run.name}.toml").is_file(), (name, run)
    # Every panel the layout names belongs to one of the job's sources.
    for panel in job.layout.panels:
        assert "/" not in panel or panel.split("/")[0] in job.sources, panel


def test_parameter_curves_reach_sampling_compositor_and_walk(tmp_path, run, gl_ctx):
    """[curves]: a system parameter (truncation) changes the sampled images from the frame its curve
    moves; hue curves turn the picture as a hue variation does; a constant walk_speed of 2 is the
    walk at speed 2; a curve outside its range or on an unknown parameter is one line."""
    def frames(name, **kw):
        job = job_file(tmp_path, run, name, frames="8", **kw)
        return frames_of(render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None)[0].path)

    plain = frames("plain")
    # truncation 1 until 0.5 s (frame 4), then 0: frames 0..4 as before, later ones differ.
    trunc = frames("trunc", tables='[curves]\n"eq.truncation" = [[0.0, 1.0], [0.5, 1.0], [0.51, 0.0]]\n')
    assert all(np.array_equal(plain[i], trunc[i]) for i in range(5))
    assert all(not np.array_equal(plain[i], trunc[i]) for i in range(5, 8))
    hue = frames("hue", tables='[curves]\n"eq.hue" = [[0.0, 120.0]]\n')
    turned = frames("turned", tables="[[variations]]\nname = \"main\"\nhue = 120.0\n")
    assert np.abs(hue - turned).max() <= 2.0 and np.abs(hue - plain).max() > 50
    fast = frames("fast", tables='[curves]\n"eq.walk_speed" = [[0.0, 2.0]]\n')
    speed2 = frames("speed2", speed="2.0")
    assert np.abs(fast - speed2).max() <= 2.0 and np.abs(fast[1:] - plain[1:]).max() > 10
    for curve, needle in (('"eq.hue" = [[0.0, 500.0]]', "curves.eq.hue"),
                          ('"eq.wobble" = [[0.0, 1.0]]', "curves.eq.wobble"),
                          ('"nope.hue" = [[0.0, 1.0]]', "curves.nope.hue")):
        job = job_file(tmp_path, run, "bad", frames="8", tables=f"[curves]\n{curve}\n")
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None)

"""The `unstable` command: thin click commands over the modules that do the work."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import allocator
from .errors import UnstableError
from .explore.cli import explore
from .friendly import friendly

DEVICE = click.Choice(["auto", "cpu", "cuda"])


@click.group()
@click.version_option(package_name="unstable", message=f"%(prog)s, version %(version)s (allocator: {allocator.in_use()})")
def main():
    """unstable: neural networks that diverge from data, live and rendered."""
    _sigterm_like_ctrl_c()


def _sigterm_like_ctrl_c() -> None:
    """SIGTERM (timeout, systemd, Slurm, torchrun, a container stopping) ends every command the way
    Ctrl-C does: training writes its final checkpoint, a render keeps its finished parts, a show
    finishes its recording. Python's default for SIGTERM is to die on the spot, skipping all that."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():  # CliRunner in a thread cannot set it
        signal.signal(signal.SIGTERM, signal.default_int_handler)


@main.command()
@click.argument("piece", type=click.Path(dir_okay=False))
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Train to this total step count (default: the piece's [train] steps).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after this many minutes.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/<piece>).")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Override the piece's seed.")
@click.option("--resume", is_flag=True, help="Continue the checkpoint in the run folder.")
@friendly
def train(piece, steps, minutes, out, device, seed, resume):
    """Train PIECE (a pieces/*.toml file), writing grids, log.jsonl and checkpoints.

    A piece with a `[keeper]` table is kept between stasis and explosion as it trains (its moves
    are echoed and written to log.jsonl; its state goes with the checkpoint).

    Across processes: `torchrun --nproc_per_node N -m unstable train PIECE` (gloo on the CPU, NCCL on
    CUDA; rank 0 writes the run folder; the same checkpoints)."""
    from .explore.keeper import TrainKeeper
    from .system import resolve_device
    from .trainer import train as run_training
    import os
    folder = run_training(piece, steps=steps, out=out, device=resolve_device(device), seed=seed,
                          resume=resume, minutes=minutes, echo=click.echo, keeper=TrainKeeper)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        click.echo(f"run folder: {folder}  (latest grid: {folder / 'grid.png'})")


@main.command("eval")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder (default <first RUN>/eval).")
@click.option("--samples", type=click.IntRange(min=10), default=1000, show_default=True, help="Samples per temperature and decoder.")
@click.option("--k", type=click.IntRange(min=1), default=3, show_default=True, help="Neighbours of the k-NN manifolds.")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@friendly
def eval_runs(runs, out, samples, k, device):
    """Evaluate divergence RUNS (run folders or kept checkpoints RUN/checkpoints/step_N.pt): precision/recall
    against the base decoder, class entropy, diversity, per temperature; CSV, plot and grid PNG."""
    _live_env()  # OpenMP threads that spin between ops doubled eval's CPU time beside other work
    from .divergence.evaluate import evaluate_runs, rows_at
    from .system import resolve_device
    from .progress import progress_bar
    folder = evaluate_runs(runs, out, samples=samples, k=k, device=resolve_device(device), progress=progress_bar)
    for r in rows_at(folder / "metrics.csv", 1.0):
        click.echo(f"T=1 {r['run']:>24} {r['decoder']:>8}: precision {float(r['precision_vs_base']):.3f} "
                   f"recall {float(r['recall_vs_base']):.3f} (vs base)  precision {float(r['precision_vs_data']):.3f} "
                   f"(vs data) {float(r['precision_vs_data_judge']):.3f} (vs data, judge)  typical {float(r['typical']):.3f}  "
                   f"class entropy {float(r['class_entropy']):.3f}  confidence {float(r['confidence']):.3f}")
    import json
    for label, path in json.loads((folder / "summary.json").read_text()).get("judges", {}).items():
        click.echo(f"{label}: {path}")
    for name, m in json.loads((folder / "summary.json").read_text())["base_metrics"].items():
        if m:
            click.echo(f"base models of {name}: classifier held-out accuracy {m.get('classifier_heldout_accuracy', float('nan')):.3f}, "
                       f"VAE held-out BCE {m.get('vae_heldout_bce', float('nan')):.1f} KL {m.get('vae_heldout_kl', float('nan')):.1f}")
    click.echo(f"eval: {folder / 'metrics.csv'}, {folder / 'precision_recall.png'}, {folder / 'grid.png'}")


DEMO_SHOW = "shows/demo.toml"


def _live_env() -> None:
    """Before torch is first imported: OpenMP threads that spin after each op starve the GL
    rasteriser's threads on a CPU-only machine (see unstable/live/engine.py); let them sleep instead."""
    import os
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _run_live(show_path, *, size=None, **options):
    """`unstable live` and `unstable demo`: play the show as asked (unstable.live.launch), then the end
    lines; Ctrl-C before the show started is one line and exit status 130."""
    _live_env()
    from .live.launch import play
    try:
        return play(show_path, size=_size(size), echo=click.echo, **options)
    except KeyboardInterrupt:
        click.echo("live: interrupted before the show started", err=True)
        sys.exit(130)


@main.command()
@click.argument("show", type=click.Path(dir_okay=False))
@click.option("--headless", is_flag=True, help="No window: render through EGL (automatic when there is no display).")
@click.option("--fullscreen", is_flag=True, help="Fullscreen (also set by the show's `fullscreen`).")
@click.option("--monitor", type=click.IntRange(min=0), default=None, help="Fullscreen on this monitor (0: primary).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds of frames (seconds x fps frames).")
@click.option("--record", type=click.Path(dir_okay=False), default=None,
              help="Record the output to this .mp4 (its automation goes beside it, FILE.automation.jsonl).")
@click.option("--automation", type=click.Path(dir_okay=False), default=None,
              help="Write the show's automation (every parameter change, on the frame clock) to this file, "
                   "without recording video: `unstable render SHOW --automation FILE` plays it again.")
@click.option("--telemetry", type=click.Path(dir_okay=False), default=None,
              help="Write a JSON line each second: fps, frame times, training steps/s, parameters, memory.")
@click.option("--osc-port", type=click.IntRange(0, 65535), default=None, help="Listen for OSC on this port instead.")
@click.option("--web-port", type=click.IntRange(0, 65535), default=None,
              help="Serve the control page and OSCQuery on this TCP port instead of the show's [web] port.")
@click.option("--no-web", is_flag=True, help="No control page and no OSCQuery server.")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--run", type=click.Path(file_okay=False), default=None,
              help="Run folder for checkpoints and stills (default runs/live/<show>).")
@click.option("--fresh", is_flag=True, help="Start the pieces from their seeds, not from the run folder's checkpoints.")
@click.option("--resume", is_flag=True, help="Require every piece to continue from its checkpoint in the run "
              "folder (weights, optimisers, step, walk phase, live parameters): a missing one is an error. "
              "Without it a piece resumes when it has a checkpoint and starts from its seed otherwise.")
@click.option("--no-train", is_flag=True, help="Show the pieces without training them.")
@click.option("--size", default=None, metavar="WxH", help="Output size instead of the show's (e.g. a projector's "
              "1920x1080).")
@click.option("--reset-params", is_flag=True, help="Continue the weights but start the live parameters (training, "
              "hue, learning_rate, scene, ...) from the show's values, not from those saved with the checkpoints.")
@click.option("--audio", type=click.Path(dir_okay=False), default=None,
              help="Play the show's [[audio.map]] from this audio file, in time with the frames, instead of the "
              "show's `[audio] file` or the input device.")
@click.option("--overwrite", is_flag=True, help="Replace the --record file when it exists (default: keep it and "
              "record to a numbered name beside it, which is printed).")
@click.option("--ndi", is_flag=False, flag_value="", default=None, metavar="[NAME]",
              help="Publish the frames as an NDI source named NAME (default: the show's [outputs.ndi] name, or "
              "the show's name); the show's [outputs.ndi] panels = true adds each panel as NAME.<piece>.<panel>.")
@click.option("--midi", default=None, metavar="PORT", help="Take MIDI from this input port (a part of its name) "
              "through the show's [[midi.map]] and learned bindings, instead of the show's [midi] port.")
@click.option("--link", is_flag=True, help="Join an Ableton Link session: the show's tempo follows it and is "
              "shared back (also [tempo] link = true).")
@friendly
def live(show, headless, fullscreen, monitor, seconds, record, automation, telemetry, osc_port, web_port, no_web,
         device, run, fresh, resume, no_train, size, reset_params, audio, overwrite, ndi, midi, link):
    """Play SHOW (a shows/*.toml file) live: train its pieces, walk them in sync, take OSC, OSCQuery and
    the control page in a browser (its URL is printed)."""
    _run_live(show, headless=headless, fullscreen=fullscreen, monitor=monitor, seconds=seconds, record=record,
              telemetry=telemetry, osc_port=osc_port, device=device, run=run, fresh=fresh, train=not no_train,
              resume=resume, automation=automation, size=size, reset_params=reset_params, audio=audio,
              web_port=web_port, web=not no_web, overwrite=overwrite, ndi=ndi, midi=midi, link=link)


@main.command()
@click.argument("show", type=click.Path(dir_okay=False))
@click.option("--touchosc", type=click.Path(dir_okay=False), default=None,
              help="TouchOSC file to write (default: the show's controllers.touchosc).")
@click.option("--max", "max_", type=click.Path(dir_okay=False), default=None,
              help="Max patch to write (default: the show's controllers.max).")
@click.option("--phone", type=click.Path(dir_okay=False), default=None,
              help="TouchOSC layout for a phone held upright to write (default: beside the TouchOSC file, "
              "NAME-phone.tosc).")
@click.option("--host", default=None, help="The show machine's address as the controller reaches it "
              "(default: the show's controllers.host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="The OSC port the show listens on, as given to `unstable live --osc-port` (default: the show's "
              "[osc] port).")
@click.option("--feedback-port", type=click.IntRange(1, 65535), default=None,
              help="The port the controller listens on for feedback (default: the show's controllers.feedback_port).")
@friendly
def controllers(show, touchosc, max_, phone, host, port, feedback_port):
    """Write SHOW's controller layouts (TouchOSC .tosc for a tablet and for a phone, Max .maxpat) from its
    parameter schema, wired to the show's OSC host and port (or --host/--port)."""
    import torch

    from .control.controllers import write_controllers
    from .show_systems import build_systems, piece_actions, show_groups
    from .errors import UnstableError
    from .show import load_show
    loaded = load_show(show)
    c = loaded.settings.controllers
    touchosc = touchosc or (str(loaded.resolve(c.touchosc)) if c.touchosc else None)
    max_ = max_ or (str(loaded.resolve(c.max)) if c.max else None)
    if phone is None and touchosc and touchosc.endswith(".tosc"):
        phone = touchosc[:-len(".tosc")] + "-phone.tosc"
    if not touchosc and not max_ and not phone:
        raise UnstableError(f"{show}: nothing to write; give --touchosc/--max/--phone or set controllers.touchosc/max")
    port = port if port is not None else loaded.settings.osc.port
    if port == 0:
        raise UnstableError(f"{show}: [osc] port is 0 (any free port), so a controller cannot know it; "
                            "give --port with the port `unstable live` printed")
    systems = build_systems(loaded, torch.device("cpu"))
    groups = show_groups(loaded, systems)
    loaded.check_systems({n: s.panels() for n, s in systems.items()}, {n: g for n, g in groups.items() if n in systems})
    for path in write_controllers(groups, touchosc=touchosc, max=max_, phone=phone, host=host or c.host, port=port,
                                  feedback_port=feedback_port or c.feedback_port, title=loaded.name,
                                  actions=piece_actions(systems),
                                  scenes=[sc.name or f"scene {i}" for i, sc in enumerate(loaded.scene_list())]):
        click.echo(f"controllers: {path}")


@main.command()
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this long (default: until the window closes; 60 without a display).")
@click.option("--record", type=click.Path(dir_okay=False), default=None,
              help="Record to this .mp4 (default without a display: runs/demo/demo.mp4).")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--osc-port", type=click.IntRange(0, 65535), default=None,
              help="Listen for OSC on this UDP port (default: the demo show's 9000, or any free one when it is taken).")
@click.option("--web-port", type=click.IntRange(0, 65535), default=None,
              help="Serve the control page on this TCP port (default: the demo show's 9080, or any free one when it "
                   "is taken).")
@click.option("--overwrite", is_flag=True, help="Replace the recording when it exists (default: a numbered one "
              "beside it, runs/demo/demo-2.mp4, ...).")
@friendly
def demo(seconds, record, device, osc_port, web_port, overwrite):
    """The main job on the built-in default: play shows/demo.toml live.

    With a display, in a window (ESC ends it); without one, headless for 60 s, recorded to
    runs/demo/demo.mp4. (Offline training of one piece is `unstable train PIECE`.) When another
    program holds the show's OSC or web port, the demo takes a free one and prints it; a port
    given with --osc-port/--web-port that is taken is an error.
    """
    import os
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if not has_display:
        seconds = 60.0 if seconds is None else seconds
        record = record or "runs/demo/demo.mp4"
    _run_live(DEMO_SHOW, headless=not has_display, fullscreen=False, monitor=None, seconds=seconds, record=record,
              telemetry="runs/demo/telemetry.jsonl", osc_port=osc_port, device=device, run=None, fresh=False,
              web_port=web_port, fallback_ports=True, overwrite=overwrite)


class _RenderGroup(click.Group):
    """`unstable render JOB ...` runs a job (the `run` subcommand); `unstable render concat ...` joins parts."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help",):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_RenderGroup)
def render():
    """Render video works offline: `unstable render JOB|SHOW`, `unstable render concat`."""


def _size(text):
    import re
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 2 or int(m[2]) < 2:
        raise UnstableError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080")
    from .formats import check_work
    check_work(int(m[1]), int(m[2]))
    return int(m[1]), int(m[2])


def _is_show(path) -> bool:
    """A show file has [pieces]; a render job has [sources]."""
    from .config import read_toml
    return "pieces" in read_toml(path)


@render.command("run")
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--out", default=None, help="Output file (or PNG folder) instead of the job's pattern; "
              "may use {job}, {variation}, {index}.")
@click.option("--frames", "frame_range", metavar="A:B", default=None,
              help="Render only frames A to B-1 (a part to join later with `unstable render concat`).")
@click.option("--variation", "variations", multiple=True, metavar="NAME", help="Render only this variation (repeatable).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="A show: seconds to render (default: its automation, its scenes once, or one walk loop).")
@click.option("--preset", default="h264", show_default=True, help="A show: codec preset (h264, h264_live, prores, "
              "ffv1, h264_lossless, png).")
@click.option("--size", default=None, metavar="WxH", help="A show: output size (default: the show's).")
@click.option("--automation", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A show: replay this automation (.automation.jsonl written beside a live recording).")
@click.option("--run", type=click.Path(file_okay=False), default=None,
              help="A show: its run folder (default runs/live/<show>).")
@click.option("--midi", type=click.Path(dir_okay=False), default=None, metavar="FILE.mid",
              help="A show: play this Standard MIDI File through its [[midi.map]] and learned bindings (a "
              "performance sequenced in a DAW); it lasts as long as the file unless --seconds.")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--fresh", is_flag=True, help="Discard the finished parts of an interrupted render and start over.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch CPU threads (default: half the cores for jobs, the show's render_threads for shows). "
                   "Frames are reproducible for a given thread count.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Render the chunks on a Dask LocalCluster of this many worker processes (same output).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Render the chunks on an existing Dask cluster (workers must see the run and output folders "
                   "at the same paths).")
@click.option("--audio", type=click.Path(dir_okay=False), default=None,
              help="A show: follow this audio file (instead of its `[audio] file`): the render lasts as long as it "
              "(unless --seconds), its [[audio.map]] play from it frame by frame, and it is muxed in.")
@click.option("--overwrite", is_flag=True, help="Replace an output that exists (default: keep it and write "
              "a numbered one beside it, NAME-2.mp4, NAME-3.mp4, ...).")
@friendly
def render_run(job, out, frame_range, variations, seconds, preset, size, automation, run, midi, device, fresh,
               threads, workers, scheduler, audio, overwrite):
    """Render JOB (a render/*.toml job, or a shows/*.toml show from its run folders) to video files;
    an interrupted render resumes where it stopped. An earlier render's file is never replaced
    without --overwrite."""
    from .render import render_job, render_show
    from .system import resolve_device
    if workers and scheduler:
        raise UnstableError("--workers starts a local cluster, --scheduler joins one: give one of them")
    if scheduler:
        from .render.scheduler import parse_scheduler
        parse_scheduler(scheduler)  # a bad address is one line before the job opens
    cluster = {"workers": workers, "scheduler": scheduler}
    if _is_show(job):
        if variations:
            raise UnstableError("--variation: a show renders with its own colours (variations are for render jobs)")
        if midi is not None:
            if automation is not None:
                raise UnstableError("--midi and --automation both say what the show plays: give one of them")
            from .render.midi_file import automation_for_render
            automation, midi_seconds = automation_for_render(job, midi, run=run, seconds=seconds)
            seconds = seconds if seconds is not None else midi_seconds
        results = render_show(job, seconds=seconds, frame_range=frame_range, out=out, preset=preset, size=_size(size),
                              automation=automation, run=run, device=resolve_device(device), fresh=fresh,
                              threads=threads, echo=click.echo, audio=audio, overwrite=overwrite, **cluster)
    else:
        for opt, value in (("--seconds", seconds), ("--size", size), ("--automation", automation), ("--run", run),
                           ("--audio", audio), ("--midi", midi)):
            if value is not None:
                raise UnstableError(f"{opt}: only for shows; a render job sets it in its file ({job})")
        results = render_job(job, out=out, frame_range=frame_range, variations=variations, device=resolve_device(device),
                             fresh=fresh, threads=threads, echo=click.echo, overwrite=overwrite, **cluster)
    for r in results:
        fps = f"{r.fps.numerator}/{r.fps.denominator}" if r.fps.denominator != 1 else str(r.fps.numerator)
        click.echo(f"render: {r.path}  {r.frames} frames at {fps} fps, {r.width}x{r.height}, {r.preset} "
                   f"({r.rendered} rendered now, {r.seconds:.1f} s)")


@render.command("concat")
@click.argument("parts", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The joined file (or PNG folder).")
@click.option("--audio", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Mux this audio file into the joined file (AAC beside H.264, PCM beside ProRes/FFV1).")
@click.option("--overwrite", is_flag=True, help="Replace --out when it exists (default: write a numbered one "
              "beside it).")
@friendly
def render_concat(parts, out, audio, overwrite):
    """Join PARTS rendered with --frames (same job, in order) into one file without re-encoding."""
    from pathlib import Path

    from .probe import concat
    from .render.naming import choose_outputs
    out = str(choose_outputs([(0, None, Path(out))], overwrite, click.echo)[0][2])
    info = concat(parts, out)
    click.echo(f"concat: {out}  {info.frames} frames at {info.fps} fps, {info.width}x{info.height}, {info.codec}")
    if audio is not None:
        from .audio.mux import mux_audio, preset_for_codec
        from fractions import Fraction
        mux_audio(out, audio, preset_for_codec(info.codec, out), Fraction(info.frames) / info.fps)
        click.echo(f"concat: {audio} muxed into {out}")


main.add_command(explore)


if __name__ == "__main__":  # `python -m unstable.cli`: as `unstable.__main__.run`, this module already imported
    allocator.exec_with_jemalloc()
    main()

"""Playing a show as the command line asks: the show file opened with the options' changes, the
engine run, the end lines.

`unstable live` and `unstable demo` differ only in their options; both come here, so a new
option (an output, an input, a port) is applied to the show in one place.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UnstableError

__all__ = ["play", "with_ndi"]


def _print(line: str, err: bool = False) -> None:
    print(line, file=sys.stderr if err else sys.stdout)


def with_ndi(show, name: str):
    """`show` publishing NDI as `name` ('' : the [outputs.ndi] name, else the show's)."""
    import dataclasses

    from ..frame.ndi_sink import NdiSettings, check_ndi_name
    try:
        check_ndi_name(name, "--ndi")
    except ValueError as e:
        raise UnstableError(str(e)) from None
    out = show.settings.outputs
    ndi = dataclasses.replace(out.ndi or NdiSettings(), **({"name": name} if name else {}))
    return dataclasses.replace(show, settings=dataclasses.replace(
        show.settings, outputs=dataclasses.replace(out, ndi=ndi)))


def play(show_path, *, headless, fullscreen, monitor, seconds, record, telemetry, osc_port, device, run, fresh,
         train=True, resume=False, automation=None, size=None, reset_params=False, audio=None, web_port=None,
         web=True, fallback_ports=False, overwrite=False, ndi=None, midi=None, link=False, echo=None):
    """Open the show at `show_path` with the command line's changes (a projector's `size` (w, h), an
    NDI name, a MIDI port, Link, a record path that never overwrites unless asked, ports chosen
    before minutes of preparing the pieces), play it, and say how it went through `echo`; returns
    the LiveReport. `echo(line, err=False)`: click.echo's signature (default: print)."""
    from .engine import Engine
    from .. import compiled
    echo = echo or _print
    compiled.requested()  # a bad UNSTABLE_COMPILE is one line before minutes of preparing the pieces
    from ..show import load_show
    from ..system import resolve_device
    show = load_show(show_path)
    if size is not None:  # a projector's size instead of the show's
        import dataclasses
        w, h = size
        if w % 2 or h % 2:
            raise UnstableError(f"--size {w}x{h}: must be even in both directions (recordings are yuv420p)")
        show = dataclasses.replace(show, settings=dataclasses.replace(show.settings, size=(w, h)))
    if ndi is not None:  # --ndi [NAME]: the show's [outputs.ndi] (panels, groups) under this name
        show = with_ndi(show, ndi)
    if midi is not None or link:  # --midi PORT / --link: as if the show file said so
        import dataclasses
        s = show.settings
        show = dataclasses.replace(show, settings=dataclasses.replace(
            s, midi=dataclasses.replace(s.midi, port=midi if midi is not None else s.midi.port),
            tempo=dataclasses.replace(s.tempo, link=s.tempo.link or link)))
    if record is not None and not overwrite:  # an earlier recording is kept, as renders are
        from ..render.naming import unused
        chosen = unused(Path(record))
        if chosen != Path(record):
            echo(f"live: {record} exists; recording to {chosen} (--overwrite replaces it)")
        record = str(chosen)
    from ..ports import choose_ports  # a taken port is found now, not after minutes of preparing the pieces
    osc_port, web_port = choose_ports(show, osc_port, web_port, web=web, fallback=fallback_ports, echo=echo,
                                      name="demo" if fallback_ports else "live")
    engine = Engine(show, device=resolve_device(device), headless=headless, fullscreen=fullscreen or None,
                    monitor=monitor, seconds=seconds, record=record, telemetry=telemetry, osc_port=osc_port,
                    run_dir=run, fresh=fresh, resume=resume, train=train, echo=echo, automation=automation,
                    reset_params=reset_params, audio=audio, web_port=web_port, web=web)
    from ..control.show_inputs import ShowInputs
    inputs = ShowInputs(show)
    inputs.attach(engine)
    try:
        r = engine.run()
    finally:
        inputs.stop()
    steps = ", ".join(f"{n} {k} steps ({r.steps_per_second[n]:g}/s)" for n, k in r.steps.items())
    echo(f"live: {r.frames} frames in {r.seconds:.1f} s ({r.fps:g} fps), frame time p50 {r.interval_p50_ms:.1f} ms "
               f"p99 {r.interval_p99_ms:.1f} ms, work p50 {r.work_p50_ms:.1f} ms p99 {r.work_p99_ms:.1f} ms, "
               f"{r.late_frames} late ({r.dropped_slots} slots dropped, {r.repeated_frames} repeated in recordings); "
               f"{steps}")
    for path in r.recordings:
        echo(f"live: recorded {path}")
    for name, err in r.errors.items():
        echo(f"live: {name} stopped training: {err}", err=True)
    return r

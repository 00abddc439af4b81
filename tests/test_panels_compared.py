"""Panels compared with each other, for every filter, live and offline (issue 22, item 1).

A show and a render job put three different generators side by side (eq/g0 | eq/g1 | eq2/g0 in
32 px cells of a 96x32 frame, their 8 px images upscaled x4 by 'bicubic' and 'sharp'). Whatever
the filter, each cell must show its own generator: closest to that same cell drawn with 'linear'
than to any other cell. The upload cache once keyed panels by the address of a temporary upscaled
copy, which the next panel's copy reused: with 'bicubic' every cell showed eq/g0.
"""

from __future__ import annotations

import numpy as np
import pytest
from tqdm import tqdm

from test_show import write_show
from unstable.live import Engine
from unstable.probe import read_frames
from unstable.render import render_job, render_show
from unstable.show import load_show

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FILTERS = ("linear", "nearest", "bicubic", "sharp")  # linear first: the reference
PANELS = ("eq/g0", "eq/g1", "eq2/g0")
CELLS = [slice(32 * i, 32 * i + 32) for i in range(3)]
PANEL_LIST = "[" + ", ".join(f'"{p}"' for p in PANELS) + "]"

SHOW = f"""\
size = [96, 32]
fps = 10
[pieces.eq]
piece = "pieces/eq.toml"
[pieces.eq2]
piece = "pieces/eq2.toml"
[layout]
panels = {PANEL_LIST}
[training]
render_threads = 1
""" + "".join(f'[[scenes]]\nname = "{f}"\ncrossfade = 0\nlayout = {{panels = {PANEL_LIST}, filter = "{f}"}}\n' for f in FILTERS)


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def assert_own_panels(frame: np.ndarray, reference: np.ndarray, what: str) -> None:
    """Each cell of `frame` [H, W, 3] is nearer the same cell of `reference` than any other cell,
    and the reference's cells are different pictures (else this would prove nothing)."""
    ref = [reference[:, c].astype(float) for c in CELLS]
    got = [frame[:, c].astype(float) for c in CELLS]
    apart = min(np.abs(ref[i] - ref[j]).mean() for i in range(3) for j in range(i + 1, 3))
    assert apart > 5, f"{what}: the reference panels are too alike to compare ({apart:.1f})"
    for i, name in enumerate(PANELS):
        d = [np.abs(got[i] - r).mean() for r in ref]
        assert d[i] < min(d[j] for j in range(3) if j != i) and d[i] < apart / 2, (
            f"{what}: cell {name} is {d[i]:.1f} from itself drawn linear, {[round(x, 1) for x in d]} from each")


def test_a_live_show_draws_each_panel_its_own_generator_with_every_filter_and_renders_the_same(tmp_path, gl_ctx):
    show_path = write_show(tmp_path, SHOW)
    automation = tmp_path / "filters.automation.jsonl"
    eng = Engine(load_show(show_path), headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run",
                 train=False, automation=automation, echo=lambda s: None, progress=silent)
    live = []
    with eng:
        # Frozen walks: every scene shows the same images, only the filter changes.
        eng.params.update({"eq": {"walk_speed": 0.0}, "eq2": {"walk_speed": 0.0}})
        n = 0
        for i in range(len(FILTERS)):
            if i:
                eng.params.post_event("scene", float(i))
            for _ in range(2):  # the scene's first frame and the one after (a warm upload cache)
                eng.frame(number=n)
                live.append(eng.read().copy())
                n += 1
    for n, frame in enumerate(live):
        assert_own_panels(frame, live[0], f"live frame {n} ({FILTERS[n // 2]})")
    (result,) = render_show(show_path, seconds=len(live) / 10, out=str(tmp_path / "again.mov"), preset="ffv1",
                            automation=automation, run=tmp_path / "run", ctx=gl_ctx, echo=lambda s: None,
                            show_progress=False)
    rendered = list(read_frames(result.path))
    assert len(rendered) == len(live)
    for n, frame in enumerate(rendered):
        assert_own_panels(frame, rendered[0], f"rendered frame {n} ({FILTERS[n // 2]})")
        assert np.array_equal(frame, live[n]), f"frame {n}: the render differs from the live show"


def test_a_render_job_draws_each_panel_its_own_generator_with_every_filter(tmp_path, gl_ctx):
    write_show(tmp_path)  # the two tiny pieces, untrained: seeded weights
    out = {}
    for f in FILTERS:
        job = tmp_path / f"{f}.toml"
        job.write_text(f'size = [96, 32]\nfps = 8\nframes = 3\npreset = "ffv1"\nbatch = 3\nchunk = 3\n'
                       f'output = "{tmp_path.as_posix()}/{{job}}.mov"\n'
                       f'[layout]\npanels = {PANEL_LIST}\nfilter = "{f}"\n'
                       f'[sources.eq]\npiece = "{(tmp_path / "pieces" / "eq.toml").as_posix()}"\n'
                       f'[sources.eq2]\npiece = "{(tmp_path / "pieces" / "eq2.toml").as_posix()}"\n')
        (result,) = render_job(job, ctx=gl_ctx, show_progress=False, echo=lambda s: None)
        out[f] = list(read_frames(result.path))
        assert len(out[f]) == 3
    for f in FILTERS:
        for n, frame in enumerate(out[f]):
            assert_own_panels(frame, out["linear"][n], f"job {f}, frame {n}")

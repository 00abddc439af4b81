"""Parameters say who reads them (issue 24, item 2): each ParamSpec declares its consumer, and the
frame pipeline decides by that, not by a list of names.

The look-ahead cases use the demo's grown equilibrium state (64 px generators), as
tests/test_lookahead.py does: two panels in staggered groups of 4.
"""

from pathlib import Path

import pytest
import torch

from test_lookahead import draw, grown, pipeline  # noqa: F401 (grown is a fixture)
from unstable.errors import UnstableError
from unstable.equilibrium.piece import live_param_specs as eq_specs
from unstable.divergence.system import live_param_specs as bad_specs
from unstable.schema import CLOCK, COMPOSITOR, SAMPLING, TRAINING, ParamSpec, common_specs, show_specs
from unstable.system import load_piece

ROOT = Path(__file__).resolve().parents[1]
LOOK_AHEAD = 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def glide(grown, param, target):
    """Frames 0..11 drawn, then `param` set to `target` (it glides, smoothing > 0) and frames
    12..27 drawn: (sampler calls, frames x panels sampled) over those 16 frames, how many of them
    were still gliding, and the pictures beside those of a frame-by-frame pipeline."""
    show, systems = grown
    timeline, pipe = pipeline(show, systems, LOOK_AHEAD)
    one_t, one = pipeline(show, systems, 1)
    draw(timeline, pipe, range(12))
    draw(one_t, one, range(12))
    for t in (timeline, one_t):
        t.store.set("eq", param, target)
    la = pipe.look_ahead
    calls, sampled = la.calls, la.sampled
    gliding = 0
    pictures, reference = {}, {}
    for n in range(12, 28):
        state = timeline.advance(n)
        if state.snapshot["eq"][param] != state.targets["eq"][param]:
            gliding += 1
        pictures[n] = {d: (x * 255 + 0.5).floor().to(torch.uint8) for d, x in pipe.images(state).items()}
        reference.update(draw(one_t, one, [n]))
    for n in pictures:
        for d in pictures[n]:
            assert (pictures[n][d].int() - reference[n][d].int()).abs().max() <= 1, (param, n, d)
    return la.calls - calls, la.sampled - sampled, gliding


def test_gliding_a_training_only_parameter_keeps_the_look_ahead_batching(grown):
    calls, sampled, gliding = glide(grown, "impersonate_weight", 3.0)
    assert gliding >= 8  # smoothing 0.5 s at 30 fps: it moved for most of the 16 frames
    # Each panel sampled in its groups of 4: 16 frames x 2 panels / 4 a call, nothing sampled twice.
    assert calls == 16 * 2 // LOOK_AHEAD, calls
    assert sampled == 16 * 2, sampled


def test_gliding_a_sampling_parameter_samples_frame_by_frame_while_it_glides(grown):
    calls, sampled, gliding = glide(grown, "temperature", 0.4)
    assert gliding >= 8  # it approaches its target for most of the 16 frames
    # One call a frame (both panels) while it glides: twice the batched pipeline's 8.
    assert calls >= gliding > 16 * 2 // LOOK_AHEAD, (calls, gliding)


def test_a_training_only_jump_samples_nothing_again(grown):
    # alpha-like jumps (no smoothing): the critic's switch changes no image, so no frame re-samples.
    calls, sampled, _ = glide(grown, "critic_training", 0.0)
    assert (calls, sampled) == (16 * 2 // LOOK_AHEAD, 16 * 2)


def test_every_shipped_parameter_declares_its_consumer():
    eq = {s.name: s.reads for s in eq_specs(load_piece(ROOT / "pieces" / "equilibrium-1-1.toml"))}
    bad = {s.name: s.reads for s in bad_specs(load_piece(ROOT / "pieces" / "bad-custom-mmd.toml"))}
    common = {s.name: s.reads for s in common_specs()}
    show = {s.name: s.reads for s in show_specs(2)}
    for name in ("alpha", "beta", "batch_fraction", "learning_rate", "training"):
        assert bad[name] == TRAINING, name
    for name in ("learning_rate", "training", "critic_training", "impersonate_weight", "embedding_weight",
                 "colour_variety_weight"):
        assert eq[name] == TRAINING, name
    assert eq["temperature"] == eq["truncation"] == eq["noise"] == bad["temperature"] == SAMPLING
    assert common == {"training": TRAINING, "walk_speed": CLOCK, "hue": COMPOSITOR, "saturation": COMPOSITOR,
                      "fade": COMPOSITOR}
    assert show == {"scene": CLOCK, "master_fade": COMPOSITOR, "record": CLOCK}


def test_an_unknown_consumer_is_one_line_naming_the_parameter():
    with pytest.raises(ValueError, match=r"^warp: reads 'nobody', expected one of sampling, training"):
        ParamSpec("warp", 0.0, 1.0, 0.5, reads="nobody")


def test_a_bad_bend_cannot_take_a_training_parameters_name(tmp_path):
    # The piece's own parameter names come from its specs, not a hand list (which missed batch_fraction).
    text = (ROOT / "pieces" / "bad-custom-mmd.toml").read_text()
    piece = tmp_path / "bad.toml"
    piece.write_text(text + '\n[[bend]]\nname = "batch_fraction"\nlayer = "c14"\nop = "scale"\n')
    with pytest.raises(UnstableError, match=r"bend\[0\]\.name.*'batch_fraction' is already a live parameter"):
        load_piece(piece)


@pytest.mark.parametrize("param", ["learning_rate", "impersonate_weight", "critic_training"])
def test_a_render_job_curve_on_a_training_only_parameter_is_one_line(tmp_path, param):
    # A render runs no training: such a curve would change nothing, silently.
    from click.testing import CliRunner
    from unstable.cli import main
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").symlink_to(ROOT / "shows" / "demo.states" / "eq.pt")
    job = tmp_path / "job.toml"
    job.write_text(f'size = [32, 16]\nfps = 8\nframes = 2\npreset = "ffv1"\noutput = "{tmp_path.as_posix()}/o.mov"\n'
                   f'[sources.eq]\nrun = "{run.as_posix()}"\n[walk]\nkeyframes = 2\n'
                   f'[curves]\n"eq.{param}" = [[0.0, 1.0]]\n')
    res = CliRunner().invoke(main, ["render", str(job), "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"curves.eq.{param}" in lines[0] and "training only" in lines[0], res.stderr
    assert not (tmp_path / "o.mov").exists()

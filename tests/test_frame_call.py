"""The one frame call, `FramePipeline.frame(state) -> FrameResult`: the images it showed, the
failures it held over and its timings, with the picture left in the compositor for the sinks."""


import numpy as np
import pytest
import torch

from unstable.display.compositor import Compositor
from unstable.display.layout import Colour, Layout
from unstable.frame.pipeline import FramePipeline, FrameResult
from unstable.frame.sources import PanelSource, make_walk
from unstable.frame.timeline import FrameState
from unstable.show import SceneSettings
from unstable.system import build_system, load_piece
from unstable.walk import WalkSettings

from helpers import tiny_eq_piece

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Failing:
    """A sampler that fails from its `fail_from`-th call on (a broken mirror, a device lost)."""

    def __init__(self, system, fail_from: int):
        self.system, self.fail_from, self.calls = system, fail_from, 0

    def sample(self, latents, params):
        self.calls += 1
        if self.calls >= self.fail_from:
            raise RuntimeError("device lost")
        return self.system.sample(latents, params)


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_eq_piece("steps = 1"))
    return build_system(load_piece(path), torch.device("cpu"))


def make(system, comp, sampler=None, hold=False):
    walk = make_walk("eq", system, WalkSettings(keyframes=3, period=0.5, seed=3), torch.device("cpu"), "test")
    src = PanelSource("eq", system, sampler or system, walk, {"eq/g0": "g0", "eq/g1": "g1"})
    scenes = [SceneSettings(name="main", crossfade=0.0, layout=Layout(panels=("eq/g0", "eq/g1")), colour=Colour())]
    return FramePipeline({"eq": src}, scenes, comp, hold_failures=hold)


def state(n: int) -> FrameState:
    return FrameState(n, n / 8, {"eq": {}}, (0, None, 0.0), {"eq": n / 8})


def test_one_call_samples_composes_and_reports_images_and_timings(tiny, gl_ctx):
    comp = Compositor(gl_ctx, (32, 16))
    try:
        pipe = make(tiny, comp)
        res = pipe.frame(state(3))
        assert isinstance(res, FrameResult) and res.frame == 3 and res.errors == {}
        assert sorted(res.images) == ["eq/g0", "eq/g1"] and res.images["eq/g0"].shape == (3, 8, 8)
        assert res.sample_seconds > 0 and res.compose_seconds > 0
        picture = comp.read().copy()  # [H, W, 3] uint8: composed by the call
        assert picture.shape == (16, 32, 3) and picture.max() > 0
        # The images are the walk's at frame 3 through the system, nothing else.
        z = pipe.sources["eq"].latents([3 / 8])
        want = tiny.sample({"g0": z["eq/g0"], "g1": z["eq/g1"]}, {})
        assert torch.equal(res.images["eq/g1"], want["g1"][0])
        # A colour instead of the scene's grade changes the picture, not the images.
        again = pipe.frame(state(3), colour=Colour(hue=120.0))
        assert torch.equal(again.images["eq/g0"], res.images["eq/g0"])
        assert not np.array_equal(comp.read(), picture)
    finally:
        comp.release()


def test_a_failing_source_is_an_error_of_the_frame_live_and_raises_offline(tiny, gl_ctx):
    comp = Compositor(gl_ctx, (32, 16))
    try:
        live = make(tiny, comp, Failing(tiny, fail_from=2), hold=True)
        first = live.frame(state(0))
        assert first.errors == {}
        held = live.frame(state(1))
        assert held.errors == {"eq": "RuntimeError: device lost"}
        assert torch.equal(held.images["eq/g0"], first.images["eq/g0"])  # its last good image, held
        assert live.frame(state(2)).errors == {"eq": "RuntimeError: device lost"}
        offline = make(tiny, comp, Failing(tiny, fail_from=1))
        with pytest.raises(RuntimeError, match="device lost"):
            offline.frame(state(0))
    finally:
        comp.release()

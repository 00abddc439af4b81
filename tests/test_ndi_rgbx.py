"""NDI's whole frame leaves as GL reads it: the sink fills its mailbox buffer with the compositor's
four-component read-back (`Compositor.read_rgbx`) and hands that buffer to the sender as RGBX, so
the three-channel read and the RGB -> RGBX spread (the costliest step at 1920x1080) never run for
it; what is sent is the composed frame, pixel for pixel. Panels (tensors) become RGBX in the one
transposing copy, alpha kept where a panel has it."""

import threading

import numpy as np
import pytest
import torch

from helpers import wait_for
from test_window import xvfb  # noqa: F401 - the fixture
from unstable.display.compositor import Compositor
from unstable.display.layout import Colour, Layout
from unstable.frame.compose import Composer
from unstable.frame.ndi_sink import NdiSettings, NdiSink, _to_hwc4

pytest.importorskip("cyndilib")
CELLS = ("eq/g0", "eq/g1", "eq2/g0")


def composed(gl_ctx, size=(96, 32)):
    comp = Compositor(gl_ctx, size)
    composer = Composer(comp, {"eq/g0": "eq", "eq/g1": "eq", "eq2/g0": "eq2"})
    g = torch.Generator().manual_seed(3)
    images = {n: torch.rand(3, 8, 8, generator=g) for n in CELLS}   # [3, H, W]
    look = {"hue": 0.0, "saturation": 1.0, "fade": 1.0}
    composer.render(images, {"eq": look, "eq2": look, "show": {"master_fade": 1.0}},
                    (Layout(panels=CELLS, filter="nearest"), Colour()))
    return comp


def test_the_sink_sends_the_gl_read_back_as_rgbx_and_never_reads_three_channels(gl_ctx):
    comp = composed(gl_ctx)
    reads = []
    plain_read = comp.read
    comp.read = lambda: reads.append(1) or plain_read()
    got, done = [], threading.Event()

    def send(name):
        def record(frame, image):   # [H, W, 3] as a replaced sending step gets it
            got.append((frame, image.copy()))
            done.set()
        return record

    sink = NdiSink(NdiSettings(name="rgbx"), "show", (96, 32), 10, send=send)
    try:
        sink.put(0, comp)
        assert done.wait(30.0)
    finally:
        sink.close()
    assert reads == [], "the sink read three channels back"
    want = plain_read().copy()                                       # [H, W, 3]
    assert got[0][0] == 0 and np.array_equal(got[0][1], want)
    assert want.std() > 10                                           # a picture, not a flat colour
    rgbx = comp.read_rgbx(np.empty((32, 96, 4), np.uint8))
    assert np.array_equal(rgbx[..., :3], want)
    comp.release()


def test_panels_become_rgbx_in_one_copy_and_keep_their_alpha():
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(3, 5, 7, generator=g)
    out, opaque = _to_hwc4(rgb)
    assert opaque and out.shape == (5, 7, 4) and (out[..., 3] == 255).all()
    want = rgb.clamp(0, 1).mul(255).add(0.5).byte().permute(1, 2, 0).numpy()
    assert np.array_equal(out[..., :3], want)
    rgba = torch.rand(4, 5, 7, generator=g)
    out, opaque = _to_hwc4(rgba)
    assert not opaque and np.array_equal(out, rgba.mul(255).add(0.5).byte().permute(1, 2, 0).numpy())


def test_a_compositor_that_cannot_be_read_leaves_the_mailbox_its_buffers():
    from unstable.frame.ndi_sink import NdiSource
    src = NdiSource("broken", 10, send=lambda frame, image: None)

    def fail(buf):
        raise RuntimeError("GL context lost")

    try:
        for _ in range(2 * NdiSource.BUFFERS):
            with pytest.raises(RuntimeError):
                src.offer_into(0, (4, 4, 4), fail)
        assert src.offer_into(1, (4, 4, 4), lambda buf: buf.fill(7))   # a buffer is still there
        assert wait_for(lambda: src.sent == 1)
    finally:
        src.close()


def test_rgbx_of_a_frame_composed_into_a_window_is_upright_as_read(xvfb):
    """The window path (the frame composed into the back buffer, bottom row first in GL) reads the
    same picture, rows top to bottom, in four components as in three."""
    from unstable.display.layout import Scene
    from unstable.display.window import open_window
    g = torch.Generator().manual_seed(3)
    scene = Scene({"p": torch.rand(3, 12, 16, generator=g), "q": torch.rand(3, 20, 20, generator=g)},
                  Layout(panels=("p", "q"), filter="nearest"), Colour(hue=40))
    with open_window((64, 48), vsync=False) as window:
        comp = Compositor(window.ctx, (64, 48))
        comp.draw_into(window)
        comp.render(scene)
        assert comp._direct
        want = comp.read().copy()                                    # [H, W, 3]
        got = comp.read_rgbx(np.empty((48, 64, 4), np.uint8))
        assert np.array_equal(got[..., :3], want) and want.std() > 10
        comp.release()

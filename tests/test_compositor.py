"""The compositor on a real headless EGL context: layout, letterbox, colour, fades, reuse."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from unstable.config import ConfigError, load_dataclass
from unstable.display.compositor import Compositor
from unstable.display.layout import Colour, Layout, PanelStyle, Scene, colour_matrix, fit, place

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def solid(rgb, size=8, layout="chw"):
    """A solid image: float [3, H, W] in 0..1, or uint8 [H, W, 3]."""
    if layout == "chw":
        return torch.tensor(rgb, dtype=torch.float32).div(255).view(3, 1, 1).expand(3, size, size).clone()
    return torch.tensor(rgb, dtype=torch.uint8).view(1, 1, 3).expand(size, size, 3).clone()


def close(pixel, rgb, tol=2):
    return np.all(np.abs(pixel.astype(int) - np.array(rgb)) <= tol)


@pytest.fixture
def comp(gl_ctx):
    c = Compositor(gl_ctx, (96, 32))
    yield c
    c.release()


def test_side_by_side_puts_each_panel_in_its_cell(comp):
    # Mixed inputs: float CHW, uint8 HWC, and a 28 px panel next to 8 px ones.
    images = {"a": solid(RED), "b": solid(GREEN, layout="hwc"), "c": solid(BLUE, size=28)}
    comp.render(Scene(images))
    frame = comp.read()
    assert frame.shape == (32, 96, 3) and frame.dtype == np.uint8
    for col, rgb in enumerate((RED, GREEN, BLUE)):
        assert close(frame[16, 16 + 32 * col], rgb), (col, frame[16, 16 + 32 * col])


def test_grid_follows_panel_order_and_leaves_empty_cells_background(gl_ctx):
    comp = Compositor(gl_ctx, (40, 40))
    images = {"a": solid(RED), "b": solid(GREEN), "c": solid(BLUE)}
    layout = Layout(mode="grid", rows=2, cols=2, panels=("c", "", "a", "b"), background=(1.0, 1.0, 1.0))
    comp.render(Scene(images, layout))
    frame = comp.read()
    assert close(frame[10, 10], BLUE)          # top-left
    assert close(frame[10, 30], (255, 255, 255))  # top-right: empty cell
    assert close(frame[30, 10], RED)           # bottom-left
    assert close(frame[30, 30], GREEN)         # bottom-right
    comp.release()


def test_rows_come_back_top_to_bottom_and_left_to_right(comp):
    image = torch.zeros(3, 8, 8)
    image[0, :4, :4] = 1  # top-left red
    image[2, 4:, 4:] = 1  # bottom-right blue
    comp.render(Scene({"a": image}, Layout(fit="stretch")))
    frame = comp.read()
    assert close(frame[2, 2], RED) and close(frame[29, 93], BLUE)
    assert close(frame[2, 93], (0, 0, 0)) and close(frame[29, 2], (0, 0, 0))


def test_letterbox_keeps_aspect_with_background_bars(gl_ctx):
    comp = Compositor(gl_ctx, (32, 32))
    wide = solid(RED, size=8)[:, :4, :]  # [3, 4, 8]: twice as wide as tall
    comp.render(Scene({"a": wide}, Layout(background=(0.0, 0.0, 1.0))))
    frame = comp.read()
    # 8x4 fitted into 32x32 is 32x16 at y = 8: blue bars above and below, red in the middle.
    assert close(frame[16, 16], RED) and close(frame[9, 1], RED) and close(frame[22, 30], RED)
    assert close(frame[3, 16], BLUE) and close(frame[28, 16], BLUE)
    assert close(frame[7, 16], BLUE) and close(frame[24, 16], BLUE)
    comp.release()


def test_fit_geometry():
    assert fit("contain", (0, 0, 32, 32), (8, 4)) == ((0, 8, 32, 24), (0.0, 0.0, 1.0, 1.0))
    assert fit("stretch", (10, 0, 32, 32), (8, 4))[0] == (10, 0, 42, 32)
    assert fit("integer", (0, 0, 30, 30), (8, 8))[0] == (3, 3, 27, 27)   # x3, not x3.75
    rect, uv = fit("cover", (0, 0, 32, 32), (8, 4))                     # crop the sides
    assert rect == (0, 0, 32, 32) and uv == pytest.approx((0.25, 0.0, 0.75, 1.0))
    # Margins and gaps in fractions of the shorter side: 100x50 output, margin 0.1 = 5 px, gap 0.2 = 10 px.
    layout = Layout(margin=0.1, gap=0.2, fit="stretch")
    assert [tuple(p[1:5]) for p in place(layout, (100, 50), {"a": (8, 8), "b": (8, 8)})] == [
        (5, 5, 45, 45), (55, 5, 95, 45)]


def test_explicit_rects(gl_ctx):
    comp = Compositor(gl_ctx, (40, 20))
    layout = Layout(mode="rects", panels=("b", "a"), rects=((0.0, 0.0, 0.25, 0.5), (0.5, 0.5, 0.5, 0.5)),
                    fit="stretch")
    comp.render(Scene({"a": solid(RED), "b": solid(GREEN)}, layout))
    frame = comp.read()
    assert close(frame[4, 4], GREEN) and close(frame[15, 30], RED) and close(frame[15, 4], (0, 0, 0))
    comp.release()


def test_hue_120_turns_red_green_and_panel_styles_apply(comp):
    images = {"a": solid(RED), "b": solid(RED), "c": solid((200, 50, 50))}
    layout = Layout(styles={"b": PanelStyle(hue=240.0), "c": PanelStyle(saturation=0.0)})
    comp.render(Scene(images, layout, Colour(hue=120.0)))
    frame = comp.read()
    assert close(frame[16, 16], GREEN)   # scene grade only
    assert close(frame[16, 48], RED)     # 240 + 120 = a full turn
    grey = frame[16, 80].astype(int)
    # Panel c is desaturated by its style; the scene's hue rotation then keeps grey grey.
    assert abs(grey[0] - grey[1]) <= 1 and abs(grey[1] - grey[2]) <= 1
    assert np.allclose(colour_matrix(Colour(hue=120.0)) @ [1, 0, 0], [0, 1, 0], atol=1e-9)


def test_brightness_and_master_fade(comp):
    images = {"a": solid((200, 100, 40))}
    comp.render(Scene(images, Layout(background=(1.0, 1.0, 1.0)), Colour(brightness=0.5)))
    assert close(comp.read()[16, 48], (100, 50, 20))
    comp.render(Scene(images, Layout(background=(1.0, 1.0, 1.0))), fade=0.0)
    assert comp.read().max() == 0  # panels and background both black
    comp.render(Scene(images, Layout(background=(1.0, 1.0, 1.0))), fade=0.5)
    frame = comp.read()
    assert close(frame[16, 48], (100, 50, 20)) and close(frame[16, 2], (128, 128, 128))


def test_crossfade_mixes_two_scenes_with_different_layouts(comp):
    a = Scene({"x": solid(RED), "y": solid(GREEN)})                            # side by side: x | y
    b = Scene({"x": solid(BLUE)}, Layout(fit="stretch", background=(0.0, 1.0, 0.0)))  # one full panel
    comp.render(a, next=b, mix=0.0)
    assert close(comp.read()[16, 24], RED)
    comp.render(a, next=b, mix=1.0)
    assert close(comp.read()[16, 24], BLUE)
    comp.render(a, next=b, mix=0.5)
    frame = comp.read()
    assert close(frame[16, 24], (128, 0, 128), tol=3)   # red into blue
    assert close(frame[16, 72], (0, 128, 128), tol=3)   # green into blue
    # Away from the middle too: a mix turned the wrong way round is the same picture at 0.5 only.
    comp.render(a, next=b, mix=0.2)
    assert close(comp.read()[16, 24], (204, 0, 51), tol=3)
    comp.render(a, next=b, mix=0.8)
    assert close(comp.read()[16, 24], (51, 0, 204), tol=3)
    comp.render(a, next=b, mix=0.25, fade=0.0)
    assert comp.read().max() == 0


class _NewTensors(TorchFunctionMode):
    """Counts the tensors made from nothing (torch.empty) under it: where host buffers come from."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.empty:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_no_new_gl_objects_after_the_first_frame(gl_ctx):
    comp = Compositor(gl_ctx, (64, 32))
    a = {"a": solid(RED), "b": solid(GREEN, size=28, layout="hwc")}
    b = {"a": solid(BLUE), "b": solid(RED, size=28, layout="hwc")}
    comp.render(Scene(a), next=Scene(b, colour=Colour(hue=30.0)), mix=0.5)  # first frame: both slots
    made = comp.gl_objects_created
    buffer = comp.read()
    with _NewTensors() as later:
        for i in range(4):
            images = a if i % 2 else b
            comp.render(Scene(images), next=Scene(a, colour=Colour(hue=10.0 * i)), mix=0.3)
            comp.render(Scene(images, Layout(mode="grid", rows=2)))
            frame = comp.read()
            assert frame is buffer
            # New content did arrive through the reused textures.
            assert close(frame[8, 32], RED if i % 2 else BLUE)  # grid of 2 rows: "a" on top
    assert comp.gl_objects_created == made
    assert later.count == 0  # the panels' host buffers too are the first frame's
    assert gl_ctx.error == "GL_NO_ERROR"
    # A panel that changes size gets a new texture and host buffer: the counts move, exactly by one.
    with _NewTensors() as resized:
        comp.render(Scene({"a": solid(RED, size=16), "b": b["b"]}))
    assert comp.gl_objects_created == made + 1 and resized.count == 1
    comp.release()


def test_nearest_keeps_pixels_linear_blends(gl_ctx):
    comp = Compositor(gl_ctx, (32, 8))
    image = torch.zeros(3, 1, 2)
    image[:, :, 1] = 1  # black | white
    values = {}
    for f in ("nearest", "linear"):
        comp.render(Scene({"a": image}, Layout(fit="stretch", styles={"a": PanelStyle(filter=f)})))
        values[f] = set(np.unique(comp.read()[4, :, 0]).tolist())
    assert values["nearest"] == {0, 255}
    assert len(values["linear"]) > 4
    comp.release()


def test_grey_and_batched_inputs(comp):
    grey = torch.full((8, 8), 0.5)
    batched = solid(BLUE).unsqueeze(0)  # [1, 3, H, W]
    one_channel = torch.full((1, 8, 8), 1.0)
    comp.render(Scene({"g": grey, "b": batched, "w": one_channel}))
    frame = comp.read()
    assert close(frame[16, 16], (128, 128, 128)) and close(frame[16, 48], BLUE)
    assert close(frame[16, 80], (255, 255, 255))
    with pytest.raises(ValueError, match="batch of 2"):
        comp.render(Scene({"a": torch.zeros(2, 3, 8, 8)}))
    with pytest.raises(ValueError, match="names panel 'z'"):
        comp.render(Scene({"a": solid(RED)}, Layout(panels=("z",))))


def test_layout_from_toml_table_and_its_errors():
    table = {"mode": "grid", "rows": 2, "panels": ["g0", "g1", ""], "gap": 0.02, "fit": "integer",
             "filter": "nearest", "background": [0.1, 0.1, 0.1], "styles": {"g1": {"hue": 90, "filter": "linear"}}}
    layout = load_dataclass(Layout, table, source="shows/x.toml", prefix="layout")
    assert layout.style("g1") == PanelStyle(hue=90.0, filter="linear") and layout.style("g0") == PanelStyle()
    with pytest.raises(ConfigError, match=r"shows/x.toml: layout.rects: 1 rects for 2 panels"):
        load_dataclass(Layout, {"mode": "rects", "panels": ["a", "b"], "rects": [[0, 0, 1, 1]]},
                       source="shows/x.toml", prefix="layout")
    with pytest.raises(ConfigError, match=r"layout.styles.g1.hue: 400.0 is out of range"):
        load_dataclass(Layout, {"styles": {"g1": {"hue": 400}}}, source="shows/x.toml", prefix="layout")
    with pytest.raises(ConfigError, match=r"layout.panels: no panel 'g2'"):
        Layout(panels=("g0", "g2")).check_panels(["g0", "g1"], "shows/x.toml")


def test_resize_keeps_working(gl_ctx):
    comp = Compositor(gl_ctx, (16, 16))
    comp.render(Scene({"a": solid(GREEN)}))
    comp.resize((24, 8))
    comp.render(Scene({"a": solid(RED)}, Layout(background=(0.0, 0.0, 1.0))))
    frame = comp.read()
    assert frame.shape == (8, 24, 3) and close(frame[4, 12], RED) and close(frame[4, 1], BLUE)
    assert gl_ctx.error == "GL_NO_ERROR"
    comp.release()


# Pinned by mutation testing (docs/mutation.md): the pure geometry and colour maths, no GL.

def test_grid_cells_with_margin_gap_and_empty_cells():
    from unstable.display.layout import cells
    layout = Layout(mode="grid", rows=2)  # cols 0: as many as 3 panels need on 2 rows, i.e. 2
    assert cells(layout, (100, 60), ["a", "", "c"]) == [("a", 0, 0, 50, 30), ("c", 0, 30, 50, 30)]
    # margin and gap in fractions of the shorter side (60): 6 px and 3 px
    layout = Layout(mode="grid", rows=2, margin=0.1, gap=0.05)
    assert cells(layout, (100, 60), ["a", "b", "c"]) == [
        ("a", 6, 6, 42.5, 22.5), ("b", 51.5, 6, 42.5, 22.5), ("c", 6, 31.5, 42.5, 22.5)]
    assert cells(Layout(mode="grid", rows=1, cols=3), (90, 30), ["a", "b"]) == [
        ("a", 0, 0, 30, 30), ("b", 30, 0, 30, 30)]
    assert cells(Layout(), (90, 30), []) == []
    with pytest.raises(ValueError, match="3 panels do not fit a 1x2 grid"):
        cells(Layout(mode="grid", rows=1, cols=2), (90, 30), ["a", "b", "c"])
    # 2 * 25 px of margin and a 50 px gap leave exactly nothing: refused, not zero-width cells
    with pytest.raises(ValueError, match="margin 0.25 and gap 0.5 leave no room for 1x2 cells"):
        cells(Layout(margin=0.25, gap=0.5), (100, 100), ["a", "b"])
    with pytest.raises(ValueError, match="leave no room for 2x1 cells"):
        cells(Layout(mode="grid", rows=2, cols=1, margin=0.25, gap=0.5), (100, 100), ["a", "b"])


def test_rect_cells_scale_to_the_output_and_skip_unnamed():
    from unstable.display.layout import cells
    layout = Layout(mode="rects", panels=("a", "b"), rects=((0.0, 0.0, 0.25, 0.5), (0.5, 0.25, 0.5, 0.75)))
    assert cells(layout, (40, 20), ["a", "b"]) == [("a", 0, 0, 10, 10), ("b", 20, 5, 20, 15)]
    assert cells(layout, (40, 20), ["", "b"]) == [("b", 20, 5, 20, 15)]


def test_fit_offsets_tall_images_and_integer_downscale():
    assert fit("contain", (10, 20, 32, 32), (8, 4)) == ((10, 28, 42, 44), (0.0, 0.0, 1.0, 1.0))
    assert fit("contain", (0, 0, 32, 32), (4, 8))[0] == (8, 0, 24, 32)
    rect, uv = fit("cover", (5, 5, 32, 32), (4, 8))  # crop top and bottom
    assert rect == (5, 5, 37, 37) and uv == pytest.approx((0.0, 0.25, 1.0, 0.75))
    rect, uv = fit("cover", (0, 0, 40, 20), (10, 10))
    assert rect == (0, 0, 40, 20) and uv == pytest.approx((0.0, 0.25, 1.0, 0.75))
    # integer: an image larger than its cell is shrunk like 'contain', never floored to 0
    assert fit("integer", (0, 0, 10, 10), (20, 10))[0] == (0, 2, 10, 7)
    assert fit("integer", (0, 0, 20, 20), (8, 8))[0] == (2, 2, 18, 18)     # x2, not x2.5
    assert fit("stretch", (3, 4, 5, 6), (100, 1)) == ((3, 4, 8, 10), (0.0, 0.0, 1.0, 1.0))


def test_place_uses_the_layout_panels_or_every_size_in_order():
    sizes = {"a": (8, 8), "b": (8, 8)}
    assert [p.name for p in place(Layout(), (32, 16), sizes)] == ["a", "b"]
    assert [p.name for p in place(Layout(panels=("b",)), (32, 16), sizes)] == ["b"]
    assert [p.name for p in place(Layout(), (32, 16), sizes, names=["b", "a"])] == ["b", "a"]
    assert place(Layout(fit="cover"), (32, 16), {"a": (4, 8)})[0] == (
        "a", 0, 0, 32, 16, 0.0, 0.375, 1.0, 0.625)


def test_colour_matrix_rotates_about_grey_then_desaturates_then_gains():
    from unstable.display.compositor import _is_identity
    red = np.array([1.0, 0.0, 0.0])
    assert _is_identity(colour_matrix(Colour()))
    np.testing.assert_allclose(colour_matrix(Colour(hue=120)) @ red, [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(colour_matrix(Colour(hue=-120)) @ red, [0, 0, 1], atol=1e-12)
    # 60 degrees about (1, 1, 1): Rodrigues' formula gives (2/3, 2/3, -1/3)
    np.testing.assert_allclose(colour_matrix(Colour(hue=60)) @ red, [2 / 3, 2 / 3, -1 / 3], atol=1e-12)
    grey = np.array([0.3, 0.3, 0.3])
    np.testing.assert_allclose(colour_matrix(Colour(hue=73)) @ grey, grey, atol=1e-12)
    # saturation 0: Rec. 709 luma in every channel; applied after the hue turn (red -> green first)
    np.testing.assert_allclose(colour_matrix(Colour(saturation=0)) @ red, [0.2126] * 3, atol=1e-12)
    np.testing.assert_allclose(colour_matrix(Colour(hue=120, saturation=0)) @ red, [0.7152] * 3, atol=1e-12)
    np.testing.assert_allclose(colour_matrix(Colour(saturation=2)) @ red,
                               [2 - 0.2126, -0.2126, -0.2126], atol=1e-12)
    np.testing.assert_allclose(colour_matrix(Colour(brightness=0.5, saturation=0)) @ red, [0.1063] * 3, atol=1e-12)
    assert not _is_identity(colour_matrix(Colour(brightness=1.001)))
    assert _is_identity(np.eye(3) + 1e-7) and not _is_identity(np.eye(3) + 1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="rects"), "panels: mode 'rects' needs the panel names"),
    (dict(mode="rects", panels=("a",), rects=()), "rects: 0 rects for 1 panels, expected one per panel"),
    (dict(mode="rects", panels=("a",), rects=((0.0, 0.0, 0.0, 0.5),)), "rect 0 \\[0.0, 0.0, 0.0, 0.5\\] must have"),
    (dict(mode="rects", panels=("a",), rects=((0.0, 0.0, 0.5, 0.0),)), "rect 0 .* must have a positive size"),
    (dict(mode="rects", panels=("a",), rects=((0.75, 0.0, 0.5, 0.5),)), "lie inside 0..1"),
    (dict(mode="rects", panels=("a",), rects=((0.0, 0.75, 0.5, 0.5),)), "lie inside 0..1"),
    (dict(mode="grid", rects=((0.0, 0.0, 1.0, 1.0),)), "rects: only used with mode 'rects', not 'grid'"),
    (dict(mode="grid", rows=1, cols=2, panels=("a", "b", "c")), "panels: 3 panels do not fit a 1x2 grid"),
])
def test_layout_refuses_impossible_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Layout(**kwargs)


def test_layout_accepts_edge_cases():
    Layout(mode="rects", panels=("a", "b"), rects=((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 0.5 + 1e-10, 1.0)))
    Layout(mode="grid", rows=1, cols=2, panels=("a", "b"))          # exactly full
    Layout(mode="grid", rows=1, panels=("a", "b", "c"))              # cols 0: grows to fit
    Layout(mode="side_by_side", panels=("a", "b", "c"), rows=1, cols=2)  # cols only bind a grid
    assert Layout(panels=("b",)).panel_names(["a", "b"]) == ["b"]
    assert Layout().panel_names(["a", "b"]) == ["a", "b"]
    with pytest.raises(ConfigError, match="shows/x.toml: layout.styles: no panel 'z', expected one of 'a', 'b'$"):
        Layout(styles={"z": PanelStyle()}).check_panels(["a", "b"], "shows/x.toml")
    Layout(panels=("a", ""), styles={"b": PanelStyle()}).check_panels(["a", "b"], "shows/x.toml")


def test_quality_upscale_filters_make_a_small_image_deliberate_on_a_big_panel(gl_ctx):
    """'bicubic' and 'sharp' upscale a small image by a whole factor before drawing: a hard edge
    stays steeper than linear filtering makes it, 'sharp' steeper still; values stay in range."""
    from unstable.display.layout import upscale_factor
    assert upscale_factor((256, 256), (64, 64)) == 4 and upscale_factor((200, 200), (64, 64)) == 3
    assert upscale_factor((900, 900), (64, 64)) == 4  # capped: GL's linear filter does the rest
    assert upscale_factor((50, 50), (64, 64)) == 1
    comp = Compositor(gl_ctx, (128, 128))
    x = torch.zeros(3, 8, 8)
    x[:, :, 4:] = 1.0  # a vertical edge in the middle
    edges = {}
    for filt in ("linear", "bicubic", "sharp"):
        comp.render(Scene({"p": x}, Layout(panels=("p",), filter=filt, fit="stretch")))
        row = comp.read()[64, :, 0].astype(float)
        edges[filt] = np.abs(np.diff(row)).max()
        assert row.min() >= 0 and row.max() <= 255 and row[:20].max() < 10 and row[-20:].min() > 245
    assert edges["bicubic"] > edges["linear"] and edges["sharp"] > edges["bicubic"], edges
    comp.release()


def test_integer_fit_between_one_and_two_times_keeps_whole_pixels():
    # A cell 1.5x the image: the largest whole scale is 1 (centred), not 1.5 as 'contain' would draw.
    assert fit("integer", (0, 0, 150, 150), (100, 100))[0] == (25, 25, 125, 125)
    assert fit("contain", (0, 0, 150, 150), (100, 100))[0] == (0, 0, 150, 150)
    assert fit("integer", (0, 0, 100, 100), (100, 100))[0] == (0, 0, 100, 100)  # exactly 1x


def test_side_by_side_is_one_row_whatever_rows_and_cols_say():
    from unstable.display.layout import cells
    names = ["a", "b", "c", "d"]
    got = cells(Layout(mode="side_by_side", rows=2, cols=3), (400, 100), names)
    assert got == [("a", 0.0, 0.0, 100.0, 100.0), ("b", 100.0, 0.0, 100.0, 100.0),
                   ("c", 200.0, 0.0, 100.0, 100.0), ("d", 300.0, 0.0, 100.0, 100.0)]


def test_sub_pixel_cells_are_cells_only_no_room_at_all_is_an_error():
    from unstable.display.layout import cells
    got = cells(Layout(mode="side_by_side"), (3, 2), ["a", "b", "c", "d"])  # 0.75 x 2 px each
    assert [c[3] for c in got] == [0.75] * 4 and [c[1] for c in got] == [0.0, 0.75, 1.5, 2.25]
    got = cells(Layout(mode="grid", rows=4, cols=1), (2, 3), ["a", "b", "c", "d"])  # 2 x 0.75 px each
    assert [c[4] for c in got] == [0.75] * 4
    with pytest.raises(ValueError, match="leave no room"):
        cells(Layout(mode="side_by_side", margin=0.49, gap=0.5), (100, 100), ["a", "b"])


# Panels compared with each other (issue 22): a test that draws one panel cannot see a panel
# drawn with another panel's picture.

FILTERS = ("nearest", "linear", "bicubic", "sharp")


def pictures(names, size=8, seed=0):
    """A different noise picture for each name: float [3, size, size] in 0..1."""
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(3, size, size, generator=g) for n in names}


def alone(comp, images, layout, name):
    """The frame with only `name` drawn, in the cell it has among all the layout's panels."""
    import dataclasses
    panels = tuple(n if n == name else "" for n in layout.panels)
    comp.render(Scene(images, dataclasses.replace(layout, panels=panels)))
    return comp.read().copy()


@pytest.mark.parametrize("layout", [Layout(panels=("p", "q", "r"), filter=f) for f in FILTERS] + [
    Layout(panels=("p", "q", "r"), filter="linear",
           styles={"p": PanelStyle(filter="bicubic"), "q": PanelStyle(filter="sharp"), "r": PanelStyle(filter="bicubic")})],
    ids=[*FILTERS, "mixed"])
def test_every_filter_draws_each_panel_its_own_picture(gl_ctx, layout):
    """Each cell of a frame of three panels is exactly that panel drawn alone, and the three differ:
    with 'bicubic', an upload cache keyed by the address of a temporary upscaled copy showed the
    first panel in every cell."""
    comp = Compositor(gl_ctx, (96, 32))
    images = pictures(layout.panels)
    for _ in range(3):  # the same scene again: reused textures, a warm cache
        comp.render(Scene(images, layout))
        together = comp.read().copy()
        for i, name in enumerate(layout.panels):
            cell = slice(32 * i, 32 * i + 32)
            np.testing.assert_array_equal(together[:, cell], alone(comp, images, layout, name)[:, cell], err_msg=name)
    cells_ = [together[:, 32 * i:32 * i + 32].astype(float) for i in range(3)]
    assert min(np.abs(a - b).mean() for a, b in ((cells_[0], cells_[1]), (cells_[1], cells_[2]), (cells_[0], cells_[2]))) > 40
    comp.release()


@pytest.mark.parametrize("a, b", [
    (Layout(panels=("p", "q", "r"), filter="bicubic"), Layout(panels=("p", "q", "r"), filter="sharp")),
    (Layout(panels=("p", "q", "r"), filter="bicubic"), Layout(mode="grid", rows=2, panels=("p", "q", "r"), filter="bicubic")),
    (Layout(panels=("p", "q", "r"), filter="sharp"), Layout(panels=("r", "p", "q"), filter="sharp")),
], ids=["bicubic-into-sharp", "x4-into-x2", "panels-swap-cells"])
def test_a_crossfade_of_the_same_images_upscaled_differently_mixes_both_pictures(gl_ctx, a, b):
    """Both scenes of a crossfade show the same tensors; a texture is shared only when its upscale
    (factor and sharpening) and grade are the same in both, so the mix is the two pictures' mix."""
    comp = Compositor(gl_ctx, (96, 32))
    images = pictures(("p", "q", "r"))
    comp.render(Scene(images, a))
    first = comp.read().astype(float)
    comp.render(Scene(images, b))
    second = comp.read().astype(float)
    assert np.abs(first - second).mean() > 2  # the two scenes are different pictures
    for mix in (0.2, 0.5, 0.8):
        comp.render(Scene(images, a), next=Scene(images, b), mix=mix)
        got = comp.read().astype(float)
        assert np.abs(got - ((1 - mix) * first + mix * second)).max() <= 2, mix
    comp.release()


class Fresh(dict):
    """Panel images made anew on every look-up (as a view into a batch is): nothing else keeps them."""

    def __getitem__(self, name):
        return super().__getitem__(name).clone()


@pytest.mark.parametrize("filt", FILTERS)
def test_images_made_on_each_look_up_are_not_mistaken_for_each_other(gl_ctx, filt):
    """A panel image nothing else keeps is freed as soon as it is uploaded and its address goes to
    the next one made: the upload cache keeps what it keys by, so six such panels are still six
    pictures, the same frame as from images a dict keeps."""
    comp = Compositor(gl_ctx, (96, 64))
    layout = Layout(mode="grid", rows=2, panels=("p", "q", "r", "s", "t", "u"), filter=filt)
    images = pictures(layout.panels)
    for _ in range(3):
        comp.render(Scene(Fresh(images), layout))
        fresh = comp.read().copy()
        comp.render(Scene(images, layout))
        np.testing.assert_array_equal(fresh, comp.read())
    comp.release()


@pytest.mark.parametrize("layout", [
    Layout(margin=0.07, gap=0.05),                                   # side by side, letterboxed, gaps
    Layout(mode="grid", rows=2, cols=2, gap=0.03),                   # an empty cell
    Layout(mode="rects", panels=("x", "y"), rects=((0.1, 0.13, 0.31, 0.5), (0.5, 0.4, 0.45, 0.57))),
], ids=["side-by-side", "grid-with-an-empty-cell", "rects"])
def test_a_crossfade_blends_every_pixel_of_the_second_scene_exactly_once(gl_ctx, layout):
    """The second scene of a crossfade is laid straight over the first (its panels, then its
    background where it has none): black under white at mix 0.5 must be mid-grey everywhere, at
    an output size whose panel edges fall between pixels. A pixel blended twice would be lighter,
    one left out black."""
    comp = Compositor(gl_ctx, (97, 31))
    black = Scene({"x": solid((0, 0, 0)), "y": solid((0, 0, 0))}, Layout(background=(0.0, 0.0, 0.0)))
    white = Scene({"x": solid((255, 255, 255), size=7), "y": solid((255, 255, 255), size=5)},
                  dataclasses.replace(layout, background=(1.0, 1.0, 1.0)))
    comp.render(black, next=white, mix=0.5)
    frame = comp.read().astype(int)
    assert np.abs(frame - 128).max() <= 1, np.unique(frame)
    comp.release()


def test_a_second_scene_with_overlapping_panels_is_mixed_aside(gl_ctx):
    """Panels that overlap (a picture in a picture) cannot be blended straight over the first scene
    (the overlap would count twice): that scene is drawn whole aside and mixed in, as before."""
    comp = Compositor(gl_ctx, (64, 32))
    pip = Layout(mode="rects", panels=("x", "y"), rects=((0.0, 0.0, 1.0, 1.0), (0.25, 0.25, 0.5, 0.5)),
                 fit="stretch", background=(1.0, 1.0, 1.0))
    first = Scene({"x": solid(RED), "y": solid(RED)})
    second = Scene({"x": solid(BLUE), "y": solid(GREEN)}, pip)
    comp.render(first, next=second, mix=0.5)
    frame = comp.read()
    assert close(frame[16, 32], (128, 128, 0), tol=3)  # red under the inset's green, once
    assert close(frame[2, 2], (128, 0, 128), tol=3)    # red under the full panel's blue
    comp.release()


def test_gaps_and_panels_tile_the_frame():
    from unstable.display.compositor import _gaps
    from unstable.display.layout import Placement

    panels = [Placement("a", 3.5, 2.25, 40.5, 29.75, 0, 0, 1, 1), Placement("b", 50.0, 0.0, 97.0, 31.0, 0, 0, 1, 1)]
    gaps = _gaps(panels, 97, 31)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    rects = [(p.x0, p.y0, p.x1, p.y1) for p in panels] + gaps
    assert sum(area(r) for r in rects) == pytest.approx(97 * 31)
    for i, a in enumerate(rects):  # no two overlap
        for b in rects[i + 1:]:
            assert not (min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])), (a, b)
    assert _gaps([], 10, 10) == [(0.0, 0.0, 10.0, 10.0)]

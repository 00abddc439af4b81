"""The live engine's house: stills are a frame sink, the engine is split by responsibility (no
abstract base of one subclass, no class over ~250 lines, no module over ~400), and a show that
fails while opening gives back what it had started. Real GL (EGL), real sockets on loopback."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest
import torch
from test_show import write_show
from tqdm import tqdm

from unstable.display.compositor import Compositor
from unstable.display.layout import Layout, Scene
from unstable.errors import UnstableError
from unstable.frame.sinks import StillSink
from unstable.live import Engine
from unstable.show import load_show

LIVE = Path(__file__).resolve().parent.parent / "unstable" / "live"

OVER_THE_FLOOR: set[str] = set()


def _solid(compositor: Compositor, rgb) -> None:
    image = torch.tensor(rgb, dtype=torch.float32)[:, None, None].expand(3, 4, 4).contiguous()  # [3, H, W]
    compositor.render(Scene({"a": image}, Layout(panels=("a",), filter="nearest")))


def test_a_still_sink_reads_back_only_the_frame_after_a_request(gl_ctx):
    comp = Compositor(gl_ctx, (16, 8))
    taken = []
    sink = StillSink(lambda pixels, frame: taken.append((frame, pixels.copy())))
    _solid(comp, (1.0, 0.0, 0.0))
    sink.put(0, comp)
    assert taken == []  # nobody asked: no still, no readback
    sink.request()
    sink.request()  # two requests before a frame: one still
    _solid(comp, (0.0, 1.0, 0.0))
    sink.put(1, comp)
    _solid(comp, (0.0, 0.0, 1.0))
    sink.put(2, comp)
    assert [f for f, _ in taken] == [1] and sink.taken == 1
    frame, pixels = taken[0]
    assert pixels.shape == (8, 16, 3) and pixels[4, 8].tolist() == [0, 255, 0]  # frame 1's picture
    comp.release()


def _classes(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ClassDef):
            yield node


def test_the_live_house_has_no_abstract_base_and_no_oversized_module_or_class():
    abstract, big_classes, big_modules = [], [], []
    for f in sorted(LIVE.glob("*.py")):
        lines = len(f.read_text().splitlines())
        if lines > 400:
            big_modules.append(f"{f.name}: {lines}")
        for c in _classes(f):
            bases = {ast.unparse(b) for b in c.bases}
            if bases & {"abc.ABC", "ABC"} or any("ABCMeta" in ast.unparse(k.value) for k in c.keywords):
                abstract.append(f"{f.name}:{c.name}")
            size = c.end_lineno - c.lineno + 1
            if size > 250 and c.name not in OVER_THE_FLOOR:
                big_classes.append(f"{f.name}:{c.name} {size}")
    assert abstract == [] and big_classes == [] and big_modules == [], (abstract, big_classes, big_modules)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_show_that_fails_to_open_gives_its_osc_port_back(tmp_path):
    """The web port is taken: opening fails with one line naming it, after OSC had started on its
    port; that port is free again at once (the show can be started again on it)."""
    osc_port = _free_udp_port()
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        eng = Engine(load_show(write_show(tmp_path)), headless=True, osc_port=osc_port,
                     web_port=taken.getsockname()[1], run_dir=tmp_path / "run", train=False,
                     echo=lambda line: None, progress=lambda *a, **k: tqdm(disable=True))
        with pytest.raises(UnstableError) as err:
            eng.open()
        assert str(taken.getsockname()[1]) in str(err.value)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind(("127.0.0.1", osc_port))
    finally:
        taken.close()


def test_bad_options_are_refused_before_anything_opens(tmp_path):
    show = load_show(write_show(tmp_path))
    with pytest.raises(UnstableError, match="--fresh and --resume"):
        Engine(show, fresh=True, resume=True)
    with pytest.raises(UnstableError, match=r"--record .*take\.mov: recordings are \.mp4"):
        Engine(show, record=tmp_path / "take.mov")
    with pytest.raises(TypeError):
        Engine(show, recrod="x.mp4")  # a misspelt option is not silently ignored


def test_frames_counts_the_frames_drawn_and_last_frame_is_the_slot_of_the_last(tmp_path):
    eng = Engine(load_show(write_show(tmp_path)), headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run",
                 train=False, echo=lambda line: None, progress=lambda *a, **k: tqdm(disable=True))
    with eng:
        eng.frame(number=0)
        eng.frame(number=7)  # slots 1-6 dropped: advanced without pixels
        assert (eng.frames, eng.last_frame) == (2, 7)
        assert eng.slots.slots == 6


def test_a_piece_whose_sampling_fails_is_named_in_the_telemetry_while_it_fails(tmp_path):
    eng = Engine(load_show(write_show(tmp_path)), headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run",
                 train=False, echo=lambda line: None, progress=lambda *a, **k: tqdm(disable=True))
    with eng:
        eng.frame(number=0)
        assert "errors" not in eng.reporter.line(0.1)
        mirror = eng.pieces["eq"].mirror

        def broken(latents, values):
            raise RuntimeError("out of memory")

        mirror.sample = broken
        eng.frame(number=1)
        assert eng.reporter.line(0.2)["errors"] == {"eq (display)": "RuntimeError: out of memory"}
        del mirror.sample  # the class's own again
        eng.frame(number=2)
        assert "errors" not in eng.reporter.line(0.3)

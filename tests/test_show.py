"""Show files: the schema, one-line errors for bad files, checks against the systems, the CLI's exit
codes, and controller layouts written from a show. Tiny equilibrium pieces written in tmp_path."""

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from unstable.cli import main
from unstable.live import build_systems, show_groups
from unstable.errors import ConfigError
from unstable.show import load_show

ROOT = Path(__file__).resolve().parents[1]

TINY_EQ = """\
name = "tiny-eq"
kind = "equilibrium"
seed = {seed}
[generator]
resolution = 16
start_resolution = 8
z_dim = 8
w_dim = 8
mapping_layers = 1
channel_base = 64
min_channels = 4
max_channels = 8
[generator.optim]
batch = 2
[growth]
stable_steps = 3
fade_steps = 3
[critic]
channel_base = 64
min_channels = 4
max_channels = 8
embedding_dim = 8
[critic.optim]
batch = 2
"""

SHOW = """\
size = [96, 32]
fps = 10
[pieces.eq]
piece = "pieces/eq.toml"
[pieces.eq2]
piece = "pieces/eq2.toml"
[layout]
panels = ["eq/g0", "eq/g1", "eq2/g0"]
[[scenes]]
duration = 5
[[scenes]]
crossfade = 0.5
layout = {panels = ["eq2/g1"]}
params = {eq = {hue = 30}}
"""


def write_show(folder: Path, text: str = SHOW, name: str = "show.toml") -> Path:
    """A show with two tiny equilibrium pieces (`eq`, `eq2`) in `folder`."""
    (folder / "pieces").mkdir(exist_ok=True)
    (folder / "pieces" / "eq.toml").write_text(TINY_EQ.format(seed=1))
    (folder / "pieces" / "eq2.toml").write_text(TINY_EQ.format(seed=2))
    path = folder / name
    path.write_text(text)
    return path


def checked(path: Path):
    show = load_show(path)
    systems = build_systems(show, torch.device("cpu"))
    groups = show_groups(show, systems)
    return show, show.check_systems({n: s.panels() for n, s in systems.items()},
                                    {n: g for n, g in groups.items() if n in systems})


def test_a_show_loads_with_paths_relative_to_the_show_file(tmp_path, monkeypatch):
    path = write_show(tmp_path)
    monkeypatch.chdir(ROOT)  # nowhere near the show: piece paths must not depend on the cwd
    show, available = checked(path)
    assert show.name == "show"
    assert show.piece_paths["eq"] == tmp_path / "pieces" / "eq.toml"
    assert show.pieces["eq2"].seed == 2
    assert available == ["eq/g0", "eq/g1", "eq2/g0", "eq2/g1"]
    scenes = show.scene_list()
    assert [s.duration for s in scenes] == [5.0, 0.0]
    assert show.scene_layout(1).panels == ("eq2/g1",) and show.scene_layout(0).panels[0] == "eq/g0"
    assert dict(scenes[1].params["eq"]) == {"hue": 30.0}


SHIPPED_SHOWS = sorted((ROOT / "shows").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED_SHOWS, ids=[p.stem for p in SHIPPED_SHOWS])
def test_shipped_shows_load_and_validate_against_their_systems(path):
    # Loading checks the schema and the piece files; building the systems (no base-model training)
    # checks every panel, scene layout and scene parameter against what the pieces really have.
    show, available = checked(path)
    for name, piece_path in show.piece_paths.items():
        assert piece_path.is_file() and piece_path.resolve().parent == ROOT / "pieces", (name, piece_path)
    assert set(show.settings.layout.panels) <= set(available)
    for i in range(len(show.scene_list())):
        assert set(show.scene_layout(i).panels) <= set(available)


def test_the_demo_show_is_the_one_documented():
    show = load_show(ROOT / "shows" / "demo.toml")
    assert show.settings.size == (512, 256)
    assert show.settings.layout.panels == ("eq/g0", "eq/g1", "bad/decoder")
    assert set(show.pieces) == {"eq", "bad"}


BAD_SHOWS = [
    # (replace this, with this) in SHOW -> the key and words the one-line error must name
    ('fps = 10', 'fsp = 10', "fsp", "did you mean 'fps'"),
    ('fps = 10', 'fps = 0', "fps", "out of range"),
    ('size = [96, 32]', 'size = [95, 32]', "size", "even"),
    ('[pieces.eq]', '[pieces."e q"]', "pieces.e q", "OSC address"),
    ('[pieces.eq]', '[pieces.show]', "pieces.show", "show's own OSC group"),
    ('[pieces.eq]', '[pieces.subscribe]', "pieces.subscribe", "reserved"),
    ('[pieces.eq]', '[pieces.preset]', "pieces.preset", "reserved"),
    ('piece = "pieces/eq.toml"', 'piece = "pieces/nope.toml"', "pieces.eq.piece", "no such piece file"),
    ('piece = "pieces/eq.toml"', 'pice = "pieces/eq.toml"', "pieces.eq.pice", "did you mean 'piece'"),
    ('[layout]', '[osc]\nsubscribe = ["localhost"]\n[layout]', "osc.subscribe[0]", "host:port"),
    ('[layout]', '[osc]\nallow = ["not-an-ip"]\n[layout]', "osc.allow[0]", "not an IP"),
    ('[layout]', '[training]\nduty = 1.5\n[layout]', "training.duty", "out of range"),
    ('duration = 5', 'duration = -1', "scenes[0].duration", "out of range"),
    ('[layout]', '[layout]\nmode = "gird"', "layout.mode", "did you mean 'grid'"),
]


@pytest.mark.parametrize("old,new,key,words", BAD_SHOWS, ids=[b[2] + ":" + b[3] for b in BAD_SHOWS])
def test_bad_show_files_give_one_line_errors(tmp_path, old, new, key, words):
    assert old in SHOW
    path = write_show(tmp_path, SHOW.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_show(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {key}:"), msg
    assert words in msg


CHECKS = [
    ('panels = ["eq/g0", "eq/g1", "eq2/g0"]', 'panels = ["eq/g0", "eq/g7"]', "layout.panels", "no panel 'eq/g7'"),
    ('layout = {panels = ["eq2/g1"]}', 'layout = {panels = ["bad/decoder"]}', "scenes[1].layout.panels",
     "no panel 'bad/decoder'"),
    ('params = {eq = {hue = 30}}', 'params = {eq = {hue = 300}}', "scenes[1].params.eq.hue", "out of range"),
    ('params = {eq = {hue = 30}}', 'params = {eq = {colour = 3}}', "scenes[1].params.eq.colour",
     "not a live parameter"),
    ('params = {eq = {hue = 30}}', 'params = {bad = {hue = 3}}', "scenes[1].params.bad", "no piece 'bad'"),
    ('piece = "pieces/eq.toml"', 'piece = "pieces/eq.toml"\nparams = {temperature = 9}',
     "pieces.eq.params.temperature", "out of range"),
]


@pytest.mark.parametrize("old,new,key,words", CHECKS, ids=[c[2] for c in CHECKS])
def test_checks_against_the_systems_name_the_show_key(tmp_path, old, new, key, words):
    assert old in SHOW
    path = write_show(tmp_path, SHOW.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        checked(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {key}:"), msg
    assert words in msg


def test_a_broken_piece_file_is_named_in_the_error(tmp_path):
    path = write_show(tmp_path)
    (tmp_path / "pieces" / "eq2.toml").write_text(TINY_EQ.format(seed=2).replace("z_dim = 8", "z_dim = -8"))
    with pytest.raises(ConfigError, match=r"eq2\.toml: generator\.z_dim: -8 is out of range"):
        load_show(path)


@pytest.mark.parametrize("args,words", [
    (["live", "missing.toml"], "missing.toml: file not found"),
    (["live", "show.toml", "--record", "out.avi"], "recordings are .mp4"),
    (["live", "bad.toml"], "bad.toml: fsp: unknown key"),
    (["live", "show.toml", "--osc-port", "70000"], "70000"),
    (["live", "show.toml", "--device", "tpu"], "tpu"),
    (["controllers", "bad.toml"], "bad.toml: fsp: unknown key"),
    (["controllers", "show.toml"], "nothing to write"),
])
def test_cli_exits_2_with_one_line_on_bad_input(tmp_path, monkeypatch, args, words):
    write_show(tmp_path)
    write_show(tmp_path, SHOW.replace("fps = 10", "fsp = 10"), "bad.toml")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert "Traceback" not in result.output


def test_controllers_command_writes_touchosc_and_max_from_the_show(tmp_path, monkeypatch):
    text = SHOW + '[controllers]\ntouchosc = "ctl/show.tosc"\nmax = "ctl/show.maxpat"\nfeedback_port = 9123\n'
    path = write_show(tmp_path, text)
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["controllers", str(path)])
    assert result.exit_code == 0, result.output
    tosc, maxpat = tmp_path / "ctl" / "show.tosc", tmp_path / "ctl" / "show.maxpat"
    xml = zlib.decompress(tosc.read_bytes()).decode()
    patch = json.dumps(json.loads(maxpat.read_text()))
    for text in (xml, patch):
        # Every piece's own parameters, the common ones and the show's actions are there.
        for addr in ("/unstable/eq/temperature", "/unstable/eq2/hue", "/unstable/eq/walk_speed",
                     "/unstable/show/master_fade"):
            assert addr in text, addr
    assert "9123" in patch
    # An explicit path wins over the show's.
    out = tmp_path / "other.maxpat"
    result = CliRunner().invoke(main, ["controllers", str(path), "--max", str(out)])
    assert result.exit_code == 0 and out.is_file()


def test_the_demo_controller_layouts_match_the_demo_show(tmp_path):
    """shows/demo.tosc and demo.maxpat are generated; regenerate with `unstable controllers shows/demo.toml`."""
    if not (ROOT / "pieces" / "equilibrium-1-1.toml").exists():
        pytest.skip("pieces/equilibrium-1-1.toml is not there yet")
    tosc, maxpat = tmp_path / "demo.tosc", tmp_path / "demo.maxpat"
    result = CliRunner().invoke(main, ["controllers", str(ROOT / "shows" / "demo.toml"), "--touchosc", str(tosc),
                                       "--max", str(maxpat)])
    assert result.exit_code == 0, result.output
    assert tosc.read_bytes() == (ROOT / "shows" / "demo.tosc").read_bytes()
    assert maxpat.read_bytes() == (ROOT / "shows" / "demo.maxpat").read_bytes()


def test_loading_a_show_or_a_render_job_does_not_import_gl():
    """show.py and renderjob.py take their layout data from display/layout.py, which has no GL:
    validating a show or a job works on a machine without a GL library."""
    code = ("import sys, unstable.show, unstable.renderjob; "
            "assert 'moderngl' not in sys.modules, 'moderngl was imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_unstable_demo_plays_the_demo_show_headless_and_records(tmp_cwd, monkeypatch, one_torch_thread):
    # `make run` is `unstable demo`: without a display it plays shows/demo.toml headless, records
    # runs/demo/demo.mp4 and telemetry, and trains into runs/live/demo/. Here for 1 s in a fresh
    # folder, with the real show and equilibrium piece; the BAD piece's base models are cut to 3
    # steps (the real ones train for minutes on first use) and OSC listens on any free port.
    import re

    from unstable.checkpoint import load_checkpoint
    from unstable.probe import probe
    (tmp_cwd / "shows").mkdir()
    (tmp_cwd / "pieces").mkdir()
    show = (ROOT / "shows" / "demo.toml").read_text()
    assert "\nport = 9000" in show
    # The pieces start from their seeds here: the shipped states belong to the uncut pieces
    # (tests/test_shipped.py covers starting from them).
    show = "\n".join(ln for ln in show.splitlines() if not ln.startswith("start = "))
    (tmp_cwd / "shows" / "demo.toml").write_text(show.replace("\nport = 9000", "\nport = 0", 1))
    (tmp_cwd / "pieces" / "equilibrium-1-1.toml").write_text((ROOT / "pieces" / "equilibrium-1-1.toml").read_text())
    bad = (ROOT / "pieces" / "bad-custom-mmd.toml").read_text()
    for table, keys in {"vae": {"steps": 3, "batch": 16, "hidden": 64, "warmup": 2},
                        "classifier": {"steps": 3, "batch": 16, "width": 8, "robust": 0.0},
                        "bad": {"batch": 32, "real_pool": 300}}.items():
        for key in keys:  # drop the key from its table, then set it at the table's top
            bad = re.sub(rf"(\[{table}\][^\[]*?)\n{key} = [^\n]*", r"\1", bad, count=1, flags=re.S)
        bad, n = re.subn(rf"^\[{table}\][^\n]*\n", lambda m: m.group(0) + "".join(f"{k} = {v}\n" for k, v in keys.items()),
                         bad, count=1, flags=re.M)
        assert n == 1, table
    (tmp_cwd / "pieces" / "bad-custom-mmd.toml").write_text(bad)
    from unstable.system import load_piece
    cut = load_piece(tmp_cwd / "pieces" / "bad-custom-mmd.toml")
    assert (cut.vae.steps, cut.classifier.steps, cut.classifier.robust, cut.bad.batch) == (3, 3, 0.0, 32)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # the demo sets it for its own process

    result = CliRunner().invoke(main, ["demo", "--seconds", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "live: demo 512x256 at 30 fps" in result.output and "run folder runs/live/demo" in result.output
    info = probe(tmp_cwd / "runs" / "demo" / "demo.mp4")
    assert (info.frames, info.fps, info.width, info.height) == (30, 30, 512, 256)
    telemetry = [json.loads(x) for x in (tmp_cwd / "runs" / "demo" / "telemetry.jsonl").read_text().splitlines()]
    assert telemetry and set(telemetry[-1]["params"]) >= {"eq", "bad", "show"}
    for name in ("eq", "bad"):
        assert load_checkpoint(tmp_cwd / "runs" / "live" / "demo" / name / "checkpoint.pt")["kind"] in (
            "equilibrium", "divergence")


@pytest.mark.parametrize("walk, frames", [
    ("period = 2\nkeyframes = 3", 60),                          # 3 segments of 2 s at 10 fps
    ("period = 6\nperiod_per = \"loop\"\nkeyframes = 3", 60),   # the loop is 6 s, whatever the count
    ("period = 2\nseeds = [7, 8, 9, 10]", 80),                 # the seeds set the count, not `keyframes`
    ("period = 2\nkeyframes = 3\nloop = false", 40),           # an open path has one segment fewer
])
def test_a_show_without_scene_durations_renders_one_pass_of_its_walk(tmp_path, walk, frames):
    from unstable.render.show_frames import show_frame_count
    show = load_show(write_show(tmp_path, "size = [96, 32]\nfps = 10\n[pieces.eq]\npiece = \"pieces/eq.toml\"\n"
                                          f"[walk]\n{walk}\n"))
    assert show_frame_count(show, None, None) == frames

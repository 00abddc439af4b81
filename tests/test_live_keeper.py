"""The keeper in a show: `[keeper]` in piece and show files (validated like every table), the live
training thread consulting it, its adjustments written into the parameter store (so the
automation records them), and the artist's moves winning over it for `artist_hold` seconds.

Live tests run a headless show (EGL) of one tiny equilibrium piece at 16 px with real training
steps under the real guard, real OSC on loopback, a real automation file."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import Client, frames_until, tiny_eq_piece, tiny_piece_file
from tqdm import tqdm

from unstable.cli import main
from unstable.control.store import ParameterStore
from unstable.errors import ConfigError
from unstable.keeper_settings import KeeperSettings
from unstable.live import Engine
from unstable.live.keeping import LiveKeeper
from unstable.schema import with_common
from unstable.show import load_show
from unstable.system import build_system, load_piece

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PIECE = tiny_eq_piece("steps = 1", name="keeper-tiny", seed=3, resolution=16)

SHOW = """\
size = [32, 16]
fps = 10
[pieces.eq]
piece = "eq.toml"
{entry}
[layout]
panels = ["eq/g0", "eq/g1"]
[training]
process = false  # these tests read the keeper and guard in the training thread (test_train_process: in its process)
nice = 0
sync_every = 0.1
checkpoint_every = 0
[guard]
stasis_every = 0
{more}
"""


def write(tmp_path: Path, piece_extra: str = "", entry: str = "", more: str = "") -> Path:
    (tmp_path / "eq.toml").write_text(PIECE + piece_extra)
    path = tmp_path / "show.toml"
    path.write_text(SHOW.format(entry=entry, more=more))
    return path


# -- the tables ------------------------------------------------------------------------------------

def test_a_piece_keeper_and_the_show_one_that_replaces_it(tmp_path):
    show = load_show(write(tmp_path))
    assert show.keeper("eq") is None  # no table anywhere: no keeper
    show = load_show(write(tmp_path, "[keeper]\nevery = 7\nraise_by = 3\n"))
    assert show.keeper("eq") == KeeperSettings(every=7, raise_by=3.0)
    show = load_show(write(tmp_path, "[keeper]\nevery = 7\n", "[pieces.eq.keeper]\nevery = 9\nartist_hold = 2\n"))
    assert show.keeper("eq") == KeeperSettings(every=9, artist_hold=2.0)  # the show's whole table


@pytest.mark.parametrize("piece_extra, entry, where, key", [
    ("[keeper]\nevry = 5\n", "", "eq.toml", "keeper.evry: unknown key, did you mean 'every'?"),
    ("[keeper]\nevery = 0\n", "", "eq.toml", "keeper.every: 0 is out of range"),
    ("[keeper]\nraise_by = 0.5\n", "", "eq.toml", "keeper.raise_by: 0.5 is out of range"),
    ("[keeper]\nartist_hold = -1\n", "", "eq.toml", "keeper.artist_hold: -1"),
    ("", "[pieces.eq.keeper]\nlower_by = 2\n", "show.toml", "pieces.eq.keeper.lower_by: 2.0 is out of range"),
    ("", "[pieces.eq.keeper]\non = 'yes'\n", "show.toml", "pieces.eq.keeper.on: 'yes' is str"),
    ("", "[pieces.eq]\nkeeper = 3\n", "show.toml", "pieces.eq.keeper: 3 is int, expected a table"),
])
def test_a_bad_keeper_table_is_one_line_naming_file_and_key(tmp_path, monkeypatch, piece_extra, entry, where, key):
    if entry.startswith("[pieces.eq]"):  # a value, not a table: written inside the piece's own table
        path = write(tmp_path, piece_extra)
        path.write_text(path.read_text().replace('piece = "eq.toml"\n', 'piece = "eq.toml"\nkeeper = 3\n'))
    else:
        path = write(tmp_path, piece_extra, entry)
    with pytest.raises(ConfigError) as info:
        load_show(path)
    text = str(info.value)
    assert where in text and key in text and "\n" not in text, text
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["live", "show.toml", "--seconds", "1", "--headless"])
    assert result.exit_code == 2 and key in result.output and "Traceback" not in result.output, result.output


def test_a_bad_piece_is_also_kept_and_checked(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(tiny_piece_file(tmp_path / "cache", "steps = 1") + "[keeper]\nevery = 20\n")
    assert load_piece(path).keeper == KeeperSettings(every=20)
    path.write_text(tiny_piece_file(tmp_path / "cache", "steps = 1") + "[keeper]\nstasis_floor = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: keeper\.stasis_floor: 3\.0 is out of range"):
        load_piece(path)


# -- the artist wins for a while (clock injected: exact) ---------------------------------------------

def test_the_keeper_leaves_a_parameter_the_artist_moved_alone_for_artist_hold(tmp_path, caplog):
    (tmp_path / "eq.toml").write_text(PIECE)
    torch.manual_seed(0)
    system = build_system(load_piece(tmp_path / "eq.toml"), torch.device("cpu"))
    store = ParameterStore({"eq": with_common(system.param_specs())})
    now = [100.0]
    # stasis_floor 1: any motion counts as stasis, so every look wants a higher rate.
    keeper = LiveKeeper("eq", system, KeeperSettings(every=1, stasis_floor=1.0, raise_by=2.0, artist_hold=30.0),
                        store, clock=lambda: now[0])
    keeper.after_step(False)  # the first look has nothing to compare with
    caplog.set_level(logging.INFO, logger="unstable.keeper")
    assert keeper.after_step(False) == {"learning_rate": 2.0} and store.get("eq", "learning_rate") == 2.0
    store.set("eq", "learning_rate", 0.5, origin=("127.0.0.1", 9999))  # the artist, from a controller
    for now[0] in (110.0, 120.0, 129.9):  # 10, 20, 29.9 s after the artist's move: theirs
        # The hold is per parameter: the keeper's next lever (the batch) still moves.
        assert "learning_rate" not in keeper.after_step(False)
        assert store.get("eq", "learning_rate") == 0.5
    assert store.get("eq", "batch_fraction") == 0.125
    assert sum("leaves learning_rate to the artist" in r.message for r in caplog.records) == 1  # said once
    now[0] = 100.0 + 30.0 + 0.01  # the hold is over: the keeper goes on from the artist's value
    assert keeper.after_step(False) == {"learning_rate": 1.0} and store.get("eq", "learning_rate") == 1.0
    store.set("eq", "learning_rate", 0.25)  # the engine's own change (a scene, a preset) counts too
    assert "learning_rate" not in keeper.after_step(False) and store.get("eq", "learning_rate") == 0.25
    keeper.close()
    store.set("eq", "learning_rate", 0.3, origin=("127.0.0.1", 9999))
    assert keeper._moved["learning_rate"] == now[0]  # closed: no longer listening (same time as before)


def test_a_move_while_the_keeper_looks_is_not_overwritten(tmp_path):
    (tmp_path / "eq.toml").write_text(PIECE)
    torch.manual_seed(0)
    system = build_system(load_piece(tmp_path / "eq.toml"), torch.device("cpu"))
    store = ParameterStore({"eq": with_common(system.param_specs())})
    keeper = LiveKeeper("eq", system, KeeperSettings(every=1, stasis_floor=1.0, raise_by=2.0, artist_hold=30.0),
                        store, clock=lambda: 100.0)
    keeper.after_step(False)
    looks = keeper.keeper.observe

    def a_controller_moves_meanwhile(*args, **kw):  # as the OSC thread does during the probe
        out = looks(*args, **kw)
        store.set("eq", "learning_rate", 0.3, origin=("127.0.0.1", 9999))
        return out

    keeper.keeper.observe = a_controller_moves_meanwhile
    assert keeper.after_step(False) == {} and store.get("eq", "learning_rate") == 0.3 and keeper.changes == 0
    keeper.close()


# -- live shows -------------------------------------------------------------------------------------

def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def engine(path: Path, tmp_path: Path, **kw) -> Engine:
    return Engine(load_show(path), headless=True, osc_port=0, web_port=0, web=False, run_dir=tmp_path / "run",
                  echo=lambda line: None, progress=silent, train=True, fresh=True,
                  automation=tmp_path / "show.automation.jsonl", **kw)


def recorded(path: Path, piece: str, name: str) -> list[float]:
    """The values of piece/name the automation file set, in order."""
    out = []
    for line in path.read_text().splitlines()[1:]:
        v = json.loads(line).get("set", {}).get(piece, {}).get(name)
        if v is not None:
            out.append(v)
    return out


def test_a_live_show_pushed_into_stasis_is_brought_back_into_the_band(tmp_path, caplog, cpu_hogs):
    caplog.set_level(logging.INFO, logger="unstable.keeper")
    # The lowest learning rate: the images barely move (the offline keeper test measures the same).
    path = write(tmp_path, "[keeper]\nevery = 5\nstasis_floor = 0.005\nraise_by = 2\nartist_hold = 0\n",
                 "params = {learning_rate = 0.01}")
    with engine(path, tmp_path) as e:
        p = e.pieces["eq"]
        moving = lambda: p.keeper.keeper.motion is not None and p.keeper.keeper.motion >= 0.005  # noqa: E731
        seen = {}

        def back_in_band() -> bool:
            # Counted in looks, read as soon as a frame sees it: the training thread goes on
            # stepping between the look and the frame, so a step count would include its lead.
            if moving() and p.keeper.changes > 0:
                seen.setdefault("looks", p.keeper.looks)
                return True
            return False

        assert frames_until(e, back_in_band)
        lr = e.params.get("eq", "learning_rate")
        e.frame()
        told = e.reporter.line(0.0)["keeper"]["eq"]  # the show's telemetry says what the keeper did
        assert told["changes"] == p.keeper.changes >= 1 and told["motion"] >= 0.005
    # Back in the band within 16 looks (80 steps). 10 here when quiet, 12 in a CI run: each raise
    # glides in over 0.5 s (learning_rate's smoothing) while training goes on at the old rate, so
    # the faster the steps, the more looks a raise takes to show.
    assert seen["looks"] <= 16, seen
    assert lr > 0.01
    lines = [r.message for r in caplog.records if "stasis near" in r.message]
    assert lines and all("keeper eq:" in x and "learning_rate" in x for x in lines)
    values = recorded(tmp_path / "show.automation.jsonl", "eq", "learning_rate")
    assert values[-1] == lr and len(values) >= 1 and all(b > a for a, b in zip(values, values[1:])), values


def test_a_live_show_pushed_toward_explosion_is_brought_back_down(tmp_path, caplog, cpu_hogs):
    caplog.set_level(logging.INFO, logger="unstable.keeper")
    path = write(tmp_path, "[keeper]\nevery = 5\nmax_guard = 0.1\nlower_by = 0.5\nstasis_floor = 0\n"
                 "artist_hold = 0\n", "params = {learning_rate = 8.0}",
                 "recover_steps = 3\nmax_failures = 1000\n")
    rng = random.Random(0)
    with engine(path, tmp_path) as e:
        p = e.pieces["eq"]
        base_lr = p.system.piece.generator.optim.lr

        # Too high a rate breaks the weights (as in the offline test): above 2x the piece's rate,
        # half the steps go non-finite and the guard undoes them.
        def breaks_when_too_fast(sys_):
            if sys_.opt_g.param_groups[0]["lr"] > 2 * base_lr * 1.0001 and rng.random() < 0.5:
                with torch.no_grad():
                    next(sys_.generators[0].parameters()).fill_(float("nan"))

        p.guard.before_step.append(breaks_when_too_fast)
        assert frames_until(e, lambda: e.params.get("eq", "learning_rate") <= 1.0)
        # The rate glides to the keeper's value (its smoothing): count from when the steps get it.
        assert frames_until(e, lambda: e.snapshot["eq"]["learning_rate"] <= 1.5)
        settled = p.steps  # and past a step that may have started before
        assert frames_until(e, lambda: p.steps >= settled + 2)
        recoveries = p.guard.recoveries
        steps = p.steps
        # Down at the piece's own pace: no more steps undone over the next 20.
        assert frames_until(e, lambda: p.steps >= steps + 20)
        late = p.guard.recoveries - recoveries
        e.frame()
    assert recoveries > 0 and late == 0, (recoveries, late)
    assert all("explosion near" in r.message for r in caplog.records if "->" in r.message)
    values = recorded(tmp_path / "show.automation.jsonl", "eq", "learning_rate")
    assert values and values[-1] <= 1.0 and all(b < a for a, b in zip(values, values[1:])), values


def test_a_controller_move_over_osc_holds_the_keeper_off(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="unstable.keeper")
    path = write(tmp_path, "[keeper]\nevery = 2\nstasis_floor = 1\nraise_by = 2\nartist_hold = 600\n")
    with engine(path, tmp_path) as e:
        p = e.pieces["eq"]
        assert frames_until(e, lambda: p.keeper.changes > 0)  # stasis_floor 1: it always raises
        c = Client(e.osc.port)
        c.send("/unstable/eq/learning_rate/raw", 0.05)
        assert frames_until(e, lambda: e.params.get("eq", "learning_rate") == pytest.approx(0.05), 10)
        looks = p.keeper.looks
        assert frames_until(e, lambda: p.keeper.looks >= looks + 4)
        assert e.params.get("eq", "learning_rate") == pytest.approx(0.05)
        e.frame()
    assert any("leaves learning_rate to the artist" in r.message for r in caplog.records)
    assert recorded(tmp_path / "show.automation.jsonl", "eq", "learning_rate")[-1] == pytest.approx(0.05)
    # The hold is per parameter: meanwhile the keeper moved its other lever, recorded like the rate.
    fractions = recorded(tmp_path / "show.automation.jsonl", "eq", "batch_fraction")
    assert fractions and fractions[-1] < 1.0 and all(b < a for a, b in zip(fractions, fractions[1:])), fractions

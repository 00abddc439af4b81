"""Live training in a process of its own (a CPU show's default, unstable.live.train_process): the
weights it trains reach the frames through shared memory, its keeper's moves reach the store and
the automation, its guard undoes faults, its checkpoints are the show's, and its death (or the
show's) loses nothing.

Headless shows (EGL) of one tiny equilibrium piece at 16 px, a real spawned training process with
real steps under the real guard, real OSC on loopback, a real automation file."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import Client, frames_until, tiny_eq_piece
from tqdm import tqdm

from unstable.checkpoint import restore
from unstable.guard import TrainingGuard
from unstable.live import Engine
from unstable.live.weight_exchange import ExchangeReader, WeightExchange
from unstable.show import load_show
from unstable.system import build_system, load_piece, module_tensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PIECE = tiny_eq_piece("steps = 1", name="process-tiny", seed=3, resolution=16)

SHOW = """\
size = [32, 16]
fps = 10
[pieces.eq]
piece = "eq.toml"
{entry}
[layout]
panels = ["eq/g0", "eq/g1"]
[training]
nice = 0
sync_every = 0.1
checkpoint_every = 0
{training}
[guard]
stasis_every = 0
{more}
"""


def write(tmp_path: Path, piece_extra: str = "", entry: str = "", more: str = "", training: str = "") -> Path:
    (tmp_path / "eq.toml").write_text(PIECE + piece_extra)
    path = tmp_path / "show.toml"
    path.write_text(SHOW.format(entry=entry, more=more, training=training))
    return path


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def engine(path: Path, tmp_path: Path, fresh: bool = True, **kw) -> Engine:
    kw.setdefault("echo", lambda line: None)
    return Engine(load_show(path), headless=True, osc_port=0, web_port=0, web=False, run_dir=tmp_path / "run",
                  progress=silent, train=True, fresh=fresh, automation=tmp_path / "show.automation.jsonl", **kw)


def weights(modules) -> list[torch.Tensor]:
    return [t.detach().clone() for t in module_tensors(modules)]


def test_the_exchange_pairs_two_copies_of_one_piece_and_refuses_another(tmp_path):
    (tmp_path / "eq.toml").write_text(PIECE)
    a = build_system(load_piece(tmp_path / "eq.toml"), torch.device("cpu"))
    ex = WeightExchange.of(a, torch.multiprocessing.get_context("spawn").Lock())
    assert all(t.is_shared() for t in ex.tensors) and ex.version == 0 and int(ex.meta[1]) == a.step_count
    assert all(torch.equal(x, y) for x, y in zip(ex.tensors, module_tensors(a.sampled_modules())))
    ex.check_pairs(a.sampling_copy())
    (tmp_path / "wide.toml").write_text(PIECE.replace("process-tiny", "wide").replace("max_channels = 8", "max_channels = 16"))
    other = build_system(load_piece(tmp_path / "wide.toml"), torch.device("cpu"))
    with pytest.raises(ValueError, match="do not pair up"):
        ex.check_pairs(other)


def _write_and_die_holding(ex: WeightExchange, ready) -> None:
    """A trainer killed inside its write: the version moved, the lock never let go."""
    ex.lock.acquire()
    ex.meta[0] += 1
    ready.set()
    time.sleep(60)


def test_a_trainer_killed_holding_the_exchange_lock_does_not_hang_the_reader(tmp_path):
    (tmp_path / "eq.toml").write_text(PIECE)
    system = build_system(load_piece(tmp_path / "eq.toml"), torch.device("cpu"))
    ctx = torch.multiprocessing.get_context("fork")  # a tiny body: no torch work in the child
    ex = WeightExchange.of(system, ctx.Lock())
    copies = []

    class Mirror:  # records instead of raising: the reader catches a mirror's errors and logs them
        def sync_from(self, tensors, step):
            copies.append(step)

    reader = ExchangeReader({"eq": Mirror()}, {"eq": ex}, interval=0.01)  # has seen version 0
    ready = ctx.Event()
    writer = ctx.Process(target=_write_and_die_holding, args=(ex, ready))
    writer.start()
    assert ready.wait(30)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(10)
    assert ex.version == 1
    reader.start()
    start = time.monotonic()
    assert reader.poll() == 0  # waited LOCK_WAIT and left it
    time.sleep(0.1)
    reader.stop()  # its last look does not hang either
    assert time.monotonic() - start < 4 * ExchangeReader.LOCK_WAIT + 10
    assert copies == []  # the mirror kept what it had: nothing was copied under the dead writer's lock


def test_a_cpu_show_trains_in_its_own_process_and_draws_what_it_trained(tmp_path, cpu_hogs):
    with engine(write(tmp_path), tmp_path) as e:
        p = e.pieces["eq"]
        assert e.piece_set.in_process
        child = e.trainer._process
        assert child.is_alive() and child.pid != os.getpid()
        start = weights(p.mirror.system.sampled_modules())
        frames = e.frames
        # Beside two busy processes the show keeps drawing while the process trains.
        assert frames_until(e, lambda: p.steps >= 6 and p.mirror.system.step_count >= 6)
        assert e.frames - frames >= 3
        moved = weights(p.mirror.system.sampled_modules())
        assert any(not torch.equal(x, y) for x, y in zip(start, moved))  # the frames sample trained weights
        line = e.reporter.line(0.0)
        assert line["steps"]["eq"] >= 6 and line["step_count"]["eq"] >= 6 and "eq" in line["guard"]
    # The process wrote the final checkpoint after its last step, and the mirror got those same weights.
    ckpt = torch.load(tmp_path / "run" / "eq" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == p.mirror.system.step_count
    assert not child.is_alive()
    (tmp_path / "eq.toml").write_text(PIECE)
    resumed = build_system(load_piece(tmp_path / "eq.toml"), torch.device("cpu"))
    resumed.load_state_dict(ckpt["system"])
    assert all(torch.equal(x, y) for x, y in zip(module_tensors(resumed.sampled_modules()),
                                                 module_tensors(p.mirror.system.sampled_modules())))
    assert "live" in ckpt and "walk" in ckpt["live"]  # the show's live state went with it


def test_the_process_trains_the_very_weights_the_same_steps_make_here(tmp_path):
    # Compared with each other: a show resumed from its run folder trains in its process from step j
    # to k; the same piece loaded here from the step-j checkpoint takes k - j steps through the same
    # guard. Weights, optimiser state and random streams must all have crossed: bit for bit.
    path = write(tmp_path)
    with engine(path, tmp_path) as e:
        assert frames_until(e, lambda: e.pieces["eq"].steps >= 2)
    ckpt = tmp_path / "run" / "eq" / "checkpoint.pt"
    first = torch.load(ckpt, weights_only=True)
    with engine(path, tmp_path, fresh=False) as e:
        p = e.pieces["eq"]
        assert frames_until(e, lambda: p.steps >= 3)
        values = dict(e.snapshot["eq"])
    second = torch.load(ckpt, weights_only=True)
    j, k = first["step"], second["step"]
    assert k > j >= 2
    show = load_show(path)
    here = build_system(show.pieces["eq"], torch.device("cpu"))
    restore(here, first, "the first run's checkpoint")
    guard = TrainingGuard(here, show.settings.guard, "eq")
    for _ in range(k - j):
        assert guard.step(values) is not None
    mine, theirs = _tensors(here.state_dict()), _tensors(second["system"])
    assert len(mine) == len(theirs) > 0
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs)), f"steps {j} to {k}"


def _tensors(state) -> list[torch.Tensor]:
    """Every tensor of a nested state dict, in order."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for k in sorted(state, key=str) for t in _tensors(state[k])]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in _tensors(v)]
    return []


def test_the_process_runs_below_the_display_and_keeps_the_steps_cap(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text().replace("nice = 0", "nice = 5\nmax_steps_per_second = 4"))
    start = time.monotonic()  # before the process starts: its steps all fall after this
    with engine(path, tmp_path) as e:
        p = e.pieces["eq"]
        assert frames_until(e, lambda: p.steps >= 2)
        # Linux niceness stops at 19: a suite itself run under `nice -n 19` sees the process there.
        assert os.getpriority(os.PRIO_PROCESS, e.trainer._process.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
        assert os.getpriority(os.PRIO_PROCESS, 0) == os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        time.sleep(1.0)
        e.frame()
        steps, elapsed = p.steps, time.monotonic() - start
    assert steps <= 4 * elapsed + 1, (steps, elapsed)


def test_the_process_keeper_writes_into_the_store_and_the_automation(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="unstable.keeper")
    # stasis_floor 1: every look finds stasis and raises the rate.
    path = write(tmp_path, "[keeper]\nevery = 2\nstasis_floor = 1\nraise_by = 2\nartist_hold = 600\n")
    with engine(path, tmp_path) as e:
        assert e.piece_set.in_process
        assert frames_until(e, lambda: e.params.get("eq", "learning_rate") > 1.0)
        raised = e.params.get("eq", "learning_rate")
        e.frame()  # the automation records a frame's values: one frame at the keeper's before the artist's move
        c = Client(e.osc.port)  # the artist takes the rate: the keeper (in the other process) holds off
        c.send("/unstable/eq/learning_rate/raw", 0.05)
        assert frames_until(e, lambda: e.params.get("eq", "learning_rate") == pytest.approx(0.05), 10)
        p = e.pieces["eq"]
        looks = p.remote["keeper"]["looks"]
        assert frames_until(e, lambda: p.remote["keeper"]["looks"] >= looks + 3)
        assert e.params.get("eq", "learning_rate") == pytest.approx(0.05)
        e.frame()
        assert e.reporter.line(0.0)["keeper"]["eq"]["changes"] >= 1
    assert raised > 1.0
    said = [r.message for r in caplog.records]  # the process's log lines reach the show's log
    assert any("stasis near" in m for m in said) and any("leaves learning_rate to the artist" in m for m in said)
    values = []
    for line in (tmp_path / "show.automation.jsonl").read_text().splitlines()[1:]:
        v = json.loads(line).get("set", {}).get("eq", {}).get("learning_rate")
        if v is not None:
            values.append(v)
    assert raised in values and values[-1] == pytest.approx(0.05), values


def test_a_keepers_adjustment_decided_before_it_heard_of_an_artists_move_is_dropped(caplog):
    # The keeper decides in the training process from what it has heard; an artist's move that the
    # show's store takes while the keeper's adjustment is on its way must win over that adjustment.
    import types

    from unstable.control.store import ParameterStore
    from unstable.live.train_child import RemoteStore
    from unstable.live.train_process import TrainingProcess
    from unstable.schema import ParamSpec, common_specs

    caplog.set_level(logging.INFO, logger="unstable.keeper")
    store = ParameterStore({"eq": common_specs() + [ParamSpec("learning_rate", 0.01, 10.0, 1.0, log=True)]})
    show = TrainingProcess([types.SimpleNamespace(name="eq", keeper=object())], None, None, store, dict,
                           torch.device("cpu"))
    to_child, to_show = [], []
    show._send = to_child.append
    store.add_listener(show._heard)
    child = RemoteStore(to_show.append)  # the keeper's view of the store, in the process
    child.take(store.targets())

    child.set("eq", "learning_rate", 2.0)  # decided having heard of no move: taken
    show._keepers_set(*to_show.pop()[1:])
    assert store.get("eq", "learning_rate") == 2.0

    child.set("eq", "learning_rate", 4.0)  # decided; on its way while the artist moves the rate
    store.set("eq", "learning_rate", 0.05, origin=("127.0.0.1", 9000))
    show._keepers_set(*to_show.pop()[1:])
    assert store.get("eq", "learning_rate") == pytest.approx(0.05)
    assert "keeper eq: learning_rate was moved meanwhile; the keeper leaves it" in caplog.messages

    heard = to_child.pop()
    assert heard == ("heard", "eq", ["learning_rate"], 1)
    child.heard(*heard[1:])  # once the process has heard of the move, its adjustments count again
    child.set("eq", "saturation", 1.5)
    show._keepers_set(*to_show.pop()[1:])
    assert store.get("eq", "saturation") == 1.5
    assert not to_child  # the keeper's own writes are not told back to it as moves


def test_a_fault_in_the_process_is_undone_by_its_guard_and_training_goes_on(tmp_path):
    with engine(write(tmp_path, more="recover_steps = 2\nmax_failures = 100\n"), tmp_path) as e:
        p = e.pieces["eq"]
        assert frames_until(e, lambda: p.steps >= 2)
        e.trainer.inject_fault("eq", "nan")
        assert frames_until(e, lambda: (p.remote or {}).get("recoveries", 0) >= 1)
        steps = p.steps
        assert frames_until(e, lambda: p.steps >= steps + 2)
        assert p.error is None
        assert all(torch.isfinite(t).all() for t in module_tensors(p.mirror.system.sampled_modules()))


def test_a_killed_training_process_leaves_the_show_running(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="unstable.live")
    with engine(write(tmp_path), tmp_path) as e:
        p = e.pieces["eq"]
        assert frames_until(e, lambda: p.steps >= 2)
        os.kill(e.trainer._process.pid, signal.SIGKILL)
        assert frames_until(e, lambda: p.error is not None, 20)
        # Weights the process wrote before it died may still be on their way into the mirror: the
        # last it brought are those in the exchange, and the mirror holds them from now on.
        e.trainer.reader.poll()
        held = weights(p.mirror.system.sampled_modules())
        last = e.trainer.reader.exchanges["eq"].tensors
        assert all(torch.equal(x, y) for x, y in zip(held, last))
        frames = e.frames
        for _ in range(5):
            e.frame()
        assert e.frames == frames + 5 and "training process ended" in p.error
        assert all(torch.equal(x, y) for x, y in zip(held, weights(p.mirror.system.sampled_modules())))
    assert any("training process ended" in r.message for r in caplog.records)


def _training_show(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    """`unstable live` of the tiny show in a session of its own, once its training process has taken
    steps (its telemetry says so): (show, the training process's pid, run folder)."""
    run, telemetry = tmp_path / "run", tmp_path / "telemetry.jsonl"
    show = subprocess.Popen([sys.executable, "-m", "unstable", "live", str(write(tmp_path)), "--headless",
                             "--osc-port", "0", "--web-port", "0", "--seconds", "300", "--run", str(run), "--fresh", "--telemetry", str(telemetry)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    end = time.monotonic() + 120
    while time.monotonic() < end and show.poll() is None:
        time.sleep(0.5)
        lines = telemetry.read_text().splitlines() if telemetry.exists() else []
        if lines and json.loads(lines[-1]).get("steps", {}).get("eq", 0) >= 3:
            for pid in Path(f"/proc/{show.pid}/task/{show.pid}/children").read_text().split():
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmd:
                    return show, int(pid), run
    with contextlib.suppress(ProcessLookupError):
        os.killpg(show.pid, signal.SIGKILL)
    raise AssertionError(f"the show's training process took no steps: {show.communicate()[0]}")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_a_killed_show_leaves_no_training_process_and_keeps_its_training(tmp_path):
    show, child, run = _training_show(tmp_path)
    try:
        show.kill()  # no goodbye: the process finds its show gone
        show.wait()
        end = time.monotonic() + 60
        while time.monotonic() < end and not _gone(child):
            time.sleep(0.2)
        assert _gone(child), "the training process outlived its show"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(show.pid, signal.SIGKILL)
    ckpt = torch.load(run / "eq" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] >= 3  # what it trained was kept


@pytest.mark.slow
def test_sigterm_to_the_whole_group_ends_show_and_process_with_their_checkpoints(tmp_path):
    # systemd (KillMode=control-group) and a terminal's Ctrl-C signal every process of the show.
    show, child, run = _training_show(tmp_path)
    try:
        os.killpg(show.pid, signal.SIGTERM)
        out, _ = show.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(show.pid, signal.SIGKILL)
    assert show.returncode == 0 and "Traceback" not in out, out
    assert _gone(child)
    ckpt = torch.load(run / "eq" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] >= 3 and "live" in ckpt


def test_a_show_that_asks_for_the_thread_keeps_it(tmp_path):
    with engine(write(tmp_path, training="process = false"), tmp_path) as e:
        assert not e.piece_set.in_process and e.trainer.alive
        p = e.pieces["eq"]
        assert frames_until(e, lambda: p.steps >= 2)


def test_unstable_compile_on_a_show_that_trains_on_its_thread_is_one_line_and_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("UNSTABLE_COMPILE", "1")
    lines = []
    with engine(write(tmp_path, training="process = false"), tmp_path, echo=lines.append) as e:
        assert not e.piece_set.in_process
        p = e.pieces["eq"]
        assert frames_until(e, lambda: p.steps >= 2)
        assert p.system.step.__self__ is p.system  # its own step, not a compiled one (compiled.py swaps it)
    said = [line for line in lines if "UNSTABLE_COMPILE" in line]
    assert len(said) == 1 and "eagerly" in said[0], lines


@pytest.mark.slow
def test_unstable_compile_compiles_in_the_process_while_the_show_draws(tmp_path, monkeypatch, caplog, inductor_cache):
    # UNSTABLE_COMPILE=1 in a live show: the training process compiles its grown piece's step
    # (inductor; the session's cache, which test_compile_training may have warmed) and trains on
    # through it; the show draws meanwhile.
    from test_compile_training import GROWING  # its piece: the graphs that test compiled, if it ran

    monkeypatch.setenv("UNSTABLE_COMPILE", "1")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache))
    caplog.set_level(logging.WARNING, logger="unstable.live")
    show = write(tmp_path)
    (tmp_path / "eq.toml").write_text(GROWING)  # grown from its third step: two steps eager first
    with engine(show, tmp_path) as e:
        p = e.pieces["eq"]
        assert e.piece_set.in_process
        said = lambda text: any(text in r.getMessage() for r in caplog.records)  # noqa: E731
        assert frames_until(e, lambda: said("eq: compiling the training step"), timeout=60)
        frames = e.frames
        assert frames_until(e, lambda: said("eq: compiled the training step in"), timeout=240)
        assert e.frames - frames >= 10  # frames kept coming while the process compiled
        compiled_at = p.steps
        assert frames_until(e, lambda: p.steps >= compiled_at + 3 and p.mirror.system.step_count >= compiled_at + 3)
        assert not said("failed")


def test_a_bad_unstable_compile_is_one_line_before_the_show_opens(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from unstable.cli import main
    monkeypatch.setenv("UNSTABLE_COMPILE", "yes")
    result = CliRunner().invoke(main, ["live", str(write(tmp_path)), "--headless", "--seconds", "1"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "UNSTABLE_COMPILE='yes'" in lines[0], result.output

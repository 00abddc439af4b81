"""Persistence of a live show: SIGKILL at random moments while checkpoints are written never leaves a
corrupt one; a restart resumes weights, optimisers, step, walk phase and live parameter values;
`--resume` insists on checkpoints; foreign checkpoints are refused with one clear line; SIGTERM on a
real `unstable live --record` process finalises a playable recording and the next start resumes."""

import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from test_engine import make_engine
from helpers import Client, frames_played, frames_repeated, live_until_sigterm, wait_for
from test_show import ROOT, SHOW, TINY_EQ, write_show

from unstable.checkpoint import load_checkpoint, save_checkpoint
from unstable.cli import main
from unstable.probe import probe
from unstable.errors import CheckpointError, UnstableError
from helpers import nested_tensors
from unstable.system import build_system, load_piece
from unstable.trainer import checkpoint_payload, restore


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# A process that imports torch once, then forks one saver per round: the saver writes the engine's
# kind of checkpoint in a loop (a new step each time) until the test SIGKILLs it. Forking keeps 30
# rounds to seconds instead of 30 interpreter starts.
SAVER = r"""
import os, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[3])
from unstable.checkpoint import save_checkpoint
from unstable.system import build_system, load_piece
from unstable.trainer import checkpoint_payload
piece_path, ckpt = sys.argv[1], sys.argv[2]
torch.manual_seed(1)
system = build_system(load_piece(piece_path), torch.device("cpu"))
system.step({})
save_checkpoint(ckpt, checkpoint_payload(system, piece_path))
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        n = 0
        while True:
            system.step_count += 1
            save_checkpoint(ckpt, checkpoint_payload(system, piece_path, {"live": {"n": float(n)}}))
            n += 1
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("dead", flush=True)
"""


def test_sigkill_while_checkpointing_never_corrupts_and_the_next_start_resumes(tmp_path):
    write_show(tmp_path)
    piece = tmp_path / "pieces" / "eq.toml"
    ckpt = tmp_path / "run" / "eq" / "checkpoint.pt"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(piece), str(ckpt), str(ROOT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    rng = random.Random(7)
    leftovers, steps = 0, []
    fresh = build_system(load_piece(piece), torch.device("cpu"))
    try:
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(30):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            pid = int(proc.stdout.readline())
            time.sleep(rng.uniform(0.005, 0.08))
            os.kill(pid, signal.SIGKILL)
            assert proc.stdout.readline().strip() == "dead"
            payload = load_checkpoint(ckpt)  # always whole: the old one or the new one
            restore(fresh, payload, str(ckpt))  # and loadable into the piece
            steps.append(payload["step"])
            leftovers += len(list(ckpt.parent.glob(".checkpoint.pt.*.tmp")))
            for tmp in ckpt.parent.glob(".checkpoint.pt.*.tmp"):
                tmp.unlink()
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait(10)
    assert leftovers >= 1, "no kill landed inside a save: the test proved nothing"
    assert max(steps) > 1
    # A killed save's temporary is cleaned up at the next start, which resumes the last whole checkpoint.
    (ckpt.parent / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    last = load_checkpoint(ckpt)["step"]
    eng = make_engine(tmp_path)
    with eng:
        assert eng.pieces["eq"].system.step_count == last
        assert not list(ckpt.parent.glob(".checkpoint.pt.*.tmp"))


def state_tensors(system) -> list[torch.Tensor]:
    out = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            out.append(x)
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
    walk(system.state_dict())
    return out


def test_resume_restores_weights_optimisers_step_walk_phase_and_live_parameters(tmp_path):
    eng = make_engine(tmp_path)
    with eng:
        for _ in range(3):
            eng.pieces["eq"].system.step({})
        eng.params.set("eq", "hue", 42.0)
        eng.params.set("show", "master_fade", 0.25)
        for t in (0.0, 0.5, 1.5):
            eng.frame(t)
        phase = eng.pieces["eq"].clock.phase
        saved = [t.clone() for t in state_tensors(eng.pieces["eq"].system)]
    assert phase > 1.0
    again = make_engine(tmp_path, resume=True)
    with again:
        p = again.pieces["eq"]
        assert p.system.step_count == 3
        now = state_tensors(p.system)
        assert len(now) == len(saved) and all(torch.equal(a, b) for a, b in zip(now, saved))
        assert p.system.opt_g.state_dict()["state"]  # Adam's moments came back too
        assert again.params.get("eq", "hue") == 42.0 and again.params.get("show", "master_fade") == 0.25
        assert p.clock.phase == pytest.approx(phase)
        again.frame(0.0)
        assert again.snapshot["eq"]["hue"] == 42.0  # settled: no glide from the default


def test_resume_flag_requires_checkpoints_and_excludes_fresh(tmp_path):
    with pytest.raises(UnstableError, match="--resume: no checkpoint for eq, eq2"):
        make_engine(tmp_path, resume=True).open()
    show = tmp_path / "show.toml"
    r = CliRunner().invoke(main, ["live", str(show), "--headless", "--resume", "--run", str(tmp_path / "r"),
                                  "--seconds", "0.1", "--osc-port", "0", "--web-port", "0"])
    assert r.exit_code == 2 and "no checkpoint for eq, eq2" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["live", str(show), "--headless", "--resume", "--fresh"])
    assert r.exit_code == 2 and "--fresh and --resume" in r.output


def test_foreign_checkpoints_are_refused_with_one_clear_line(tmp_path):
    write_show(tmp_path)
    run = tmp_path / "run" / "eq"
    other = tmp_path / "other.toml"  # the same kind with a different architecture
    other.write_text(TINY_EQ.format(seed=1).replace("z_dim = 8", "z_dim = 16"))
    save_checkpoint(run / "checkpoint.pt", checkpoint_payload(build_system(load_piece(other), torch.device("cpu"))))
    with pytest.raises(CheckpointError, match="different architecture") as e:
        make_engine(tmp_path).open()
    assert "\n" not in str(e.value)

    renamed = tmp_path / "renamed.toml"  # the same architecture, another piece
    renamed.write_text(TINY_EQ.format(seed=1).replace('name = "tiny-eq"', 'name = "someone-else"'))
    save_checkpoint(run / "checkpoint.pt", checkpoint_payload(build_system(load_piece(renamed), torch.device("cpu"))))
    with pytest.raises(CheckpointError, match="is of piece 'someone-else', not 'tiny-eq'"):
        make_engine(tmp_path).open()

    # A checkpoint that would run code when unpickled is refused without running it.
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(run / "checkpoint.pt", "wb") as f:
        pickle.dump({"format": 1, "evil": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        make_engine(tmp_path).open()
    assert not marker.exists()


def test_sigterm_finalises_a_playable_recording_and_the_next_start_resumes(tmp_path):
    path = write_show(tmp_path)
    out, run = tmp_path / "sig.mp4", tmp_path / "run"
    code, rest = live_until_sigterm(path, "--record", str(out), "--run", str(run), settle=1.5)
    assert code == 0, rest
    frames = frames_played(rest)
    info = probe(out)  # ffprobe reads the whole file: the moov atom was written, the file plays
    # a slot the loaded machine dropped repeats the frame before it in the file
    assert frames > 0 and info.frames == frames + frames_repeated(rest) and info.width == 96
    step = load_checkpoint(run / "eq" / "checkpoint.pt")["step"]
    cmd = [sys.executable, "-m", "unstable.cli", "live", str(path), "--headless", "--osc-port", "0", "--web-port", "0", "--run", str(run)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    again = subprocess.run(cmd + ["--resume", "--seconds", "0.2", "--no-train"], cwd=ROOT, capture_output=True,
                           text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"eq resumes {run / 'eq' / 'checkpoint.pt'} at step {step}" in again.stdout



def step_of(run, name="eq"):
    return load_checkpoint(run / name / "checkpoint.pt")["step"]


@pytest.mark.parametrize("train", [False, True], ids=["still", "training"])
def test_the_osc_still_action_writes_checkpoints_while_the_show_plays(tmp_path, train):
    run = tmp_path / "run"
    with make_engine(tmp_path, train=train) as eng:
        if train:  # the training thread owns the weights then: it writes them on its next pass
            assert wait_for(lambda: eng.pieces["eq"].system.step_count >= 1, 20)
        else:
            eng.pieces["eq"].system.step({})
        eng.frame(0.0)
        client = Client(eng.osc.port)
        try:
            client.send("/unstable/still")
            assert wait_for(lambda: eng.params._events)
        finally:
            client.close()
        assert not (run / "eq" / "checkpoint.pt").exists()  # nothing periodic (every 300 s)
        eng.frame(0.1)
        assert wait_for(lambda: (run / "eq" / "checkpoint.pt").is_file()
                        and (run / "eq2" / "checkpoint.pt").is_file(), 20)
        assert step_of(run) >= 1  # the trained weights, written before the show closed
        assert wait_for(lambda: len(list((run / "stills").glob("*.png"))) == 1, 30)


def test_live_checkpoints_are_written_periodically_while_training(tmp_path):
    text = SHOW.replace("[layout]", "[training]\ncheckpoint_every = 0.5\n[layout]")
    run = tmp_path / "run"
    with make_engine(tmp_path, text, train=True) as eng:
        assert wait_for(lambda: (run / "eq" / "checkpoint.pt").is_file()
                        and (run / "eq2" / "checkpoint.pt").is_file(), 20)
        first = step_of(run)
        # ... and again: a later checkpoint holds a later step, all before the show closes.
        assert wait_for(lambda: eng.pieces["eq"].checkpoints >= 2 and step_of(run) > first, 30)


def test_fresh_starts_the_pieces_over_from_their_seeds(tmp_path):
    show = write_show(tmp_path)
    with make_engine(tmp_path) as eng:
        for _ in range(3):
            eng.pieces["eq"].system.step({})
    run = tmp_path / "run"
    assert step_of(run) == 3

    def live(run_dir, *flags):
        r = CliRunner().invoke(main, ["live", str(show), "--headless", "--osc-port", "0", "--web-port", "0", "--no-train",
                                      "--seconds", "0.1", "--run", str(run_dir), "--device", "cpu", *flags])
        assert r.exit_code == 0, r.output
        return r.output

    assert "resumes" not in live(run, "--fresh")
    live(tmp_path / "new")  # an empty run folder: the pieces start from their seeds
    for name in ("eq", "eq2"):
        fresh = load_checkpoint(run / name / "checkpoint.pt")
        seeded = load_checkpoint(tmp_path / "new" / name / "checkpoint.pt")
        assert fresh["step"] == seeded["step"] == 0
        a, b = list(nested_tensors(fresh["system"])), list(nested_tensors(seeded["system"]))
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    assert "eq resumes" in live(run)  # without --fresh the (now fresh) checkpoint is resumed


def test_an_older_live_state_with_an_absolute_learning_rate_starts_at_the_pieces_rate(tmp_path):
    eng = make_engine(tmp_path)
    with eng:
        eng.params.set("eq", "learning_rate", 2.0)
        eng.frame(0.0)
    again = make_engine(tmp_path, resume=True)
    with again:
        assert again.params.get("eq", "learning_rate") == 2.0  # this format: kept as it was
    path = tmp_path / "run" / "eq" / "checkpoint.pt"
    payload = load_checkpoint(path)
    del payload["live"]["learning_rate_is_scale"]  # as written before the change
    payload["live"]["params"]["learning_rate"] = 1e-5
    save_checkpoint(path, payload)
    old = make_engine(tmp_path, resume=True)
    with old:
        assert old.params.get("eq", "learning_rate") == 1.0

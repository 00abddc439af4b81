"""Atomic checkpoints loaded with weights_only=True."""

import os

import pytest
import torch

from unstable.checkpoint import FORMAT, check_compatible, fingerprint, load_checkpoint, save_checkpoint
from unstable.errors import CheckpointError


def payload(step=3):
    return {"format": FORMAT, "kind": "equilibrium", "fingerprint": "abc", "step": step,
            "system": {"w": torch.arange(6.0).reshape(2, 3), "opt": {"state": {0: {"m": torch.ones(2)}}}},
            "rng": {"torch": torch.get_rng_state()}, "piece": {"name": "x", "widths": [1, 2]}}


def test_round_trip(tmp_path):
    p = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(p, payload())
    back = load_checkpoint(p)
    assert torch.equal(back["system"]["w"], payload()["system"]["w"])
    assert back["step"] == 3 and back["piece"]["widths"] == [1, 2]
    assert not [f for f in os.listdir(p.parent) if f.endswith(".tmp")]


def test_overwrite_is_atomic_and_failed_write_keeps_old(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, payload(1))

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(p, {"format": FORMAT, "x": Boom()})
    assert load_checkpoint(p)["step"] == 1  # the old one survives whole
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_truncated_or_foreign_file_is_one_clear_error(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, payload())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_code_is_never_unpickled(tmp_path):
    p = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"format": FORMAT, "x": Evil()}, p)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    assert not (tmp_path / "pwned").exists()


def test_mismatched_checkpoint_refused():
    fp = fingerprint({"channels": 64})
    assert fp != fingerprint({"channels": 32})
    check_compatible({"kind": "equilibrium", "fingerprint": fp}, "equilibrium", fp, "c.pt")
    with pytest.raises(CheckpointError, match="different architecture"):
        check_compatible({"kind": "equilibrium", "fingerprint": fp}, "equilibrium", fingerprint({"channels": 32}), "c.pt")
    with pytest.raises(CheckpointError, match="'divergence' piece"):
        check_compatible({"kind": "divergence", "fingerprint": fp}, "equilibrium", fp, "c.pt")

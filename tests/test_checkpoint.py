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


# Pinned by mutation testing (docs/mutation.md).

def test_save_makes_missing_folders_and_writes_its_temp_file_beside_the_target(tmp_path):
    """The temporary file lives in the target's folder (so the rename is atomic, one filesystem)
    and is named after it, `.<name>.*.tmp`, so a crash leaves a recognisable leftover."""
    p = tmp_path / "a" / "b" / "c.pt"  # two folders that do not exist yet
    seen = []

    class Spy:
        def __reduce__(self):
            seen.extend(os.listdir(p.parent))  # mid-write: the temp file exists, the target not yet
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        save_checkpoint(p, {"format": FORMAT, "x": Spy()})
    assert len(seen) == 1 and seen[0].startswith(".c.pt.") and seen[0].endswith(".tmp"), seen
    assert os.listdir(p.parent) == []  # and it was removed after the failure
    save_checkpoint(p, payload())
    assert load_checkpoint(p)["step"] == 3


def test_load_honours_map_location(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, payload())
    assert load_checkpoint(p, map_location="meta")["system"]["w"].device.type == "meta"


def test_unreadable_file_error_names_the_cause(tmp_path):
    p = tmp_path / "c.pt"
    p.write_bytes(b"PK\x03\x04")  # a zip header and nothing else: torch's own message is kept
    with pytest.raises(CheckpointError, match="not a readable checkpoint \\(PytorchStreamReader failed"):
        load_checkpoint(p)
    p.write_bytes(b"")  # torch raises EOFError with an empty message: the type name stands in
    with pytest.raises(CheckpointError, match="not a readable checkpoint \\(EOFError\\)"):
        load_checkpoint(p)


def test_wrong_format_or_not_a_dict_is_refused(tmp_path):
    p = tmp_path / "c.pt"
    torch.save({"format": FORMAT + 1, "step": 1}, p)
    with pytest.raises(CheckpointError, match="not an unstable checkpoint"):
        load_checkpoint(p)
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError, match="not an unstable checkpoint"):
        load_checkpoint(p)


def test_fingerprint_is_order_free_keyed_and_sixteen_hex_digits():
    from pathlib import Path
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    fp = fingerprint({"a": 1, "b": 2})
    assert len(fp) == 16 and int(fp, 16) >= 0
    # with keys, only those keys count
    assert fingerprint({"a": 1, "b": 2}, keys=("a",)) == fingerprint({"a": 1, "b": 3}, keys=("a",))
    assert fingerprint({"a": 1, "b": 2}, keys=("a",)) != fingerprint({"a": 2, "b": 2}, keys=("a",))
    # values JSON cannot encode are hashed through str()
    assert fingerprint({"root": Path("x")}) == fingerprint({"root": "x"})


def test_mismatch_message_names_both_fingerprints():
    with pytest.raises(CheckpointError, match="fingerprint 0123 != 4567"):
        check_compatible({"kind": "equilibrium", "fingerprint": "0123"}, "equilibrium", "4567", "c.pt")

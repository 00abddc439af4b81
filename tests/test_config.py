"""Piece-file validation: every kind of bad input is one clear line naming file, key and value."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner

from unstable.cli import main
from unstable.config import load_dataclass, read_toml, setting, to_dict
from unstable.errors import ConfigError, UnstableError
from unstable.system import load_piece

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Inner:
    lr: float = setting(1e-3, gt=0, le=1)
    betas: tuple[float, float] = (0.0, 0.99)


@dataclass(frozen=True)
class Outer:
    name: str
    mode: Literal["classifier", "diametric"] = "classifier"
    batch: int = setting(8, ge=1, le=4096)
    fancy: bool = False
    widths: tuple[int, ...] = setting((64, 32), ge=1)
    optim: Inner = Inner()


def err(data):
    with pytest.raises(ConfigError) as e:
        load_dataclass(Outer, data, source="pieces/x.toml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("pieces/x.toml: ")
    return msg


def test_valid_table_loads_frozen_and_typed():
    cfg = load_dataclass(Outer, {"name": "a", "batch": 4, "widths": [8, 8, 4], "optim": {"lr": 1}},
                         source="x")
    assert cfg.batch == 4 and cfg.widths == (8, 8, 4) and cfg.optim.lr == 1.0
    assert isinstance(cfg.optim.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'batch'"):
        cfg.batch = 3  # frozen
    assert to_dict(cfg)["optim"] == {"lr": 1.0, "betas": [0.0, 0.99]}


def test_unknown_key_suggests_closest():
    msg = err({"name": "a", "bacth": 8})
    assert "bacth" in msg and "did you mean 'batch'" in msg


def test_unknown_nested_key_names_dotted_path():
    msg = err({"name": "a", "optim": {"rl": 0.1}})
    assert "optim.rl" in msg and "'lr'" in msg


def test_missing_key():
    assert "name: missing" in err({})


def test_wrong_type_names_value_and_expectation():
    msg = err({"name": "a", "batch": "eight"})
    assert "batch" in msg and "'eight'" in msg and "integer" in msg
    assert "true or false" in err({"name": "a", "fancy": 1})
    assert "integer" in err({"name": "a", "batch": True})  # a bool is not an int


def test_out_of_range():
    msg = err({"name": "a", "batch": 0})
    assert "batch" in msg and "0" in msg and ">= 1" in msg
    assert "optim.lr" in err({"name": "a", "optim": {"lr": 0}})
    assert "widths[1]" in err({"name": "a", "widths": [4, 0]})


def test_literal_choice_suggests():
    msg = err({"name": "a", "mode": "diametrical"})
    assert "mode" in msg and "did you mean 'diametric'" in msg


def test_tuple_length():
    assert "optim.betas" in err({"name": "a", "optim": {"betas": [0.5]}})


def test_unreadable_toml(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("name = \n")
    with pytest.raises(ConfigError) as e:
        read_toml(p)
    assert str(p) in str(e.value) and "not valid TOML" in str(e.value)
    with pytest.raises(ConfigError, match="file not found"):
        read_toml(tmp_path / "nope.toml")


def test_piece_kind_is_checked(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('kind = "equilibrum"\nname = "x"\nseed = 1\n')
    with pytest.raises(ConfigError, match="did you mean 'equilibrium'"):
        load_piece(p)
    p.write_text('name = "x"\n')
    with pytest.raises(ConfigError, match="kind: missing"):
        load_piece(p)


@pytest.mark.parametrize("body, fragment", [
    ("this is not toml", "not valid TOML"),
    ('kind = "nope"', "kind"),
])
def test_cli_bad_piece_one_line_nonzero_exit(tmp_path, body, fragment):
    p = tmp_path / "bad.toml"
    p.write_text(body)
    result = CliRunner().invoke(main, ["train", str(p), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in result.output


def test_device_auto_picks_cuda_only_when_present_and_cpu_always_works(monkeypatch):
    import torch

    from unstable.system import resolve_device
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    # The selection logic on either kind of machine (no CUDA memory is touched).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UnstableError, match=r"^--device cuda: CUDA is not available on this machine \(try --device cpu\)$"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda") == torch.device("cuda")


@pytest.mark.parametrize("command", ["train", "live", "render", "eval"])
def test_cli_device_option_without_cuda_is_one_clear_line(tmp_path, monkeypatch, command):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    piece = tmp_path / "p.toml"
    piece.write_text('name = "x"\nkind = "equilibrium"\n')
    args = {"train": ["train", str(piece), "--out", str(tmp_path / "run")],
            "live": ["live", str(ROOT / "shows" / "demo.toml"), "--headless", "--osc-port", "0", "--web-port", "0"],
            "render": ["render", str(ROOT / "shows" / "demo.toml")],
            "eval": ["eval", str(tmp_path / "run")]}[command]
    result = CliRunner().invoke(main, [*args, "--device", "cuda"])
    assert result.exit_code == 2
    assert result.output == "error: --device cuda: CUDA is not available on this machine (try --device cpu)\n"
    assert not (tmp_path / "run").exists()
    bad = CliRunner().invoke(main, [*args, "--device", "gpu"])
    assert bad.exit_code == 2 and "'gpu' is not one of 'auto', 'cpu', 'cuda'" in bad.output

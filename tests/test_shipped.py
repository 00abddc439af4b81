"""Shipped files: BAD's base models, eval's judges and the shows' starting states (demo, bending),
hash-checked, so a first run starts within a minute instead of training base models for minutes;
every piece says where it starts from."""

import json
import shutil

import pytest
import torch
from tqdm import tqdm

from test_show import write_show
from unstable.errors import UnstableError
from unstable.live import Engine
from unstable.shipped import FOLDER, manifest, sha256, shipped_file
from unstable.show import load_show
from unstable.system import build_system, load_piece
from unstable.trainer import train

ROOT = FOLDER.parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def test_a_shipped_file_is_used_only_when_its_hash_matches(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"weights")
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"files": {"a.pt": {"sha256": sha256(tmp_path / "a.pt")}}}))
    assert shipped_file("a.pt", tmp_path) == tmp_path / "a.pt"
    (tmp_path / "a.pt").write_bytes(b"weightz")  # damaged or edited
    assert shipped_file("a.pt", tmp_path) is None
    assert shipped_file("b.pt", tmp_path) is None  # not listed


def test_every_shipped_file_matches_its_manifest_and_the_set_is_small():
    # Series 2's states have their own test and budget (test_series2_script).
    shows = [f for f in sorted((ROOT / "shows").glob("*.states")) if f.name != "series2.states"]
    assert {f.name for f in shows} >= {"demo.states", "bending.states", "demo-128.states"}
    total = 0
    for folder in (FOLDER, *shows):
        files = manifest(folder)
        assert files, folder
        assert sorted(files) == sorted(f.name for f in folder.glob("*.pt")), f"{folder}: unlisted or missing files"
        for name in files:
            assert shipped_file(name, folder) is not None, name
            total += (folder / name).stat().st_size
    assert total < 18 * 2**20  # under 20 MB: base models, judges and the three shows' states


def test_the_demo_bad_piece_prepares_from_the_shipped_base_models_without_training(tmp_cwd):
    piece = load_piece(ROOT / "pieces" / "bad-custom-mmd.toml")
    assert piece.cache == ".cache/unstable" and not (tmp_cwd / ".cache").exists()  # an empty cache

    def no_training(desc, total=None, **kw):
        if desc.startswith(("base VAE", "digit classifier")):
            raise AssertionError(f"trained {desc!r} instead of using the shipped file")
        return tqdm(total=total, disable=True)

    system = build_system(piece, torch.device("cpu"))
    system.prepare(no_training)
    assert system.base_metrics.get("classifier_heldout_accuracy", 0) > 0.95


def test_a_show_piece_starts_from_its_start_state_unless_fresh(tmp_path):
    write_show(tmp_path)
    run = train(tmp_path / "pieces" / "eq.toml", steps=3, out=tmp_path / "trained", show_progress=False,
                echo=lambda s: None)
    states = tmp_path / "states"
    states.mkdir()
    shutil.copyfile(run / "checkpoint.pt", states / "eq.pt")
    (states / "MANIFEST.json").write_text(json.dumps({"files": {"eq.pt": {"sha256": sha256(states / "eq.pt")}}}))
    text = (tmp_path / "show.toml").read_text().replace('piece = "pieces/eq.toml"\n',
                                                        'piece = "pieces/eq.toml"\nstart = "states/eq.pt"\n')
    show = write_show(tmp_path, text, name="started.toml")

    said = []

    def engine(**kw):
        said.clear()
        return Engine(load_show(show), headless=True, osc_port=0, web_port=0, train=False, echo=said.append,
                      progress=silent, **kw)

    with engine(run_dir=tmp_path / "a") as eng:
        assert eng.pieces["eq"].system.step_count == 3 and eng.pieces["eq2"].system.step_count == 0
    assert f"live: eq starts from the grown state {states / 'eq.pt'} at step 3 (--fresh starts from its seed)" in said
    assert (f"live: eq2 starts from its seed at step 0 (no checkpoint in {tmp_path / 'a' / 'eq2'} and no "
            "pieces.eq2.start in the show): its first minutes are early training") in said
    with engine(run_dir=tmp_path / "a") as eng:  # its own run folder now has a checkpoint of each piece
        pass
    for name in ("eq", "eq2"):
        assert f"live: {name} resumes {tmp_path / 'a' / name / 'checkpoint.pt'} at step {3 if name == 'eq' else 0} " \
               "(its run folder; --fresh to start over)" in said
    with engine(run_dir=tmp_path / "b", fresh=True) as eng:
        assert eng.pieces["eq"].system.step_count == 0
    assert [line for line in said if " starts from " in line or " resumes " in line] == [
        "live: eq starts from its seed at step 0 (--fresh): its first minutes are early training",
        "live: eq2 starts from its seed at step 0 (--fresh): its first minutes are early training"]
    (states / "eq.pt").write_bytes((states / "eq.pt").read_bytes() + b"x")  # tampered
    with pytest.raises(UnstableError, match="pieces.eq.start.*SHA-256"):
        engine(run_dir=tmp_path / "c").open()


def test_the_bending_show_starts_from_its_grown_state_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # paths in the start line as the artist types them
    entry = manifest(ROOT / "shows" / "bending.states")["eq.pt"]
    assert entry["steps"] > 0 and entry["what"].startswith("equilibrium-1-1.toml")
    said = []
    show = load_show(ROOT / "shows" / "bending.toml")
    assert show.settings.pieces["eq"].start == "bending.states/eq.pt"
    with Engine(show, headless=True, osc_port=0, web_port=0, train=False, echo=said.append, progress=silent,
                run_dir=tmp_path / "run") as eng:
        system = eng.pieces["eq"].system
        assert system.step_count == entry["steps"]
        stage, alpha = system.growth()
        assert system.stage_resolutions[stage] == 64 and alpha == 1.0  # grown to the piece's full size
    assert (f"live: eq starts from the grown state shows/bending.states/eq.pt at step {entry['steps']} "
            "(--fresh starts from its seed)") in said


def test_demo_128_starts_its_pair_grown_to_128_px_and_its_bad_piece_from_the_demos_state(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    entry = manifest(ROOT / "shows" / "demo-128.states")["eq.pt"]
    assert entry["steps"] > 0 and entry["what"].startswith("equilibrium-128.toml")
    said = []
    show = load_show(ROOT / "shows" / "demo-128.toml")
    assert show.settings.size == (1920, 1080) and show.pieces["eq"].generator.resolution == 128
    with Engine(show, headless=True, osc_port=0, web_port=0, train=False, echo=said.append, progress=silent,
                run_dir=tmp_path / "run") as eng:
        system = eng.pieces["eq"].system
        assert system.step_count == entry["steps"]
        stage, alpha = system.growth()
        assert system.stage_resolutions[stage] == 128 and alpha == 1.0
        bad_steps = manifest(ROOT / "shows" / "demo.states")["bad.pt"]["steps"]
        assert eng.pieces["bad"].system.step_count == bad_steps
    assert any("bad starts from the grown state shows/demo.states/bad.pt" in line for line in said), said

"""Series 2 (issue 26, item 5): scripts/make_series2.py end to end at tiny sizes, the comparison of
variants with pieces scored outside their exploration (unstable/explore/compare.py), and the
shipped show when it is in the repository."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from unstable.checkpoint import load_checkpoint
from unstable.errors import UnstableError
from unstable.frame.sources import load_run_into
from unstable.explore.compare import distances, farthest
from unstable.schema import defaults
from unstable.shipped import manifest, sha256, shipped_file
from unstable.show import load_show
from unstable.system import build_system, load_piece

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_series2", ROOT / "scripts" / "make_series2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_farthest_takes_the_point_farthest_from_the_references_and_the_ones_already_taken():
    refs = {"a": [0.0, 0.0], "b": [1.0, 0.0]}
    cands = {"near": [0.5, 0.0], "far": [10.0, 0.0], "far-twin": [9.9, 0.0], "other-side": [-6.0, 0.0]}
    picked = farthest(cands, refs, 3)
    # far is 9 from b; then other-side (6 from a) beats far-twin (0.1 from far): not two of a kind;
    # then near (0.5 from a and b) beats far-twin still.
    assert [p for p, _ in picked] == ["far", "other-side", "near"]
    assert [d for _, d in picked] == pytest.approx([9.0, 6.0, 0.5])
    # A budget that refuses a candidate skips it instead of ending the choice.
    assert [p for p, _ in farthest(cands, refs, 2, fits=lambda v, ch: v != "far")] == ["far-twin", "other-side"]
    d = distances([3.0, 4.0], {"a": [0.0, 0.0], "b": [3.0, 0.0], "c": [30.0, 4.0]}, k=2)
    assert d["nearest"] == "b" and d["d_nearest"] == pytest.approx(4.0) and d["d_knn"] == pytest.approx(4.5)


def _run(mod, dest: Path, *extra: str) -> dict:
    before = torch.get_num_threads()
    try:
        return mod.main(["--tiny", "--workers", "0", "--dest", str(dest), "--work", str(dest / "work"), *extra])
    finally:
        torch.set_num_threads(before)


def _stamps(dest: Path) -> dict[str, tuple[int, str]]:
    files = [*(dest / "shows" / "series2.states").iterdir(), *(dest / "pieces").glob("series2-*.toml"),
             *(dest / "work").glob("*/gen-*/*/checkpoint.pt"), *(dest / "work" / "series1").glob("*/checkpoint.pt")]
    return {str(f): (f.stat().st_mtime_ns, sha256(f)) for f in files}


@pytest.mark.slow
def test_the_script_makes_series2_at_tiny_sizes_and_resumes_without_training_twice(tmp_path, capsys, monkeypatch):
    mod = _script()
    made = _run(mod, tmp_path)
    work = tmp_path / "work"
    assert made["variants"] == 6 and made["references"] == 6 and made["grown"] == 4
    assert len(set(made["chosen"])) == 4 and made["bytes"] <= 20 * 2**20

    # Stage b: one row per Series-1 piece and per variant; the chosen ones in the band, the first
    # the in-band variant farthest from its nearest Series-1 piece.
    rows = list(csv.DictReader(open(work / "distances.csv", encoding="utf-8")))
    assert sorted(r["id"] for r in rows if r["kind"] == "series1") == [f"equilibrium-1-{i}" for i in range(1, 7)]
    variants = {r["id"]: r for r in rows if r["kind"] == "variant"}
    assert len(variants) == 6
    chosen = sorted((r for r in variants.values() if r["chosen"]), key=lambda r: int(r["chosen"]))
    assert [r["id"] for r in chosen] == made["chosen"] and all(r["in_band"] == "True" for r in chosen)
    assert all(r["collapsed"] == "False" for r in chosen)
    best = max((r for r in variants.values() if r["in_band"] == "True" and r["collapsed"] == "False"),
               key=lambda r: float(r["d_nearest_series1"]))
    assert chosen[0]["id"] == best["id"]

    # A piece scored outside the exploration lands where the same piece does inside it: the
    # explorer's copy of its seed (Series 1:1) has the descriptor of Series 1:1 scored as a reference.
    lineage = list(csv.DictReader(open(work / "explore" / "lineage.csv", encoding="utf-8")))
    copy = next(r["id"] for r in lineage if r["operation"] == "copy")
    inside = json.loads((work / "explore" / "gen-0" / copy / "explore" / "result.json").read_text())
    outside = json.loads((work / "series1" / "equilibrium-1-1" / "explore" / "result.json").read_text())
    assert inside["descriptor"] == outside["descriptor"]
    assert float(variants[copy]["d_nearest_series1"]) == 0.0

    # Stages c-e: each piece loads and trains a step; the show loads with its grown states, whose
    # hashes match the manifest; a still per piece.
    show = load_show(tmp_path / "shows" / "series2.toml")
    assert sorted(show.pieces) == ["s1", "s2", "s3", "s4"]
    states = tmp_path / "shows" / "series2.states"
    for n, name in enumerate(["s1", "s2", "s3", "s4"], start=1):
        piece = load_piece(tmp_path / "pieces" / f"series2-{n}.toml")
        assert piece.name == f"(un)stable equilibrium 2:{n}"
        assert show.resolve(show.settings.pieces[name].start) == states / f"{name}.pt"
        assert shipped_file(f"{name}.pt", states) is not None
        system = build_system(piece, torch.device("cpu"))
        before = system.step_count
        system.step(defaults(system.param_specs()))
        assert system.step_count == before + 1
        assert (tmp_path / "docs" / f"series2-{n}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(e["steps"] == 8 for e in manifest(states).values())
    # The states ship their networks' weights as float16; a system loads them into float32.
    payload = load_checkpoint(states / "s1.pt")
    assert {v.dtype for sd in payload["system"]["generators"] for v in sd.values() if v.is_floating_point()} \
        == {torch.float16}
    assert "opt_g" not in payload["system"] and "opt_c" not in payload["system"]
    system = build_system(load_piece(tmp_path / "pieces" / "series2-1.toml"), torch.device("cpu"))
    load_run_into(system, states / "s1.pt", torch.device("cpu"))
    assert {p.dtype for g in system.generators for p in g.parameters()} == {torch.float32}

    # --status reads where the run stands from the folders alone.
    capsys.readouterr()
    assert _run(mod, tmp_path, "--status") == {}
    said = capsys.readouterr().out
    assert "6 of 6 variants scored" in said and "6 of 6 pieces scored" in said and "4 of 4 states" in said

    # Run again: nothing trains, nothing is rewritten.
    stamps = _stamps(tmp_path)
    again = _run(mod, tmp_path)
    assert (again["variants"], again["references"], again["grown"]) == (0, 0, 0)
    assert again["chosen"] == made["chosen"]
    assert _stamps(tmp_path) == stamps

    # A grown state lost (or tampered with): only that one is made again.
    (states / "s2.pt").write_bytes(b"not a checkpoint")
    third = _run(mod, tmp_path)
    assert (third["variants"], third["references"], third["grown"]) == (0, 0, 1)
    assert shipped_file("s2.pt", states) is not None

    # A grow that stops early (SIGTERM ends `unstable train` with a checkpoint, as Ctrl-C does)
    # ships nothing: one line, and the next run continues it.
    import unstable.trainer as trainer
    real_train = trainer.train
    (states / "s3.pt").unlink()
    shutil.rmtree(tmp_path / "work" / "grown" / "s3")
    monkeypatch.setattr(trainer, "train", lambda *a, steps, **k: real_train(*a, steps=steps - 2, **k))
    with pytest.raises(UnstableError, match=r"grown/s3: training stopped at step 6 of 8; run the script again"):
        _run(mod, tmp_path)
    assert not (states / "s3.pt").exists()
    monkeypatch.setattr(trainer, "train", real_train)
    fourth = _run(mod, tmp_path)
    assert fourth["grown"] == 1 and shipped_file("s3.pt", states) is not None
    assert manifest(states)["s3.pt"]["steps"] == 8

    # More pieces than the band holds: one line saying so, and how to go on.
    with pytest.raises(UnstableError, match=r"only \d variants in the band .* 7 wanted; explore further"):
        _run(mod, tmp_path, "--count", "7")


def test_a_collapsed_variant_is_never_chosen_however_novel():
    mod = _script()
    series1 = {"a": {"pixel_diversity": 0.32}, "b": {"pixel_diversity": 0.48}}
    floor = mod.collapse_floor(series1, 0.1)
    assert floor == pytest.approx(0.032)
    band = mod.Band(0.002, 0.1, 3)
    ok = {"status": "ok", "motion": 0.2, "guard_trips": 0, "exploded": False, "steps": 600}
    results = {"flat": {**ok, "pixel_diversity": 0.0024, "descriptor": [9.0] * 8},   # one blue field, far away
               "piece": {**ok, "pixel_diversity": 0.2, "descriptor": [1.0] * 8},
               "still": {**ok, "motion": 0.0, "pixel_diversity": 0.3, "descriptor": [5.0] * 8}}
    assert band.contains(results["flat"])  # it moves: the band alone keeps it
    assert set(mod.wall_candidates(results, band, floor)) == {"piece"}


SHOW = ROOT / "shows" / "series2.toml"


@pytest.mark.skipif(not SHOW.exists(), reason="shows/series2.toml not made yet (scripts/make_series2.py)")
def test_the_shipped_series2_loads_from_states_whose_hashes_match_its_manifest():
    show = load_show(SHOW)
    assert len(show.pieces) >= 4
    states = ROOT / "shows" / "series2.states"
    entries = manifest(states)
    total = 0
    for name, settings in show.settings.pieces.items():
        path = show.resolve(settings.start)
        assert path.parent == states and shipped_file(path.name, states) is not None, path
        assert entries[path.name]["bytes"] == path.stat().st_size
        piece = load_piece(show.piece_paths[name])
        assert piece.generator.resolution == 128
        total += path.stat().st_size + show.piece_paths[name].stat().st_size
    stills = sorted((ROOT / "docs").glob("series2-*.png"))
    assert len(stills) == len(show.pieces)
    total += sum(p.stat().st_size for p in stills) + SHOW.stat().st_size + (states / "MANIFEST.json").stat().st_size
    assert total <= 20 * 2**20


def test_variants_unlike_every_series1_piece_are_chosen_first_and_the_rest_only_fill_up():
    mod = _script()
    refs = {"a": [0.0, 0.0], "b": [1.0, 0.0]}               # siblings 1.0 apart: the yardstick
    cands = {"near": [0.5, 0.9], "far1": [0.0, 3.0], "far2": [3.0, 3.0], "far3": [6.0, 0.0]}
    unlike = {v: p for v, p in cands.items() if v != "near"}
    sizes = dict.fromkeys(cands, 1)
    # "near" is far from the others but 1.03 from Series 1 (alike): the three unlike ones come first.
    got = [v for v, _ in mod.pick_for_the_wall(unlike, cands, refs, 4, sizes, budget=10)]
    assert set(got[:3]) == {"far1", "far2", "far3"} and got[3] == "near"
    # The budget still holds: with room for two, two unlike ones and nothing alike.
    got = [v for v, _ in mod.pick_for_the_wall(unlike, cands, refs, 4, sizes, budget=2)]
    assert len(got) == 2 and "near" not in got

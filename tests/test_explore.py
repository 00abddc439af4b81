"""`unstable explore` in one process: variation keeps every variant valid, lineage reproduces a
variant exactly, a duplicate's novelty is 0, resume trains nothing twice, a failing variant is
recorded and not fatal, starring chooses the parents, export writes a piece. Real training steps
of tiny pieces (8 px) throughout."""

from __future__ import annotations

import csv
import shutil
import tomllib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from helpers import tiny_eq_piece
from unstable.checkpoint import load_checkpoint
from unstable.explore.breeding import breed_generation, reproduce
from unstable.explore.explorer import Explorer, new_settings
from unstable.explore.genome import breed, changes, genome_of, validate
from unstable.explore.measures import novelty
from unstable.explore.records import read_lineage, read_scores, variant_dir, write_marks
from unstable.explore.selection import Band, choose_parents, score_table
from unstable.explore.task import train_variant
from unstable.explore.tomlout import dumps
from unstable.system import load_piece
from unstable.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = tiny_eq_piece("steps = 1", name="tiny-explore") + "[objectives.embedding]\non = true\n"


def piece_file(folder: Path) -> Path:
    path = folder / "tiny.toml"
    path.write_text(TINY)
    return path


def settings_for(folder: Path, population=3, steps=2, seed=7) -> dict:
    return new_settings(piece_file(folder), population=population, steps=steps, segments=2, seed=seed, threads=1)


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """One finished in-process exploration: 3 variants x 2 generations, 2 steps each."""
    root = tmp_path_factory.mktemp("explored")
    settings = settings_for(root)
    ex = Explorer(root / "out", settings, workers=0, echo=lambda s: None)
    ex.run(2)
    return root / "out", settings


def test_every_variant_is_a_valid_piece_that_trains(tmp_path):
    base = genome_of(load_piece(piece_file(tmp_path)))
    parents, seen_genes = [base], set()
    for i in range(8):
        child, ops = breed(parents[-2:], base, seed=1000 + i, name=f"v{i}")
        seen_genes.update(op for op in ops.replace("crossover, ", "").replace("mutate ", "").split("+"))
        text = dumps(child)
        assert validate(tomllib.loads(text)) == child  # written and read back as the same piece
        (tmp_path / f"v{i}.toml").write_text(text)
        out = train(tmp_path / f"v{i}.toml", steps=1, out=tmp_path / f"run{i}", show_progress=False,
                    echo=lambda s: None)
        assert load_checkpoint(out / "checkpoint.pt")["step"] == 1
        parents.append(child)
    assert len(seen_genes) >= 5  # the draws reach many genes, not one


def test_breeding_is_deterministic_and_records_changes():
    base = genome_of(load_piece(Path(__file__).parent.parent / "pieces" / "equilibrium-1-1.toml"))
    a, ops_a = breed([base], base, seed=3, name="x")
    b, ops_b = breed([base], base, seed=3, name="x")
    c, _ = breed([base], base, seed=4, name="x")
    assert (a, ops_a) == (b, ops_b) and a != c
    assert changes(base, a) and all("->" in line for line in changes(base, a))


def test_variant_folders_open_like_any_run(explored, tmp_path):
    root, _ = explored
    rows = read_lineage(root)
    assert [r.generation for r in rows] == [0, 0, 0, 1, 1, 1]
    for r in rows:  # `unstable train --resume` continues (a copy of) each variant's folder by one more step
        folder = tmp_path / r.id
        shutil.copytree(variant_dir(root, r), folder)
        assert (folder / "grid.png").exists() and (folder / "progress.gif").exists()
        out = train(folder / "piece.toml", steps=3, out=folder, resume=True, show_progress=False, echo=lambda s: None)
        assert load_checkpoint(out / "checkpoint.pt")["step"] == 3


def test_lineage_and_seed_reproduce_a_variant_exactly(explored, tmp_path):
    root, settings = explored
    rows = read_lineage(root)
    for r in rows:
        assert reproduce(root, r.id, settings["base"]) == validate(tomllib.loads(
            (variant_dir(root, r) / "piece.toml").read_text()))
    # Trained again from the reproduced table alone: the same weights and the same measures.
    vid = rows[-1].id
    again = tmp_path / "again"
    again.mkdir()
    (again / "piece.toml").write_text(dumps(reproduce(root, vid, settings["base"])))
    res = train_variant({"folder": str(again), "id": vid, "steps": 2, "segments": 2, "threads": 1,
                         "device": "cpu", "cwd": str(Path.cwd())})
    scores = read_scores(root)[vid]
    for k in ("motion", "pixel_diversity", "feature_diversity", "generator_difference", "colour_variety"):
        assert f"{res[k]:.6g}" == scores[k]
    mine = load_checkpoint(again / "checkpoint.pt")["system"]["generators"]
    theirs = load_checkpoint(variant_dir(root, vid) / "checkpoint.pt")["system"]["generators"]
    for a, b in zip(mine, theirs):
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_novelty_of_a_duplicate_is_zero(explored, tmp_path):
    root, _ = explored
    assert novelty([0.1, 0.2], [[0.1, 0.2], [0.5, 0.5]], k=2) == 0.0
    assert novelty([0.1, 0.2], [[0.4, 0.6], [0.5, 0.5]], k=2) > 0
    # Really trained: the same piece twice gives the same descriptor, so each one's novelty is 0.
    results = {}
    for vid in ("a", "b"):
        folder = tmp_path / vid
        folder.mkdir()
        (folder / "piece.toml").write_text((variant_dir(root, "v0-01") / "piece.toml").read_text())
        results[vid] = train_variant({"folder": str(folder), "id": vid, "steps": 2, "segments": 2, "threads": 1,
                                      "device": "cpu", "cwd": str(Path.cwd())})
    results["c"] = train_variant({"folder": str(variant_dir(root, "v0-02")), "id": "c", "steps": 2, "segments": 2,
                                  "threads": 1, "device": "cpu", "cwd": str(Path.cwd())})  # its result, cached
    from unstable.explore.records import Row
    lineage = [Row(v, 0, ("base",), "breed", 0, ()) for v in "abc"]
    table = {s["id"]: s for s in score_table(lineage, results, Band())}
    assert table["a"]["novelty"] == 0.0 and table["b"]["novelty"] == 0.0
    assert table["c"]["novelty"] > 0.0


def test_scores_and_selection(explored):
    root, _ = explored
    with open(root / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert sum(r["selected"] == "1" for r in rows) == 2  # max(2, 3 // 3) of the latest generation
    assert all(r["generation"] == "1" for r in rows if r["selected"] == "1")
    lineage, scores = read_lineage(root), list(read_scores(root).values())
    auto, how = choose_parents(lineage, scores, {}, 3)
    assert how == "novelty" and len(auto) == 2
    starred, how = choose_parents(lineage, scores, {"v1-02": "star", "v0-00": "star"}, 3)
    assert (starred, how) == (["v1-02"], "starred")  # the latest generation's stars
    kept, _ = choose_parents(lineage, scores, {i: "discard" for i in auto}, 3)
    assert not set(kept) & set(auto)


def test_resume_trains_nothing_twice(tmp_path):
    settings = settings_for(tmp_path, population=3)
    seen = []

    def interrupt_after_two(line):
        seen.append(line)
        if sum(" ok at step" in s for s in seen) == 2:
            raise KeyboardInterrupt

    first = Explorer(tmp_path / "out", settings, workers=0, echo=interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        first.run(2)
    done = {r.id: (variant_dir(tmp_path / "out", r) / "checkpoint.pt").stat().st_mtime_ns
            for r in read_lineage(tmp_path / "out")
            if (variant_dir(tmp_path / "out", r) / "explore" / "result.json").exists()}
    assert len(done) == 2
    second = Explorer(tmp_path / "out", settings, workers=0, echo=lambda s: None)
    second.run(2)
    assert not set(second.submitted) & set(done)  # the finished ones were not trained again
    assert set(second.submitted) == {"v0-02", "v1-00", "v1-01", "v1-02"}
    for vid, mtime in done.items():
        assert (variant_dir(tmp_path / "out", vid) / "checkpoint.pt").stat().st_mtime_ns == mtime
    third = Explorer(tmp_path / "out", settings, workers=0, echo=lambda s: None)
    third.run(2)
    assert third.submitted == []
    assert [r.id for r in read_lineage(tmp_path / "out")] == [f"v{g}-0{i}" for g in (0, 1) for i in range(3)]


def test_a_failing_variant_is_recorded_not_fatal(tmp_path):
    settings = settings_for(tmp_path, population=3)
    root = tmp_path / "out"
    ex = Explorer(root, settings, workers=0, echo=lambda s: None)
    ex.start()
    breed_generation(root, settings, 0, ["base"])
    (variant_dir(root, "v0-01") / "checkpoint.pt").write_bytes(b"not a checkpoint")  # it cannot resume
    ex.run(2)
    scores = read_scores(root)
    assert scores["v0-01"]["status"] == "failed" and "checkpoint" in scores["v0-01"]["error"]
    assert scores["v0-01"]["in_band"] == "0"
    assert all(scores[v]["status"] == "ok" for v in ("v0-00", "v0-02", "v1-00", "v1-01", "v1-02"))
    assert "v0-01" not in {p for r in read_lineage(root) if r.generation == 1 for p in r.parents}


def test_an_exploration_with_other_settings_is_refused(explored):
    root, settings = explored
    from unstable.errors import UnstableError
    with pytest.raises(UnstableError, match="other settings \\(population"):
        Explorer(root, {**settings, "population": 5}, workers=0).start()


def test_cli_export_and_bad_input(explored, tmp_path):
    from unstable.cli import main
    root, _ = explored
    write_marks(root, {"v1-01": "star"})
    dest = tmp_path / "found.toml"
    r = CliRunner().invoke(main, ["explore", str(root), "--export", "v1-01", str(dest)])
    assert r.exit_code == 0, r.output
    piece = load_piece(dest)
    assert piece.name.endswith("v1-01") and piece.train.steps == 1  # the piece's own [train], not the exploration's
    assert "Lineage:" in dest.read_text()
    again = CliRunner().invoke(main, ["explore", str(root), "--export", "v1-01", str(dest)])
    assert again.exit_code == 2 and "exists" in again.output and len(again.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(main, ["explore", str(root), "--export", "v9-99", str(tmp_path / "x.toml")])
    assert missing.exit_code == 2 and "no such variant" in missing.output
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("batch = 4", "batch = 0", 1))
    r = CliRunner().invoke(main, ["explore", str(bad), "--auto", "--workers", "0", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "generator.optim.batch" in r.output and "bad.toml" in r.output

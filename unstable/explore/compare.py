"""Variants against pieces scored outside their exploration: how far (in the descriptor space of
novelty, measures.py) each variant lies from a set of reference pieces, and a choice of variants
that none of the references resemble.

A reference piece is scored exactly as a variant is (`score_reference`): its table gets the
exploration's [train] table (steps, checkpoints and grids per segment), trains in its own run
folder through `task.train_variant` with the exploration's steps, segments, threads and device,
and is probed on the same fixed latents. Its descriptor is then a point in the same space as
every variant's, so the distances mean the same thing.

The choice (`farthest`) is greedy farthest-point selection: the next variant is the in-band one
whose nearest neighbour among the references and the variants chosen so far is farthest away. So
the chosen variants are far from every reference and from each other.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import UnstableError
from .genome import validate
from .records import read_json
from .task import train_variant
from .tomlout import dumps

__all__ = ["at_resolution", "score_reference", "distances", "farthest"]


def at_resolution(table: Mapping, resolution: int, source: str) -> dict:
    """A piece table grown to `resolution` px (everything else as it is), validated."""
    t = copy.deepcopy(dict(table))
    t["generator"]["resolution"] = int(resolution)
    return validate(t, source)


def score_reference(table: Mapping, folder: Path, settings: Mapping, *, device: str | None = None) -> dict:
    """Train and measure the piece `table` in `folder` as the exploration with `settings` trains a
    variant; returns its result (the one in folder/explore/result.json when it is done already).

    A folder holding another piece is refused: its checkpoint would not be this piece's."""
    folder = Path(folder)
    t = copy.deepcopy(dict(table))
    t["train"] = copy.deepcopy(settings["base"]["train"])
    t = validate(t, str(folder / "piece.toml"))
    text = dumps(t, f"{t['name']}, scored as a variant of the exploration in {Path(settings['piece']).name}")
    path = folder / "piece.toml"
    if path.exists() and path.read_text(encoding="utf-8") != text:
        raise UnstableError(f"{path}: holds another piece than {t['name']!r} at these settings; "
                            "remove the folder to score it again")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    done = read_json(folder / "explore" / "result.json")
    if done is not None:
        return done
    spec = {"folder": str(folder.resolve()), "id": folder.name, "steps": int(settings["steps"]),
            "segments": int(settings["segments"]), "threads": int(settings["threads"]),
            "device": device or settings["device"], "cwd": str(Path.cwd())}
    return train_variant(spec)


def distances(point: Sequence[float], references: Mapping[str, Sequence[float]], k: int = 3) -> dict:
    """How far `point` lies from the reference points: the nearest one's name and distance, and the
    mean distance to the k nearest (Lehman & Stanley's sparseness, against the references only)."""
    d = sorted((math.dist(point, p), name) for name, p in references.items())
    if not d:
        return {"nearest": "", "d_nearest": math.inf, "d_knn": math.inf}
    near = [x for x, _ in d[:k]]
    return {"nearest": d[0][1], "d_nearest": d[0][0], "d_knn": sum(near) / len(near)}


def farthest(candidates: Mapping[str, Sequence[float]], references: Mapping[str, Sequence[float]], count: int,
             fits: Callable[[str, list[str]], bool] = lambda vid, chosen: True) -> list[tuple[str, float]]:
    """Up to `count` candidate ids, greedily: each the one farthest from its nearest neighbour among
    the references and the candidates chosen before it, among those that `fits` (given the id and
    the ids chosen so far; e.g. a size budget). Returns [(id, that distance)] in the order chosen."""
    chosen: list[tuple[str, float]] = []
    left = dict(candidates)
    while left and len(chosen) < count:
        taken = {**references, **{c: candidates[c] for c, _ in chosen}}
        best, best_d = None, -1.0
        for vid, p in sorted(left.items()):
            if not fits(vid, [c for c, _ in chosen]):
                continue
            d = min((math.dist(p, q) for q in taken.values()), default=math.inf)
            if d > best_d:
                best, best_d = vid, d
        if best is None:
            break
        chosen.append((best, best_d))
        del left[best]
    return chosen

"""Scores of the archive and the choice of parents: novelty within the band between stasis and
explosion, unless the artist has starred variants.

The band: a variant is in it when it finished its steps (not failed, not stopped by the guard,
images finite), the guard undid at most `max_guard` of its steps (a fraction: a run that lives on
the guard's restores is close to explosion), and its last motion is at least `stasis_floor` (it
has not settled into stasis). Parents of the next generation:

1. the starred variants of the latest generation, when the artist starred any (discarded ones never);
2. else (and with --auto) the most novel in-band variants of the latest generation, at most
   `max(2, population // 3)`; when too few are in the band, the most novel of the rest that did
   not fail fill up; when every one failed, the explored piece itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from .measures import novelty
from .records import Row

__all__ = ["Band", "score_table", "choose_parents"]


@dataclass(frozen=True)
class Band:
    """The band between stasis and explosion, and novelty's k."""

    stasis_floor: float = 0.002
    max_guard: float = 0.1
    k: int = 3

    def contains(self, result: Mapping) -> bool:
        """Whether a finished variant's result lies in the band."""
        if result.get("status") != "ok":
            return False
        if result.get("guard_trips", 0) > self.max_guard * max(1, result.get("steps", 0)):
            return False
        motion = result.get("motion")
        return motion is None or motion >= self.stasis_floor


def score_table(lineage: Sequence[Row], results: Mapping[str, Mapping], band: Band,
                selected: set[str] = frozenset()) -> list[dict]:
    """scores.csv's rows: every variant with a result, its measures, novelty against the archive of
    every other variant with a descriptor, whether it is in the band and was chosen as a parent."""
    archive = {vid: r["descriptor"] for vid, r in results.items() if r.get("descriptor")}
    rows = []
    for row in lineage:
        r = results.get(row.id)
        if r is None:
            continue
        point = archive.get(row.id)
        others = [d for vid, d in archive.items() if vid != row.id]
        motion = r.get("motion")
        rows.append({
            "id": row.id, "generation": row.generation, "status": r.get("status"), "steps": r.get("steps"),
            "exploded": bool(r.get("exploded")), "guard_trips": r.get("guard_trips", 0), "motion": motion,
            "stasis": None if motion is None else motion < band.stasis_floor,
            **{k: r.get(k) for k in ("pixel_diversity", "feature_diversity", "generator_difference",
                                     "colour_variety")},
            "novelty": novelty(point, others, band.k) if point is not None else None,
            "in_band": band.contains(r), "selected": row.id in selected, "seconds": r.get("seconds"),
            "error": r.get("error", ""),
        })
    return rows


def choose_parents(lineage: Sequence[Row], scores: Sequence[Mapping], marks: Mapping[str, str],
                   population: int) -> tuple[list[str], str]:
    """The parent ids of the next generation and how they were chosen ("starred" | "novelty" | "base")."""
    if not lineage:
        return ["base"], "base"
    latest = max(r.generation for r in lineage)
    ids = [r.id for r in lineage if r.generation == latest]
    starred = [i for i in ids if marks.get(i) == "star"]
    if starred:
        return starred, "starred"
    by_id = {s["id"]: s for s in scores}
    alive = [i for i in ids if i in by_id and by_id[i]["status"] != "failed" and marks.get(i) != "discard"]

    def nov(i):
        v = by_id[i].get("novelty")
        return -math.inf if v is None else v

    want = max(2, population // 3)
    in_band = sorted((i for i in alive if by_id[i]["in_band"]), key=nov, reverse=True)
    rest = sorted((i for i in alive if not by_id[i]["in_band"]), key=nov, reverse=True)
    chosen = (in_band + rest)[:want]
    return (chosen, "novelty") if chosen else (["base"], "base")

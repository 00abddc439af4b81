"""The files of an exploration folder, read and written atomically (a kill leaves the last whole one).

    DIR/explore.json     the exploration's settings and the explored piece's table
    DIR/lineage.csv      one row per variant: id, generation, parents, operation, seed, changes
    DIR/scores.csv       one row per trained variant: its measures, novelty, band, selection
    DIR/marks.json       the artist's choices: {id: "star" | "discard"}
    DIR/gen-<g>/<id>/    the variant's run folder (piece.toml, checkpoint.pt, grid.png, ...)
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import UnstableError

__all__ = ["LINEAGE_FIELDS", "SCORE_FIELDS", "Row", "write_atomic", "read_json", "read_lineage", "write_lineage",
           "read_scores", "write_scores", "read_marks", "write_marks", "variant_dir", "variant_id"]

LINEAGE_FIELDS = ["id", "generation", "parents", "operation", "seed", "changes"]
SCORE_FIELDS = ["id", "generation", "status", "steps", "exploded", "guard_trips", "motion", "stasis",
                "pixel_diversity", "feature_diversity", "generator_difference", "colour_variety", "novelty",
                "in_band", "selected", "seconds", "error"]
MARKS = ("star", "discard")


@dataclass(frozen=True)
class Row:
    """One variant's line of lineage.csv."""

    id: str
    generation: int
    parents: tuple[str, ...]  # variant ids, or ("base",) for the explored piece itself
    operation: str
    seed: int
    changes: tuple[str, ...]

    def as_csv(self) -> dict[str, str]:
        return {"id": self.id, "generation": str(self.generation), "parents": " ".join(self.parents),
                "operation": self.operation, "seed": str(self.seed), "changes": "; ".join(self.changes)}


def variant_id(generation: int, index: int) -> str:
    """`v<generation>-<index>`: unique across the exploration, sorts by generation then index."""
    return f"v{generation}-{index:02d}"


def variant_dir(root: Path, row_or_id: "Row | str") -> Path:
    """The run folder of a variant: DIR/gen-<g>/<id>/."""
    vid = row_or_id if isinstance(row_or_id, str) else row_or_id.id
    generation = int(vid[1:].split("-", 1)[0])
    return Path(root) / f"gen-{generation}" / vid


def write_atomic(path: Path, text: str) -> None:
    """Write `path` whole or not at all (tmp + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's value; `default` when it does not exist; one line naming it when it is unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise UnstableError(f"{path}: cannot read it ({e})") from None


def _csv_text(fields: list[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return buf.getvalue()


def _read_csv(path: Path, fields: list[str]) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return []
    except (OSError, csv.Error) as e:
        raise UnstableError(f"{path}: cannot read it ({e})") from None
    for n, r in enumerate(rows, start=2):
        missing = [k for k in fields if r.get(k) is None]
        if missing:
            raise UnstableError(f"{path}: line {n} lacks {', '.join(missing)} (written by another version?)")
    return rows


def read_lineage(root: Path) -> list[Row]:
    """Every variant bred so far, in order."""
    path = Path(root) / "lineage.csv"
    out = []
    for n, r in enumerate(_read_csv(path, LINEAGE_FIELDS), start=2):
        try:
            out.append(Row(r["id"], int(r["generation"]), tuple(r["parents"].split()), r["operation"],
                           int(r["seed"]), tuple(c for c in r["changes"].split("; ") if c)))
        except ValueError:
            raise UnstableError(f"{path}: line {n}: generation and seed must be integers") from None
    return out


def write_lineage(root: Path, rows: Iterable[Row]) -> None:
    write_atomic(Path(root) / "lineage.csv", _csv_text(LINEAGE_FIELDS, (r.as_csv() for r in rows)))


def read_scores(root: Path) -> dict[str, dict[str, str]]:
    """scores.csv as {id: row} (strings, as written)."""
    return {r["id"]: r for r in _read_csv(Path(root) / "scores.csv", SCORE_FIELDS)}


def write_scores(root: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    def fmt(v):
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, float):
            return f"{v:.6g}"
        return v
    write_atomic(Path(root) / "scores.csv", _csv_text(SCORE_FIELDS, ({k: fmt(v) for k, v in r.items()} for r in rows)))


def read_marks(root: Path) -> dict[str, str]:
    """The artist's stars and discards, {id: "star" | "discard"}."""
    marks = read_json(Path(root) / "marks.json", {})
    if not isinstance(marks, dict) or any(v not in MARKS for v in marks.values()):
        raise UnstableError(f"{Path(root) / 'marks.json'}: expected {{id: \"star\" | \"discard\"}}")
    return marks


def write_marks(root: Path, marks: Mapping[str, str]) -> None:
    write_atomic(Path(root) / "marks.json", json.dumps(dict(sorted(marks.items())), indent=1) + "\n")

"""Small trained files shipped with the package, so a first run starts at once.

`MANIFEST.json` lists each file with its SHA-256 and how it was made (`scripts/make_shipped.py`,
its seeds and versions). A file is only used when its hash matches: a damaged or edited file is
refused with one line naming it, and the caller trains its own instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

__all__ = ["FOLDER", "shipped_file", "sha256"]

FOLDER = Path(__file__).resolve().parent
log = logging.getLogger("unstable.shipped")


def sha256(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: Path = FOLDER) -> dict:
    """{file name: {"sha256": ..., ...}} of a folder of shipped files (empty when there is none)."""
    path = folder / "MANIFEST.json"
    try:
        return json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError):
        return {}


def shipped_file(name: str, folder: Path = FOLDER) -> Path | None:
    """The shipped file `name` when it is listed and its hash matches; None otherwise (logged)."""
    entry = manifest(folder).get(name)
    path = folder / name
    if entry is None or not path.is_file():
        return None
    if sha256(path) != entry.get("sha256"):
        log.error("%s: its SHA-256 does not match %s; not using it", path, folder / "MANIFEST.json")
        return None
    return path

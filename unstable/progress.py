"""The progress bar of every long job (training's preparation, renders, chunks on a cluster, a
show's opening): one look on stderr, whichever driver runs it."""

from __future__ import annotations

from tqdm import tqdm


def progress_bar(desc: str, total: int | None = None, **kw):
    """The progress bar every long job uses (tqdm, to stderr)."""
    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True, **kw)

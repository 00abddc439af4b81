"""docs/design.md cannot rot: every module, package and test file it names exists, and the
modules it walks a newcomer through (the frame pipeline, the live engine's parts) are all named."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "design.md"
PATH = re.compile(r"\b((?:unstable|tests)/[\w/]*?(?:\.py|/))(?=[`\s),;:.]|$)")


def named_paths(text: str) -> set[str]:
    """The repository paths a text names: `unstable/...py`, `unstable/.../` and `tests/...py`."""
    return set(PATH.findall(text))


def missing(text: str) -> list[str]:
    """The paths `text` names that are not in the repository."""
    return sorted(p for p in named_paths(text) if not (ROOT / p).exists())


def test_the_checker_reads_paths_and_sees_a_missing_one():
    text = "See `unstable/frame/pipeline.py` and `unstable/live/` (tests/test_floors.py); unstable/gone.py."
    assert named_paths(text) == {"unstable/frame/pipeline.py", "unstable/live/", "tests/test_floors.py",
                                 "unstable/gone.py"}
    assert missing(text) == ["unstable/gone.py"]


def test_every_path_the_design_names_exists():
    text = DOC.read_text()
    assert len(named_paths(text)) > 60  # the doc is read, not an empty match
    assert missing(text) == []


def test_the_design_walks_through_the_pipeline_and_the_live_engine():
    named = named_paths(DOC.read_text())
    for part in ("timeline", "job_timeline", "pipeline", "lookahead", "sources", "timelapse", "sinks",
                 "preview", "ndi_sink", "cursor"):
        assert f"unstable/frame/{part}.py" in named, part
    for part in ("engine", "pieceset", "controls", "actions", "outputs", "reporter", "launch", "stills"):
        assert f"unstable/live/{part}.py" in named, part
    for part in ("store", "handlers", "osc", "webserver", "access", "connections"):
        assert f"unstable/control/{part}.py" in named, part
    assert {"unstable/system.py", "unstable/instruments.py", "unstable/schema.py", "tests/test_floors.py"} <= named

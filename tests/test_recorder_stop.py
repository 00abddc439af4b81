"""Stopping a live recording finishes its automation at once: the file is whole and loadable before
the show ends, holds the changes made while recording, and nothing played after the stop."""

from __future__ import annotations

from pathlib import Path

import pytest
from tqdm import tqdm

from helpers import Client, wait_for
from test_show import SHOW, write_show
from unstable.frame.automation import load_automation
from unstable.live import Engine
from unstable.show import load_show

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def test_a_stopped_recordings_automation_is_finished_before_the_show_ends(tmp_path):
    text = SHOW.replace("[[scenes]]", "[actions]\nrecord_min_interval = 0\n[[scenes]]", 1)
    eng = Engine(load_show(write_show(tmp_path, text)), headless=True, osc_port=0, web_port=0,
                 run_dir=tmp_path / "run", train=False, echo=lambda s: None, progress=silent)
    with eng:
        client = Client(eng.osc.port)
        eng.frame(0.0)
        client.send("/unstable/record", 1)
        assert wait_for(lambda: eng.params.get("show", "record") == 1.0)
        for n in range(1, 6):
            if n == 3:
                eng.params.set("eq", "hue", 45.0)
            eng.frame(0.1 * n)
        client.send("/unstable/record", 0)
        assert wait_for(lambda: eng.params.get("show", "record") == 0.0)
        eng.frame(0.6)  # the stop is handled here
        assert eng.recorder.writer is None
        (recording,) = list((tmp_path / "run").rglob("*.automation.jsonl"))
        during = load_automation(recording)  # before the show ends: already whole
        # After the stop: changes and frames that must not reach the file.
        eng.params.set("eq", "hue", -45.0)
        for n in range(7, 10):
            eng.frame(0.1 * n)
        after = load_automation(recording)
        client.close()
    sets = [c.get("set", {}).get("eq", {}).get("hue") for c in during.changes.values()]
    assert 45.0 in sets and -45.0 not in sets
    assert after.changes == during.changes and after.last_frame == during.last_frame <= 6
    assert load_automation(recording).changes == during.changes  # the show's end added nothing either

"""`unstable explore` on a real Dask LocalCluster (loopback): two workers score as one process does
for the same seeds, and a variant whose worker is killed mid-training is retried elsewhere and
finishes from its last checkpoint, no step trained twice in its log."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from helpers import tiny_eq_piece
from unstable.explore.explorer import Explorer, new_settings
from unstable.explore.records import read_lineage, read_scores, variant_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def piece(folder: Path) -> Path:
    path = folder / "tiny.toml"
    path.write_text(tiny_eq_piece("steps = 1", name="tiny-cluster"))
    return path


@pytest.fixture
def cluster():
    from dask.distributed import Client, LocalCluster
    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=0,
                     silence_logs=logging.ERROR, host="127.0.0.1")
    client = Client(c)
    yield client
    client.close()
    c.close()


@pytest.mark.slow
def test_two_workers_score_as_one_process(tmp_path, cluster):
    settings = new_settings(piece(tmp_path), population=2, steps=2, segments=2, seed=11, threads=1)
    one = Explorer(tmp_path / "one", settings, workers=0, echo=lambda s: None)
    one.run(2)
    two = Explorer(tmp_path / "two", settings, client=cluster, echo=lambda s: None)
    two.run(2)
    workers = {json.loads((variant_dir(tmp_path / "two", r) / "explore" / "result.json").read_text())["worker"]
               for r in read_lineage(tmp_path / "two")}
    assert len(workers) == 2  # both workers trained variants
    assert (tmp_path / "one" / "lineage.csv").read_text() == (tmp_path / "two" / "lineage.csv").read_text()
    a, b = read_scores(tmp_path / "one"), read_scores(tmp_path / "two")
    assert a.keys() == b.keys() and len(a) == 4
    for vid in a:
        a[vid].pop("seconds"), b[vid].pop("seconds")
        assert a[vid] == b[vid], vid


@pytest.mark.slow
def test_a_killed_workers_variant_is_retried(tmp_path, cluster):
    settings = new_settings(piece(tmp_path), population=2, steps=30, segments=3, seed=3, threads=1)
    root = tmp_path / "out"
    ex = Explorer(root, settings, client=cluster, echo=lambda s: None)
    errors = []

    def run():
        try:
            ex.run(1)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        for addr, keys in cluster.processing().items():
            for key in keys:
                vid = key.split("-")[1] + "-" + key.split("-")[2]
                measured = variant_dir(root, vid) / "explore" / "measures.json"
                if measured.exists() and not (variant_dir(root, vid) / "explore" / "result.json").exists():
                    victim = (vid, addr)
        time.sleep(0.05)
    assert victim is not None, "no variant was found mid-training"
    vid, addr = victim
    pid = cluster.run(os.getpid, workers=[addr])[addr]
    os.kill(pid, signal.SIGKILL)  # the worker dies mid-variant, after its first checkpoint
    log = variant_dir(root, vid) / "log.jsonl"
    before = [json.loads(line) for line in log.read_text().splitlines()[:10]]  # steps 1-10, checkpointed
    t.join(180)
    assert not t.is_alive() and not errors, errors
    scores = read_scores(root)
    assert [scores[v]["status"] for v in ("v0-00", "v0-01")] == ["ok", "ok"]
    result = json.loads((variant_dir(root, vid) / "explore" / "result.json").read_text())
    assert result["worker"].split(":")[1] != str(pid) and result["steps"] == 30
    steps = [json.loads(line)["step"] for line in (variant_dir(root, vid) / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))  # each step logged once
    after = [json.loads(line) for line in log.read_text().splitlines()[:10]]
    assert after == before  # the retry continued from the checkpoint: steps 1-10 were not trained again


@pytest.mark.slow
def test_cli_on_a_running_scheduler(tmp_path, cluster):
    from click.testing import CliRunner

    from unstable.cli import main
    out = tmp_path / "out"
    args = ["explore", str(piece(tmp_path)), "--population", "2", "--generations", "1", "--steps", "2",
            "--segments", "2", "--threads", "1", "--auto", "--out", str(out)]
    r = CliRunner().invoke(main, args + ["--scheduler", cluster.scheduler.address])
    assert r.exit_code == 0, r.output
    assert "selected: v0-00, v0-01" in r.output
    assert [s["status"] for s in read_scores(out).values()] == ["ok", "ok"]
    again = CliRunner().invoke(main, args + ["--scheduler", cluster.scheduler.address])
    assert again.exit_code == 0 and " ok at step" not in again.output  # resumed: nothing left to train
    bad = CliRunner().invoke(main, args + ["--scheduler", "tcp://127.0.0.1"])
    assert bad.exit_code == 2 and "--scheduler" in bad.output and "no port" in bad.output
    other = CliRunner().invoke(main, args[:3] + ["3"] + args[4:] + ["--workers", "0"])
    assert other.exit_code == 2 and "other settings (population differ)" in other.output

"""`render --scheduler`: bad addresses are one line before anything opens; a port that accepts and
never answers, and one that speaks another protocol, are one line within the deadline and a
non-zero exit (real sockets on 127.0.0.1); a real scheduler is still joined."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import tiny_job, train_tiny_run

from unstable.cli import main
from unstable.errors import UnstableError
from unstable.render.scheduler import connect_scheduler, parse_scheduler

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("address, why", [
    ("notaurl", "no tcp://"),
    ("http://127.0.0.1:80", "http:// is not a protocol"),
    ("tcp://[::1", "'[' is never closed"),
    ("tcp://127.0.0.1", "no port"),
    ("tcp://127.0.0.1:70000", "not in 1..65535"),
    ("tcp://::1:8786", "in brackets"),
])
def test_bad_addresses_are_one_line_before_the_job_opens(tmp_path, address, why):
    # The job file does not even exist: the address is checked first.
    result = CliRunner().invoke(main, ["render", "run", str(tmp_path / "job.toml"), "--scheduler", address])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --scheduler") and why in lines[0], result.output
    assert "Traceback" not in result.output


def test_good_addresses_parse():
    assert parse_scheduler("tcp://127.0.0.1:8786") == ("tcp", "127.0.0.1", 8786)
    assert parse_scheduler("tcp://[::1]:8786") == ("tcp", "::1", 8786)
    assert parse_scheduler("tls://sched.local:1") == ("tls", "sched.local", 1)


class Listener:
    """A TCP port on 127.0.0.1 that accepts connections and answers each with `reply` (None: never
    answers, holding the connection open)."""

    def __init__(self, reply: bytes | None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.reply is not None:
                try:
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


GARBAGE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4


@pytest.mark.parametrize("reply, why", [(None, "no Dask scheduler answered within 1.5 s"),
                                        (GARBAGE, "not as a Dask scheduler")])
def test_a_silent_or_garbage_port_is_one_line_within_the_deadline(reply, why):
    import dask.distributed  # noqa: F401  (its first import, seconds on a busy machine, is not the probe's time)
    server = Listener(reply)
    try:
        t0 = time.monotonic()
        with pytest.raises(UnstableError, match=why) as info:
            connect_scheduler(f"tcp://127.0.0.1:{server.port}", timeout=1.5)
        assert time.monotonic() - t0 < 1.5 + 2.5
        assert "\n" not in str(info.value)
    finally:
        server.close()


def test_a_real_scheduler_is_joined():
    from dask.distributed import LocalCluster
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        client = connect_scheduler(cluster.scheduler_address, timeout=10)
        try:
            assert client.scheduler_info()["address"] == cluster.scheduler_address
        finally:
            client.close()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("sched-run")
    path = root / "job.toml"
    path.write_text(tiny_job(root / "out", train_tiny_run(root), frames=8))
    return path


@pytest.mark.parametrize("reply, why", [(None, "no Dask scheduler answered within 2 s"),
                                        (GARBAGE, "not as a Dask scheduler")])
def test_render_against_a_silent_or_garbage_port_exits_with_one_line(job, reply, why):
    server = Listener(reply)
    try:
        env = {**os.environ, "UNSTABLE_SCHEDULER_TIMEOUT": "2", "OMP_NUM_THREADS": "1"}
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "unstable.cli", "render", "run", str(job), "--device", "cpu",
                            "--scheduler", f"tcp://127.0.0.1:{server.port}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
    finally:
        server.close()
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and why in errors[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert took < 60

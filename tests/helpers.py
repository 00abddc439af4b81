"""Helpers shared by the tests that talk to a running show: a UDP controller, waiting on another
thread, sending a burst of OSC that fits the receive buffer, and running `unstable live` in a
subprocess until SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

ROOT = Path(__file__).resolve().parent.parent


def wait_for(cond, timeout=5.0):
    """Wait for something another thread does (delivery over UDP); False on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


def read_lines(stream, lines: list[str]) -> None:
    """A subprocess's whole lines, as they come (on a thread of their own)."""
    lines.extend(x.rstrip("\n") for x in stream if x.endswith("\n"))


def _burst_chunk() -> int:
    """How many small datagrams a burst sends before the server has read them: what fits the
    receive buffer an OSC socket gets here (the server asks for 4 MiB; without CAP_NET_ADMIN the
    kernel caps it at net.core.rmem_max, 208 KiB by default), at 2 KiB a datagram (a small one takes
    under 1 KiB of it on loopback). A burst larger than the buffer would lose datagrams whenever the
    server's thread is descheduled beside other work, and its exact count would never arrive."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        return max(1, s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2048)


BURST_CHUNK = _burst_chunk()


def send_burst(client, sends, received, timeout: float = 30.0) -> None:
    """Send `sends` ((address, *args) each) back to back, in chunks of BURST_CHUNK, each sent once
    the one before has been read: `received()` is the server's message count. Gives up (and lets
    the caller's exact count fail) when a chunk is not read within `timeout` seconds."""
    start = received()
    for i in range(0, len(sends), BURST_CHUNK):
        for addr, *args in sends[i:i + BURST_CHUNK]:
            client.send(addr, *args)
        done = start + min(i + BURST_CHUNK, len(sends))
        if not wait_for(lambda: received() >= done, timeout):
            return


class Client:
    """A controller: one UDP socket that sends to a server (or show) and hears its feedback."""

    def __init__(self, server_port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", server_port)

    def send(self, addr, *args, types=None):
        b = OscMessageBuilder(address=addr)
        for i, a in enumerate(args):
            b.add_arg(a, types[i] if types else None)
        self.sock.sendto(b.build().dgram, self.target)

    def send_raw(self, data: bytes):
        self.sock.sendto(data, self.target)

    def recv(self, timeout=1.0):
        """The next feedback message as (address, args), or None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65536)
        except socket.timeout:
            return None
        m = OscMessage(data)
        return m.address, list(m.params)

    def recv_all(self, n, timeout=2.0):
        """Up to n messages, each within `timeout` seconds of the last."""
        out = []
        while len(out) < n:
            m = self.recv(timeout)
            if m is None:
                break
            out.append(m)
        return out

    def received(self, quiet=0.3, limit=5.0) -> list[tuple[str, float]]:
        """Every message until nothing arrives for `quiet` seconds, as (address, first argument)."""
        out, last, start = [], time.monotonic(), time.monotonic()
        while time.monotonic() - last < quiet and time.monotonic() - start < limit:
            m = self.recv(0.05)
            if m is None:
                continue
            out.append((m[0], m[1][0] if m[1] else None))
            last = time.monotonic()
        return out

    def close(self):
        self.sock.close()


def live_until_sigterm(show: Path, *args: str, settle: float = 1.0) -> tuple[int, str]:
    """Run `unstable live SHOW --headless --osc-port 0 --web-port 0 ARGS...` in a subprocess, send SIGTERM
    `settle` seconds after its first second of frames (its first telemetry line: on a loaded machine
    the run folder's line can come long before a frame), and return (exit code, its output after that)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    telemetry = Path(tempfile.mkdtemp()) / "telemetry.jsonl"
    cmd = [sys.executable, "-m", "unstable.cli", "live", str(show), "--headless", "--osc-port", "0", "--web-port", "0",
           "--telemetry", str(telemetry), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = ""
        while "run folder" not in line:
            line = proc.stdout.readline()
            assert line, "the show never started"
        deadline = time.monotonic() + 60
        while not (telemetry.exists() and telemetry.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None, "the show never drew a second of frames"
            time.sleep(0.05)
        time.sleep(settle)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, rest


# `unstable live`'s closing line (unstable/live/launch.py): frames drawn, then the late frames, the
# slots dropped and the frames recordings repeated in them.
_CLOSING = re.compile(r"^live: (\d+) frames in .*?\((\d+) slots dropped, (\d+) repeated in recordings\)", re.M)


def _closing(output: str) -> re.Match:
    m = _CLOSING.search(output)
    assert m is not None, f"no closing line in:\n{output}"
    return m


def frames_played(output: str) -> int:
    """The frame count from `unstable live`'s closing line."""
    return int(_closing(output)[1])


def slots_dropped(output: str) -> int:
    """The frame slots a busy show dropped (late frames), from `unstable live`'s closing line."""
    return int(_closing(output)[2])


def frames_repeated(output: str) -> int:
    """The frames a recording repeated in slots the show dropped, from `unstable live`'s closing line."""
    return int(_closing(output)[3])


def nested_tensors(obj):
    """Every tensor in a nested checkpoint (dicts, lists, tuples), in order."""
    import torch
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from nested_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from nested_tensors(v)


# The head of a show with one tiny equilibrium piece `eq` (pieces/eq.toml beside the show file) in
# one 48x16 panel at 10 fps; a test appends the tables it needs.
ONE_PANEL_SHOW = """\
size = [48, 16]
fps = 10
[pieces.eq]
piece = "pieces/eq.toml"
[layout]
panels = ["eq/g0"]
"""


def tiny_eq_piece(train: str, name: str = "tiny-eq", seed: int = 5, resolution: int = 8) -> str:
    """A tiny equilibrium piece file (8 px unless asked, 4-8 channels, batch 4) with these [train]
    lines."""
    return f"""
name = "{name}"
kind = "equilibrium"
seed = {seed}
[train]
{train}
[generator]
resolution = {resolution}
start_resolution = {resolution}
z_dim = 8
w_dim = 8
mapping_layers = 1
min_channels = 4
max_channels = 8
[generator.optim]
batch = 4
[critic]
min_channels = 4
max_channels = 8
embedding_dim = 8
[critic.optim]
batch = 4
"""


def tiny_job(out: Path, run: Path, frames: int) -> str:
    """A render job of a tiny run: 32x16 FFV1 at 8 fps in chunks of 4, written under `out`."""
    return f"""size = [32, 16]
fps = 8
preset = "ffv1"
output = "{out.as_posix()}/{{job}}-{{variation}}.mov"
batch = 4
chunk = 4
frames = {frames}
[sources.eq]
run = "{run.as_posix()}"
[walk]
keyframes = 3
period = 0.5
seed = 11
"""


def train_tiny_run(root: Path) -> Path:
    """A one-step run of the tiny equilibrium piece in `root`: the run folder a render can open."""
    from unstable.trainer import train
    (root / "tiny.toml").write_text(tiny_eq_piece("steps = 1\ngrid_every = 100000\ngrid_samples = 2\n"
                                                  "checkpoint_every = 100000", name="sigterm"))
    return train(root / "tiny.toml", out=root / "run", show_progress=False, echo=lambda s: None)


def tiny_piece_file(cache, train: str, name: str = "tiny", bad: str = "") -> str:
    """A tiny BAD piece file (3-step base models, batch 32) with these [train] lines and extra [bad] lines."""
    return f"""name = "{name}"
kind = "divergence"
cache = "{cache}"
[train]
{train}
[vae]
steps = 3
batch = 16
hidden = 64
[classifier]
steps = 3
batch = 16
width = 8
[bad]
batch = 32
real_pool = 300
{bad}"""


def frames_until(engine, cond, timeout: float = 60.0, pause: float = 0.05) -> bool:
    """Draw frames of a live `engine` (each one's changes recorded, its mirrors refreshed) until
    `cond()` holds or `timeout` seconds pass; whether it held."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        engine.frame()
        if cond():
            return True
        time.sleep(pause)
    return False

"""Shared fixtures. Tests run on the CPU at tiny sizes; GL through headless EGL."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    """Run a test inside a fresh folder (runs/ and .cache/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def gl_ctx():
    """A fresh headless OpenGL context (EGL; Mesa llvmpipe without a GPU), current on this thread.

    One per test (~35 ms): moderngl does not re-make its context current, so a context shared
    across tests would break after any test that makes another one current (a window's, say).
    """
    from unstable.display.gl import create_headless_context
    ctx = create_headless_context()
    yield ctx
    ctx.release()


@pytest.fixture(scope="module")
def one_torch_thread_per_module():
    """One torch thread for a whole test module (modules of many tiny sampling tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a busy 2-core machine two OpenMP threads spinning against other
    processes make a tiny training step 10-50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cpu_hogs():
    """Two busy processes beside the test (a gallery PC is never idle: it plays sound and video
    too): for claims that depend on time, checked by behaviour (frame counts, sync), not speed."""
    procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def small_fs(tmp_path):
    """make(kb, name): a tmpfs of `kb` KiB mounted at tmp_path/name (skips where mounting is not allowed)."""
    mounted = []

    def make(kb: int, name: str = "small") -> Path:
        d = tmp_path / name
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(d)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the ENOSPC-injection tests cover this")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _ip(*args, ns=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture
def other_machine():
    """Another machine on the network, for the tests of what a show opened to the LAN does: a
    network namespace joined to this one by a veth pair, (its name, our address, its address).
    Traffic stays on the pair; nothing reaches a real network."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("making a network namespace needs root and iproute2")
    n = os.getpid() % 250 + 1
    ns, here, there = f"unstable-web-{os.getpid()}", f"10.231.{n}.1", f"10.231.{n}.2"
    host_if, ns_if = f"uwh{os.getpid() % 100000}", f"uwn{os.getpid() % 100000}"
    r = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {r.stderr.strip()}")
    try:
        steps = [_ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if),
                 _ip("link", "set", ns_if, "netns", ns),
                 _ip("addr", "add", f"{here}/30", "dev", host_if),
                 _ip("link", "set", host_if, "up"),
                 _ip("addr", "add", f"{there}/30", "dev", ns_if, ns=ns),
                 _ip("link", "set", ns_if, "up", ns=ns),
                 _ip("link", "set", "lo", "up", ns=ns)]
        bad = [s for s in steps if s.returncode != 0]
        if bad:
            pytest.skip(f"cannot wire a network namespace here: {bad[0].stderr.strip()}")
        yield ns, here, there
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


# `make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`). Tests that share
# something machine-wide stay on one worker: Ableton Link peers join any session they hear by
# multicast, the MIDI tests' JACK server and the NDI sources go by fixed names, OSCQuery shows are
# found by mDNS, and the tests that compile with inductor share one compile cache per worker
# (those that take the `inductor_cache` fixture).
SHARED_GROUPS = {
    "test_tempo": "link", "test_tempo_beats": "link", "test_tempo_drift": "link", "test_tempo_link_walk": "link",
    "test_midi_port": "jack",
    "test_ndi": "ndi", "test_ndi_rgbx": "ndi",
    "test_oscquery": "mdns",
}


def pytest_itemcollected(item):
    """The tests of `SHARED_GROUPS` get their xdist group (as they are collected: xdist reads the
    groups in its own `pytest_collection_modifyitems`)."""
    group = SHARED_GROUPS.get(item.module.__name__.rpartition(".")[2])
    if "inductor_cache" in getattr(item, "fixturenames", ()):
        group = "inductor"
    if group:
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_configure(config):
    """Refuse `--dist loadgroup` under pytest 9 in one line: pytest 9.2 keeps node ids where
    pytest-xdist 3.8 can no longer add its groups, so two workers would start two JACK servers of
    one name and join each other's Link sessions, and fail at random (the test extra pins pytest<9)."""
    if getattr(config.option, "dist", "no") == "loadgroup" and int(pytest.__version__.split(".")[0]) >= 9:
        raise pytest.UsageError(f"pytest {pytest.__version__} cannot keep pytest-xdist's groups "
                                "(--dist loadgroup): install the test extra's pytest<9 (pyproject.toml)")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped on a machine without CUDA (they run in scripts/gpu-check.sh)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def inductor_cache(tmp_path_factory):
    """One TORCHINDUCTOR_CACHE_DIR for the session's inductor compiles: a graph another test
    compiled (the tiny equilibrium pieces' grown step) loads from it instead of compiling again."""
    return tmp_path_factory.mktemp("inductor")

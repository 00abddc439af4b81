"""Shared fixtures. Tests run on the CPU at tiny sizes; GL through headless EGL."""

import subprocess
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


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped on a machine without CUDA (they run in scripts/gpu-check.sh)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)

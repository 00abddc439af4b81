"""Shared fixtures. Tests run on the CPU at tiny sizes; GL through headless EGL."""

import os

import pytest
import torch

# Two cores on CI: leave the thread count to torch but make runs reproducible.
torch.use_deterministic_algorithms(False)


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    """Run a test inside a fresh folder (runs/ and .cache/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path

"""The allocator tuning (unstable/allocator.py): freed activations are reused, not faulted in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")

# A generator pass in miniature: a chain of 12 tensors growing from 256 KB to 4 MB, each made
# before the one it follows is freed, 40 times over. glibc's default gives the larger blocks and
# the freed heap top back to the kernel, so every round faults its pages in again; kept, they are
# reused.
ROUNDS = """
import json, resource, torch
import unstable.allocator as allocator
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def one_pass():
    x = torch.ones(64 * 1024)
    for i in range(12):
        x = torch.ones(x.numel() * 2 if i % 3 == 0 else x.numel())
for _ in range(3):
    one_pass()
start = faults()
for _ in range(40):
    one_pass()
print(json.dumps({"tuned": allocator.tuned(), "faults": faults() - start}))
"""


def run(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if env_value is None:
        env.pop("UNSTABLE_MALLOC", None)
    else:
        env["UNSTABLE_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", ROUNDS], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_unstable_keeps_freed_blocks_for_reuse():
    tuned, default = run(None), run("0")
    assert tuned["tuned"] and not default["tuned"]
    # Without the tuning every round faults in most of what it allocates (about 2,500 pages of 4 KB).
    assert default["faults"] > 40 * 1000, default
    assert tuned["faults"] < default["faults"] / 20, (tuned, default)


def test_tune_is_idempotent_and_reports_itself():
    import unstable.allocator as allocator

    assert allocator.tune() == allocator.tuned()
    assert allocator.tune() == allocator.tuned()


# What a program sees after `exec_with_jemalloc()`: printed once before it (so a second start shows
# as a second line) and once after, with what the process is then.
REEXEC = """
import json, multiprocessing, os, sys
from unstable import allocator
print("started", os.getpid(), flush=True)
allocator.exec_with_jemalloc()
with multiprocessing.get_context("spawn").Pool(1) as pool:  # how the show starts its training process
    child = pool.apply(allocator.in_use)
print(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "in_use": allocator.in_use(), "child": child,
                  "conf": os.environ.get("MALLOC_CONF"), "kept": os.environ.get("UNSTABLE_TEST_KEPT")}))
"""

needs_jemalloc = pytest.mark.skipif(
    __import__("unstable.allocator").allocator.jemalloc_library() is None,
    reason="jemalloc is not installed (scripts/setup.sh installs Debian's libjemalloc2)")


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", "UNSTABLE_MALLOC")}
    return {**env, **extra}


@needs_jemalloc
def test_a_program_starts_again_once_with_jemalloc_keeping_its_pid_arguments_and_environment():
    from unstable.allocator import JEMALLOC_CONF

    out = subprocess.run([sys.executable, "-c", REEXEC, "two words", "--flag"], capture_output=True, text=True,
                         env=clean_env(UNSTABLE_TEST_KEPT="yes"), check=True, timeout=120).stdout.splitlines()
    starts = [line for line in out if line.startswith("started")]
    result = json.loads(out[-1])
    assert len(starts) == 2 and starts[0] == starts[1] == f"started {result['pid']}", out  # once more, same process
    assert result["argv"] == ["two words", "--flag"] and result["kept"] == "yes", result
    assert result["in_use"] == "jemalloc" and result["child"] == "jemalloc", result
    assert result["conf"] == JEMALLOC_CONF, result


@needs_jemalloc
def test_a_performer_s_own_malloc_conf_is_kept_and_unstable_malloc_0_keeps_glibc():
    out = subprocess.run([sys.executable, "-c", REEXEC], capture_output=True, text=True, check=True, timeout=120,
                         env=clean_env(MALLOC_CONF="narenas:2")).stdout.splitlines()
    assert json.loads(out[-1])["conf"] == "narenas:2" and json.loads(out[-1])["in_use"] == "jemalloc"
    out = subprocess.run([sys.executable, "-c", REEXEC], capture_output=True, text=True, check=True, timeout=120,
                         env=clean_env(UNSTABLE_MALLOC="0")).stdout.splitlines()
    result = json.loads(out[-1])
    assert len([line for line in out if line.startswith("started")]) == 1, out  # not started again
    assert result["in_use"] == result["child"] == "system", result


@needs_jemalloc
def test_the_unstable_command_runs_with_jemalloc():
    def version(**extra) -> str:
        return subprocess.run([sys.executable, "-m", "unstable", "--version"], capture_output=True, text=True,
                              env=clean_env(**extra), check=True, timeout=60).stdout

    assert "(allocator: jemalloc)" in version()
    assert "(allocator: system)" in version(UNSTABLE_MALLOC="0")

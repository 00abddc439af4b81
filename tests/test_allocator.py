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

"""Check mutants one by one in fresh pytest processes, where mutmut's own verdict is not to be trusted.

    python scripts/mutation_direct.py .mutation/guard tests/test_guard.py [--timeout S] [--no-timeouts]
    python scripts/mutation_direct.py .mutation/guard tests/test_guard.py --survivors  # after new tests
    python scripts/mutation_direct.py .mutation/farm tests/test_farm.py --sample 12  # a seeded sample

mutmut 3 runs each mutant in a forked worker under an RLIMIT_CPU derived from the tests' measured
call times. For modules whose tests build a real piece in fixtures (the guard) or open GL contexts
(the compositor), that limit fires on mutants that merely survive ("timeout", exit -24), and a
cut-short run leaves mutants "not checked". This script takes every mutant of the module's scratch
copy that mutmut left not checked, or marked as a timeout, and runs the module's test files against
it with ``MUTANT_UNDER_TEST=<name>`` in a new interpreter (no fork; a CPU-time limit of
``--timeout`` seconds for the whole test run, fixtures included), then writes the verdict back into mutmut's ``.meta`` records, so that
``scripts/mutation.sh --report`` and ``mutmut results`` count it:

- the tests fail: killed (exit code 1);
- the tests pass: survived (0);
- the CPU limit passes (or 20 times it in wall-clock time): timeout (36), reported as such and listed in ``direct.json``.

Each verdict is saved as soon as it is known, so a stopped run resumes where it stopped.

``--sample N`` checks a seeded random N of the pending mutants (the same N for the same pending
set and ``--seed``), for modules whose tests take minutes a mutant (the farm's Dask cluster): the
report then counts only the sampled ones as checked, an estimate of the whole module's score.

``--in-process`` runs every mutant's tests in this one interpreter (``pytest.main`` per mutant;
mutmut's trampoline reads ``MUTANT_UNDER_TEST`` at each call): no import of torch per mutant, which
on a loaded 2-core machine costs a minute (a 1 s test file's clean run took 78 s at a load of 26).
The price is a shared process: a mutant that spoils module state could sway the next verdicts, so
the clean run is repeated at the end and the run fails if it no longer passes. The limit is then
``--timeout`` seconds of wall time (SIGALRM), counted as a timeout.

``--shard K/N`` checks every Nth of those (from the Kth): N processes with the same arguments and
shards 0/N .. N-1/N share one sample between them (each saves under a lock), on a machine where a
process at nice 19 gets a small part of a core.
"""

from __future__ import annotations

import argparse
import fcntl
import fnmatch
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

NOT_CHECKED = None
NO_TESTS = 33  # mutmut's stats saw no test call it: true only for code run in this process
TIMEOUT_CODES = {-24, 24, 152, 255, 36}
KILLED, SURVIVED, WALL_TIMEOUT = 1, 0, 36


def pending_mutants(scratch: Path, globs: list[str], retry_timeouts: bool,
                    survivors: bool = False, untested: bool = False) -> list[tuple[Path, str]]:
    """(meta file, mutant name) for every mutant in scope still to be decided directly (with
    `survivors`: the mutants that survived, whoever decided it, against today's tests; with
    `untested`: also those mutmut found no test for, code that runs in another process)."""
    done = _direct_record(scratch)
    out = []
    for meta in sorted((scratch / "mutants").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if globs and not any(fnmatch.fnmatch(name, g) for g in globs):
                continue
            if survivors:
                wanted = code == SURVIVED
            else:  # not decided by this script yet (a resumed run), and undecided or timed out
                wanted = name not in done and (code is NOT_CHECKED or (retry_timeouts and code in TIMEOUT_CODES)
                                               or (untested and code == NO_TESTS))
            if wanted:
                out.append((meta, name))
    return out


def _direct_record(scratch: Path) -> dict:
    path = scratch / "direct.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_verdict(scratch: Path, meta: Path, name: str, code: int, seconds: float) -> None:
    # Write to a temporary file and rename, so a stopped run never leaves a half-written record;
    # under a lock, so that shards of one run never lose each other's verdicts.
    with open(scratch / "direct.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _save_locked(scratch, meta, name, code, seconds)


def _save_locked(scratch: Path, meta: Path, name: str, code: int, seconds: float) -> None:
    record = json.loads(meta.read_text())
    record["exit_code_by_key"][name] = code
    tmp = meta.with_suffix(".meta.tmp")
    tmp.write_text(json.dumps(record, indent=4))
    os.replace(tmp, meta)
    direct = _direct_record(scratch)
    direct[name] = {"exit_code": code, "seconds": round(seconds, 1)}
    tmp = scratch / "direct.json.tmp"
    tmp.write_text(json.dumps(direct, indent=1, sort_keys=True))
    os.replace(tmp, scratch / "direct.json")


def run_one(scratch: Path, name: str, tests: list[str], timeout: float) -> tuple[int, float]:
    """Run the test files against one mutant; (exit code to record, wall seconds)."""
    env = dict(os.environ, MUTANT_UNDER_TEST=name)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
           "-p", "no:randomly", *tests]

    def cpu_limit():  # CPU seconds, not wall: a paused or starved run must not read as a timeout
        resource.setrlimit(resource.RLIMIT_CPU, (int(timeout), int(timeout) + 5))

    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=scratch / "mutants", env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20 * timeout, preexec_fn=cpu_limit)
    except subprocess.TimeoutExpired:  # a mutant asleep forever (a wait that never ends)
        return WALL_TIMEOUT, time.monotonic() - start
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return WALL_TIMEOUT, time.monotonic() - start
    seconds = time.monotonic() - start
    # pytest: 0 all passed, 1 some failed, 2 interrupted, 3 internal error, 4 usage, 5 no tests.
    if proc.returncode == 0:
        return SURVIVED, seconds
    if proc.returncode in (1, 2, 3) or proc.returncode < 0:
        return KILLED, seconds  # a failure, an error at import, or a crash: the mutant is seen
    raise SystemExit(f"{name}: pytest exited {proc.returncode} (a usage problem, not a verdict); "
                     f"command: {' '.join(cmd)}")


class _Alarm(BaseException):
    """Raised by SIGALRM inside a test run (BaseException: pytest lets it through as an interrupt)."""


def run_in_process(name: str, tests: list[str], timeout: float) -> tuple[int, float]:
    """As run_one, in this interpreter (the caller has chdir'd into the scratch's mutants/)."""
    import pytest

    fired = []

    def alarm(signum, frame):
        fired.append(True)
        raise _Alarm()

    os.environ["MUTANT_UNDER_TEST"] = name
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(max(1, int(timeout)))
    start = time.monotonic()
    try:
        code = int(pytest.main(["-x", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-p", "no:randomly",
                                *tests]))
    except _Alarm:
        return WALL_TIMEOUT, time.monotonic() - start
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.environ.pop("MUTANT_UNDER_TEST", None)
    seconds = time.monotonic() - start
    if fired:  # pytest caught the alarm as an interrupt of its session (exit 2): not a failure
        return WALL_TIMEOUT, seconds
    if code == 0:
        return SURVIVED, seconds
    if code in (1, 2, 3):
        return KILLED, seconds
    raise SystemExit(f"{name}: pytest exited {code} (a usage problem, not a verdict)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scratch", type=Path, help="the module's scratch copy, .mutation/<module>")
    parser.add_argument("tests", nargs="+", help="test files, relative to the project root")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="CPU seconds per mutant before it counts as a timeout (default 300; "
                             "the wall-clock limit is 20 times that)")
    parser.add_argument("--no-timeouts", dest="retry_timeouts", action="store_false",
                        help="leave mutmut's timeouts as they are; check only the unchecked")
    parser.add_argument("--survivors", action="store_true",
                        help="re-check the mutants that survived (after adding tests for them)")
    parser.add_argument("--untested", action="store_true",
                        help="also check the mutants mutmut found no test for (code the tests run "
                             "in other processes, such as Dask workers, which its stats cannot see)")
    parser.add_argument("--sample", type=int, default=0,
                        help="check only a seeded random sample of this many pending mutants")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    parser.add_argument("--only", type=Path, help="a file of mutant names, one a line: check just these "
                        "(whatever their verdict so far)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every mutant's tests in this interpreter (no import per mutant; the "
                             "clean run repeated at the end)")
    parser.add_argument("--shard", default="0/1",
                        help="K/N: check every Nth pending (or sampled) mutant from the Kth (default 0/1: all)")
    args = parser.parse_args(argv)
    args.scratch = args.scratch.resolve()  # --in-process changes directory
    globs_file = args.scratch / "globs"
    globs = globs_file.read_text().split() if globs_file.exists() else []
    todo = pending_mutants(args.scratch, globs, args.retry_timeouts, args.survivors, args.untested)
    if args.only is not None:
        wanted = set(args.only.read_text().split())
        todo = [(meta, name) for meta in sorted((args.scratch / "mutants").rglob("*.py.meta"))
                for name in json.loads(meta.read_text())["exit_code_by_key"] if name in wanted]
    if 0 < args.sample < len(todo):
        todo = sorted(random.Random(args.seed).sample(todo, args.sample), key=lambda t: t[1])
    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
        if not 0 <= shard < shards:
            raise ValueError
    except ValueError:
        parser.error(f"--shard {args.shard!r}: expected K/N with 0 <= K < N")
    todo = todo[shard::shards]
    print(f"{args.scratch.name}: {len(todo)} mutants to check directly against {' '.join(args.tests)}",
          flush=True)
    run = run_one
    if args.in_process:
        os.chdir(args.scratch / "mutants")
        sys.path.insert(0, os.getcwd())

        def run(scratch, name, tests, timeout):
            return run_in_process(name, tests, timeout)
    # The clean run first: a failing suite would read as every mutant killed.
    code, seconds = run(args.scratch, "", args.tests, args.timeout)
    if code != SURVIVED:
        print(f"{args.scratch.name}: the tests fail without any mutant (exit {code}); nothing checked",
              file=sys.stderr)
        return 1
    print(f"clean run {seconds:.1f} s", flush=True)
    counts = {KILLED: 0, SURVIVED: 0, WALL_TIMEOUT: 0}
    for i, (meta, name) in enumerate(todo, 1):
        code, seconds = run(args.scratch, name, args.tests, args.timeout)
        _save_verdict(args.scratch, meta, name, code, seconds)
        counts[code] += 1
        verdict = {KILLED: "killed", SURVIVED: "SURVIVED", WALL_TIMEOUT: "timeout"}[code]
        print(f"[{i}/{len(todo)}] {verdict:8} {seconds:6.1f} s  {name}", flush=True)
    if args.in_process and run(args.scratch, "", args.tests, args.timeout)[0] != SURVIVED:
        print(f"{args.scratch.name}: the clean run fails after the mutants (module state spoilt in this "
              "process): the verdicts above are suspect, check them without --in-process", file=sys.stderr)
        return 1
    print(f"{args.scratch.name}: killed {counts[KILLED]}, survived {counts[SURVIVED]}, "
          f"timeout {counts[WALL_TIMEOUT]} of {len(todo)} checked directly")
    return 0


if __name__ == "__main__":
    sys.exit(main())

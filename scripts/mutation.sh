#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the core modules, one module at a time, outside CI (it is slow).
#
#   scripts/mutation.sh                 # every module below
#   scripts/mutation.sh walk guard      # just these
#   make mutation MODULES="walk guard"
#   scripts/mutation.sh --recheck walk  # after adding tests: re-run only walk's last survivors
#   scripts/mutation.sh --report walk   # the table again, from the last run
#   scripts/mutation.sh --direct guard  # decide the last run's unchecked and timed-out mutants one
#                                       # by one in fresh pytest processes (scripts/mutation_direct.py)
#   MUTATION_DIRECT_SURVIVORS=1 scripts/mutation.sh --direct guard   # then its survivors, against new tests
#   MUTATION_DIRECT_SAMPLE=12 MUTATION_DIRECT_UNTESTED=1 scripts/mutation.sh --direct farm
#                                       # a seeded sample of 12, "no tests" ones included (the farm's
#                                       # code runs in Dask worker processes mutmut's stats cannot see)
#   MUTATION_DIRECT_IN_PROCESS=1 scripts/mutation.sh --direct timeline   # every mutant in one
#                                       # interpreter (no torch import per mutant: seconds, not a minute,
#                                       # on a loaded machine; the clean run repeated at the end)
#   MUTATION_DIRECT_SHARD=0/2 ... & MUTATION_DIRECT_SHARD=1/2 ...   # one sample, two processes
#                                       # (start shard 0 first: it refreshes the scratch copy's tests;
#                                       # only for test files that can run twice at once: two runs of
#                                       # test_oscquery.py at once fail their clean run)
#   MUTATION_REF=HEAD scripts/mutation.sh farm   # mutate a commit, not the working tree (others' edits
#                                                # in progress left out); --recheck/--direct then take
#                                                # the tests from that ref too. The commit measured is
#                                                # written to .mutation/<module>/commit and the table.
#
# Each module runs in its own scratch copy of the project, .mutation/<module>/ (gitignored), with a
# generated [tool.mutmut] section: only that module's files are mutated, and only its own test files
# are run (mutmut then runs, for each mutant, just the tests that call the mutated function).
# Where a file holds more than the module's subject (the compositor's GL class, the OSC feedback
# thread and sockets, the walk's sampling and wall clock), a mutant-name filter restricts the run
# to the functions that matter.
# One worker by default (MUTATION_JOBS=1; 2 on an idle two-core machine): the machines are small and shared.
# Each module's run is bounded by MUTATION_TIMEOUT seconds (default 1800).
# At the end a table per module: killed, timed out, survived, checked, score = (killed + timeout) / checked; survivors are listed per module in
# .mutation/<module>/survivors.txt (`cd .mutation/<module> && mutmut show NAME` shows the diff).
# The review of the survivors lives in docs/mutation.md.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-$VENV/bin/python}"
JOBS="${MUTATION_JOBS:-1}"
LIMIT="${MUTATION_TIMEOUT:-1800}"
TMULT="${MUTATION_TIMEOUT_MULTIPLIER:-5}"  # a mutant is a timeout past ~5x its tests' clean time
WORK="$ROOT/.mutation"
USER_ADDOPTS="${PYTEST_ADDOPTS:-}"
REF="${MUTATION_REF:-}"
if [ -n "$REF" ]; then git rev-parse --verify -q "$REF^{commit}" >/dev/null || { echo "MUTATION_REF: no commit '$REF'" >&2; exit 2; }; fi
# The project's paths a scratch copy needs, from MUTATION_REF's commit or from the working tree.
copy_tree() {  # copy_tree DEST PATH...
  local dest="$1"; shift
  if [ -n "$REF" ]; then git archive "$REF" -- "$@" | tar -x -C "$dest"; else cp -r "$@" "$dest/"; fi
  find "$dest" -name __pycache__ -prune -exec rm -rf {} +
}
measured() {  # what a run measured: a commit, or the working tree on top of one (and whether it differed)
  if [ -n "$REF" ]; then git rev-parse --short "$REF"; return; fi
  local dirty=""; git diff --quiet HEAD -- "$@" || dirty=" + uncommitted edits"
  echo "working tree at $(git rev-parse --short HEAD)$dirty"
}
# One thread per test process (torch's OpenMP, Mesa's llvmpipe): mutmut's time limit counts CPU
# seconds, and a test spinning several threads reads as a timeout ("killed") when it is not.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" LP_NUM_THREADS="${LP_NUM_THREADS:-1}"

# module | files to mutate (space-separated) | test files | mutant-name globs ("" = every mutant)
#   [| pytest options for this module's runs, e.g. --deselect of a test too slow under mutmut]
spec() {
  case "$1" in
    divergence-losses) echo "unstable/divergence/losses.py|tests/test_divergence_losses.py|" ;;
    equilibrium-losses) echo "unstable/equilibrium/losses.py|tests/test_equilibrium.py|" ;;
    walk)
      # the path maths (all of splines.py) and the walk's own maths; not Walk.__init__/_build/
      # latents_at*, nor the wall clock (WalkClock)
      local m="unstable.walk"
      echo "unstable/walk.py unstable/splines.py|tests/test_walk.py|unstable.splines.* $m.x_panel_seed__* $m.x_keyframe_latent__* $m.xǁWalkǁ_locate__* $m.xǁWalkǁ_weights__* $m.xǁWalkSettingsǁ*" ;;
    params) echo "unstable/schema.py unstable/control/store.py|tests/test_store.py|" ;;
    checkpoint) echo "unstable/checkpoint.py|tests/test_checkpoint.py|" ;;
    guard) echo "unstable/guard.py|tests/test_guard.py|" ;;
    compositor)
      # the GL-free maths: display/layout.py's Layout, cells, fit, place, colour_matrix, and
      # compositor.py's _is_identity (not the GL class)
      local m="unstable.display.layout"
      echo "unstable/display/layout.py unstable/display/compositor.py|tests/test_compositor.py|$m.xǁLayoutǁ* $m.x_cells__* $m.x_fit__* $m.x_place__* $m.x_colour_matrix__* unstable.display.compositor.x__is_identity__*" ;;
    osc)
      # the address and argument mapping (handlers.py), the feedback messages and the allow-list
      # parsing; not the sockets, threads and dispatch plumbing
      local f="unstable.control.feedback.xǁFeedbackǁ" t="unstable.control.transport"
      echo "unstable/control/handlers.py unstable/control/feedback.py unstable/control/transport.py|tests/test_osc.py|unstable.control.handlers.xǁOscHandlersǁ* ${f}_messages_for__* ${f}on_change__* $t.x_parse_allow__* $t.x_is_loopback__*" ;;
    frame)
      # the frame clock's pieces: timers, scenes and crossfades, automation, the timeline, the
      # composer's looks, the look-ahead's keys; not the pipeline's threads and sinks
      echo "unstable/frame/timers.py unstable/frame/scenes.py unstable/frame/automation.py unstable/frame/timeline.py unstable/frame/compose.py unstable/frame/lookahead.py|tests/test_frame.py tests/test_lookahead.py tests/test_frame_mutants.py tests/test_id_caches.py|" ;;
    automation)
      # frame/'s automation files and timers on their own, against the tests that read and write
      # automation files (frame's full spec runs neither test_automation_files.py nor these)
      # Two tests left out: under mutmut's trampoline the 200 MB replay calls Automation._read
      # millions of times and exceeds any CPU limit (every _read mutant a "timeout"), and the capped
      # show renders for 12 s a mutant. test_mutation_automation.py pins the same lines, caps and
      # replays on small files; the memory bound stays with the full suite.
      local d="--deselect tests/test_automation_files.py::"
      echo "unstable/frame/automation.py unstable/frame/timers.py|tests/test_frame.py tests/test_automation_files.py tests/test_mutation_automation.py||${d}test_a_200_mb_file_is_checked_and_replayed_in_bounded_memory ${d}test_a_shows_automation_cap_stops_its_file_once_the_show_goes_on_and_the_file_renders" ;;
    timeline)
      # the show timeline on its own (frame's spec reached under half of it), against the tests
      # that advance, save and load a ShowTimeline; test_mutation_timeline.py pins what they did not
      echo "unstable/frame/timeline.py|tests/test_frame.py tests/test_frame_mutants.py tests/test_lookahead.py tests/test_mutation_timeline.py|" ;;
    lookahead)
      echo "unstable/frame/lookahead.py|tests/test_lookahead.py tests/test_param_consumers.py tests/test_mutation_lookahead.py|" ;;
    pipeline)
      # the one frame call and the render cursor over it (real GL: decide timeouts with --direct)
      echo "unstable/frame/pipeline.py unstable/frame/cursor.py|tests/test_frame_call.py tests/test_render_pipeline.py tests/test_lookahead.py tests/test_mutation_pipeline.py tests/test_mutation_timelapse.py|" ;;
    job-timeline)
      # a render job's timeline (curves and plan per frame) and the timelapse's checkpoint source
      echo "unstable/frame/job_timeline.py unstable/frame/timelapse.py|tests/test_render_pipeline.py tests/test_mutation_pipeline.py tests/test_mutation_timelapse.py|" ;;
    ws-admission)
      # the websocket places and inbound budgets on their own (the websockets spec mutates them
      # beside the hub, against test_oscquery.py's minute a mutant)
      echo "unstable/control/ws_admission.py|tests/test_websocket_hub.py tests/test_mutation_admission.py|" ;;
    access) echo "unstable/control/access.py|tests/test_access_token.py|" ;;
    websockets)
      # Without the zeroconf test: mDNS is machine-wide, so two runs at once (shards, or anyone's
      # test run) announce the same service and it fails whatever the mutant (a false kill).
      # test_websocket_hub.py first: its few seconds decide most mutants before test_oscquery's minute.
      echo "unstable/control/websockets.py unstable/control/ws_admission.py|tests/test_websocket_hub.py tests/test_oscquery.py||--deselect tests/test_oscquery.py::test_zeroconf_announces_the_show_to_an_oscquery_browser_on_another_machine" ;;
    bending) echo "unstable/bending.py unstable/clusters.py|tests/test_bending.py tests/test_bending_mutants.py|" ;;
    farm)
      # a real Dask cluster per test module: slow, run it alone
      echo "unstable/render/farm.py|tests/test_farm.py|" ;;
    recorder) echo "unstable/live/recorder.py|tests/test_recorder_stop.py tests/test_engine.py tests/test_disk_bounds.py tests/test_mutation_recorder.py|" ;;
    *) return 1 ;;
  esac
}
ALL=(divergence-losses equilibrium-losses walk params checkpoint guard compositor osc frame automation timeline lookahead pipeline job-timeline access websockets ws-admission bending farm recorder)

MODE=run
case "${1:-}" in --recheck) MODE=recheck; shift ;; --report) MODE=report; shift ;; --direct) MODE=direct; shift ;; esac
if [ "$#" -eq 0 ]; then set -- "${ALL[@]}"; fi
for m in "$@"; do spec "$m" >/dev/null || { echo "unknown module '$m'; one of: ${ALL[*]}" >&2; exit 2; }; done
"$PY" -c "import mutmut" 2>/dev/null || { echo "mutmut is missing: $PY -m pip install -e '.[mutation]'" >&2; exit 2; }
MUTMUT="$(dirname "$PY")/mutmut"

toml_list() { local out="" x; for x in "$@"; do out="$out\"$x\", "; done; echo "[${out%, }]"; }

# The scratch copy's pyproject: the project's without its own [tool.mutmut] section, plus this module's.
write_config() {  # write_config DIR FILES TESTS
  local dir="$1" files tests
  read -r -a files <<<"$2"; read -r -a tests <<<"$3"
  "$PY" - "$dir/pyproject.toml" <<PYEOF
import re, sys
text = open("pyproject.toml").read()
text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
text += """
[tool.mutmut]
source_paths = ["unstable"]
also_copy = ["pieces", "shows", "render"]
only_mutate = $(toml_list "${files[@]}")
pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly"]
pytest_add_cli_args_test_selection = $(toml_list "${tests[@]}")
use_setproctitle = false
timeout_multiplier = $TMULT
"""
open(sys.argv[1], "w").write(text)
PYEOF
}

for m in "$@"; do
  [ "$MODE" = report ] && break
  IFS='|' read -r files tests globs addopts <<<"$(spec "$m")"
  # pytest reads PYTEST_ADDOPTS in mutmut's in-process runs and in the direct runs' subprocesses alike
  export PYTEST_ADDOPTS="${USER_ADDOPTS:+$USER_ADDOPTS }$addopts"
  dir="$WORK/$m"
  if [ "$MODE" = direct ]; then
    # mutmut's forked workers run under a CPU limit taken from the tests' call times; where the
    # tests build a real piece or a GL context in fixtures that limit reads survivors as
    # timeouts. Decide those (and what a bounded run left unchecked) in fresh processes.
    [ -d "$dir/mutants" ] || { echo "== $m: no run to finish (run scripts/mutation.sh $m first)"; continue; }
    # (shards after the first leave the tests alone: the first may already be running them)
    case "${MUTATION_DIRECT_SHARD:-0/1}" in 0/*) rm -rf "$dir/mutants/tests" && copy_tree "$dir/mutants" tests ;; esac
    start=$(date +%s)
    # shellcheck disable=SC2086
    PYTHONPATH="$dir/mutants" "$PY" "$ROOT/scripts/mutation_direct.py" "$dir" $tests --timeout "${MUTATION_DIRECT_TIMEOUT:-120}" \
      ${MUTATION_DIRECT_SURVIVORS:+--survivors} ${MUTATION_DIRECT_SAMPLE:+--sample "$MUTATION_DIRECT_SAMPLE"} \
      ${MUTATION_DIRECT_UNTESTED:+--untested} ${MUTATION_DIRECT_SHARD:+--shard "$MUTATION_DIRECT_SHARD"} \
      ${MUTATION_DIRECT_IN_PROCESS:+--in-process} \
      | tee "$dir/direct${MUTATION_DIRECT_SHARD:+-${MUTATION_DIRECT_SHARD%/*}}.log" || echo "   direct run exited $? (log: $dir/direct.log)"
    echo "$(( $(date +%s) - start ))" >"$dir/direct-seconds"
    continue
  fi
  if [ "$MODE" = recheck ]; then
    # Same mutants, today's tests: refresh the scratch copy's tests and re-run the survivors only
    # (mutmut collects coverage for the new tests and keeps every other mutant's result).
    # (also the mutants a time limit left unchecked: --recheck finishes a cut-short run)
    [ -s "$dir/survivors.txt" ] || [ -s "$dir/unchecked.txt" ] || { echo "== $m: nothing to re-check"; continue; }
    # (its test files stay those of the run: mutmut resets every verdict when the test selection
    # changes, so a test file added to a module's spec needs a full run of the module)
    rm -rf "$dir/tests" && copy_tree "$dir" tests
    mapfile -t names < <(cat "$dir/survivors.txt" "$dir/unchecked.txt" 2>/dev/null | cut -d: -f1)
    echo "== $m: re-checking ${#names[@]} survivors/unchecked mutants against today's tests"
    start=$(date +%s)
    # Twice: a first pass right after new tests appear has been seen to let a mutant through
    # that the same tests kill on the second (mutmut 3.8 collects the new tests' coverage first).
    for pass in 1 2; do
      ( cd "$dir" && timeout "$LIMIT" "$MUTMUT" run --max-children "$JOBS" "${names[@]}" >"$dir/recheck.log" 2>&1 ) \
        || echo "   mutmut exited $? (log: $dir/recheck.log)"
    done
    echo "$(( $(date +%s) - start ))" >"$dir/recheck-seconds"
    continue
  fi
  rm -rf "$dir"; mkdir -p "$dir"
  copy_tree "$dir" unstable tests pieces shows render  # tests read pieces/ and shows/ from the root
  # shellcheck disable=SC2086
  measured $files $tests >"$dir/commit"
  write_config "$dir" "$files" "$tests"
  echo "== $m: mutating $files against $tests"
  start=$(date +%s)
  # shellcheck disable=SC2086
  ( cd "$dir" && timeout "$LIMIT" "$MUTMUT" run --max-children "$JOBS" $globs >"$dir/run.log" 2>&1 ) \
    || echo "   mutmut exited $? (log: $dir/run.log)"
  echo "$(( $(date +%s) - start ))" >"$dir/seconds"
  echo "$globs" >"$dir/globs"
done

# Score table, read from mutmut's per-file .meta records.
"$PY" - "$WORK" "$@" <<'PYEOF'
import fnmatch, json, sys
from pathlib import Path
from mutmut.stats import status_by_exit_code
work, modules = Path(sys.argv[1]), sys.argv[2:]
print(f"\n{'module':20} {'killed':>6} {'timeout':>7} {'survived':>8} {'no tests':>8} {'checked':>7} {'total':>6} {'score':>6} {'time':>8}")
for m in modules:
    d = work / m
    globs = (d / "globs").read_text().split() if (d / "globs").exists() else []
    counts, survivors, unchecked = {}, [], []
    for meta in sorted((d / "mutants").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if globs and not any(fnmatch.fnmatch(name, g) for g in globs):
                continue
            status = status_by_exit_code[code]
            counts[status] = counts.get(status, 0) + 1
            if status == "not checked":
                unchecked.append(f"{name}: {status}")
            elif status not in ("killed", "timeout", "caught by type check"):
                survivors.append(f"{name}: {status}")
    (d / "survivors.txt").write_text("".join(s + "\n" for s in survivors))
    (d / "unchecked.txt").write_text("".join(s + "\n" for s in unchecked))
    total = sum(counts.values())
    checked = total - len(unchecked)
    killed = counts.get("killed", 0) + counts.get("caught by type check", 0)
    timeout = counts.get("timeout", 0)
    score = 100 * (killed + timeout) / checked if checked else 0.0
    secs = (d / "seconds").read_text().strip() if (d / "seconds").exists() else "?"
    commit = (d / "commit").read_text().strip() if (d / "commit").exists() else "?"
    for extra in ("recheck-seconds", "direct-seconds"):
        if (d / extra).exists():
            secs += "+" + (d / extra).read_text().strip()
    print(f"{m:20} {killed:6} {timeout:7} {counts.get('survived', 0):8} {counts.get('no tests', 0):8} {checked:7} {total:6} "
          f"{score:5.1f}% {secs:>7}s  ({commit})")
print("\nscore = (killed + timeout) / checked; survivors per module: .mutation/<module>/survivors.txt"
      "\n(a cut-short run leaves mutants 'not checked': scripts/mutation.sh --recheck MODULE finishes it)")
PYEOF

#!/usr/bin/env bash
# The GPU checks that need nothing but PyTorch and numpy: for a lent device machine, where nothing
# can be installed and the project's venv does not travel (its python3 holds a CUDA PyTorch, not
# the pinned one). Runs the models' cuda-marked tests (CUDA graphs, one-image sampling, bf16
# sampling and training, compiled sampling) and the figures of issue 27 that need no GL, OSC or
# ffmpeg: sampling images/s with CUDA graphs on and off and with compiled sampling on and off, and
# equilibrium training at 256 and 512 px, all bounded so
# that the whole check ends within about 10 minutes. Everything goes to $LOG (default: $OUT/gpu-quick.log
# where OUT is set, else /tmp/gpu-quick.log).
#   scripts/gpu-quick-check.sh [PYTHON]      (default python3)
# The rest (the live show, the compositor's upload, a render: GL, OSC and ffmpeg) is scripts/gpu-check.sh,
# on a machine with the project's own setup.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
LOG=${LOG:-${OUT:-/tmp}/gpu-quick.log}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu tries the script itself on a machine without a GPU
: > "$LOG"
step() {  # step SECONDS TITLE COMMAND...: one bounded step, its output to the log and the screen
    local limit=$1 title=$2; shift 2
    echo "== $title" | tee -a "$LOG"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "== $title: exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}
step 30 "versions" $PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', \
torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
step 240 "cuda-marked model tests" $PY -m pytest -o addopts="" -q -p no:cacheprovider -m cuda \
    tests/test_cuda_graphs.py tests/test_compiled_sampling.py tests/test_single_image.py tests/test_speed_bf16.py \
    tests/test_speed_bf16_train.py
# Graphs alone (no compile on either side), then compiled sampling on (new) against off (base), graphs on.
step 120 "sampling images/s, CUDA graphs on (new) against off (base), one tree" \
    env UNSTABLE_COMPILE_SAMPLING=0 $PY tests/bench/bench_speed.py --device "$DEVICE" --base . \
    --base-env UNSTABLE_CUDA_GRAPHS=0 --repeats 1 --bursts 4 --seconds 1 --figures s64b1,s256b1,s256b4
step 240 "sampling images/s, torch.compile on (new) against off (base), one tree" \
    $PY tests/bench/bench_speed.py --device "$DEVICE" --base . --base-env UNSTABLE_COMPILE_SAMPLING=0 \
    --repeats 1 --bursts 4 --seconds 1 --figures s256b1,s256b4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for res in 256 512; do
    # The demo's 1:1 piece at a GPU's size, wider (as in scripts/gpu-check.sh).
    sed -e "s/^resolution = 64/resolution = $res/" -e "s/^max_channels = 64/max_channels = 256/" \
        pieces/equilibrium-1-1.toml > "$tmp/eq-$res.toml"
    step 45 "equilibrium 1:1 at $res px, training and sampling" \
        $PY tests/bench/bench_equilibrium.py "$tmp/eq-$res.toml" --device "$DEVICE" --seconds 5
done
echo "log: $LOG"

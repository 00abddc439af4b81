#!/usr/bin/env bash
# On a CUDA machine: the device-dependent tests (pytest -m cuda), then the equilibrium benchmark at
# 256 and 512 px and the live demo at 1920x1080, printed as one table; then A/B figures against the
# code before issue 27, and sampling with CUDA graphs and with compiled sampling against the same tree
# without them.
#   scripts/gpu-check.sh [VENV]      (default .venv; `make setup` first)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv}/bin/python
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device here (torch sees none)')"
$PY -m pytest -o addopts="" -q -p no:cacheprovider -m cuda tests/ | tee /tmp/gpu-check-tests.txt

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rows=()
for res in 256 512; do
    # The demo's 1:1 piece at a GPU's size: wider networks, as the piece's own comment suggests.
    sed -e "s/^resolution = 64/resolution = $res/" -e "s/^max_channels = 64/max_channels = 256/" \
        pieces/equilibrium-1-1.toml > "$tmp/eq-$res.toml"
    out=$($PY tests/bench/bench_equilibrium.py "$tmp/eq-$res.toml" --device cuda --seconds 10)
    echo "$out"
    steps=$(echo "$out" | sed -n 's/^training: \([0-9.]*\) steps\/s.*/\1/p')
    images=$(echo "$out" | sed -n 's/^inference g0: \([0-9.]*\) images\/s.*/\1/p')
    rows+=("| equilibrium 1:1 at ${res} px | ${steps} steps/s | ${images} images/s (batch 1) |")
done
sed -e 's/^size = \[512, 256\]/size = [1920, 1080]/' shows/demo.toml > shows/.gpu-check-1080.toml
live=$($PY -m unstable.cli live shows/.gpu-check-1080.toml --headless --seconds 30 --device cuda --osc-port 0 \
       --run "$tmp/live" 2>/dev/null | grep "frames in" || true)
rm -f shows/.gpu-check-1080.toml
# Issue 27: the same figures A/B against the code before its change (a worktree of that commit),
# with bf16 sampling and training convolutions where the GPU has them (UNSTABLE_PRECISION=bf16-train
# on the new side only); ratios of medians, interleaved runs.
base=${BASE27:-9aee2c2}
if git worktree add -q --detach "$tmp/base27" "$base" 2>/dev/null; then
    $PY tests/bench/bench_speed.py --device cuda --new-precision bf16-train --base "$tmp/base27" --repeats 3 \
        --figures eq256,eq512,s256b1,s256b4,s512b1,s512b4 | grep -v '^{' | tee "$tmp/ab.txt"
    git worktree remove --force "$tmp/base27"
else
    echo "gpu-check: no commit $base here for the A/B figures (set BASE27)"
fi

# CUDA graphs for sampling (unstable.cuda_graphs): the same tree with graphs on and off, in one run
# (neither side compiled); then compiled sampling (unstable.compiled_sampling) on and off, graphs on.
UNSTABLE_COMPILE_SAMPLING=0 $PY tests/bench/bench_speed.py --device cuda --base . \
    --base-env UNSTABLE_CUDA_GRAPHS=0 --repeats 3 --figures s64b1,s64b4,s128b1,s128b4,s256b1,s256b4 \
    | grep -v '^{' | tee "$tmp/graphs.txt"
$PY tests/bench/bench_speed.py --device cuda --base . --base-env UNSTABLE_COMPILE_SAMPLING=0 --repeats 2 \
    --figures s128b1,s128b4,s256b1,s256b4,s512b1 | grep -v '^{' | tee "$tmp/compiled.txt"

echo
echo "| what | training | sampling / display |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
echo "| demo show live at 1920x1080 | ${live#live: } | |"
echo "| tests marked cuda | $(tail -n 1 /tmp/gpu-check-tests.txt) | |"

#!/usr/bin/env bash
# Sets up everything `unstable` needs on a fresh Debian machine: system libraries for headless
# OpenGL (EGL, Mesa llvmpipe) and Xvfb, PortAudio for live audio input, Debian's chromium and its
# driver (the control page's browser tests), then a virtualenv with the project installed.
set -euo pipefail
VENV=${1:-.venv}

# libjemalloc2: the allocator the `unstable` command starts itself with (unstable/allocator.py).
# jackd2: a userspace JACK server (`jackd -d dummy`) gives the MIDI tests real ports where there is no ALSA
# sequencer (containers, CI); python-rtmidi talks to it through its UNIX_JACK API.
APT_PACKAGES="libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri xvfb libportaudio2 chromium chromium-driver iproute2 jackd2 libjemalloc2"
missing=""
for p in $APT_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and pinned, so nothing below can pull a CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[test]"
echo "setup: done ($VENV)"

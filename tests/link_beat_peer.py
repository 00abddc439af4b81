"""A second Ableton Link peer in its own process that reports the session's beat (not a test).

    python tests/link_beat_peer.py QUANTUM SET_AT BPM SECONDS [FORCE_AT]

Joins the session with a bar of QUANTUM beats (as a DAW does), waits for a peer, sets BPM SET_AT
seconds after it found one, with FORCE_AT moves every peer's beat on by two (Link's force_beat: a
DJ pulling the session onto the band's downbeat) FORCE_AT seconds after it found one, and prints `beat <wall time> <beat>` every few milliseconds for SECONDS
seconds: what the show's walk is compared with, from outside the show's process."""

import asyncio
import sys
import time

from aalink import Link


async def main(quantum: float, set_at: float, bpm: float, seconds: float, force_at: float | None) -> None:
    link = Link(100.0)
    link.quantum = quantum
    link.enabled = True
    end = time.monotonic() + seconds
    found, done, forced = None, False, force_at is None
    while time.monotonic() < end:
        if found is None and link.num_peers > 0:
            found = time.monotonic()
            print(f"peers {time.time():.6f} {link.num_peers}", flush=True)
        if found is not None and not done and time.monotonic() - found >= set_at:
            link.tempo = bpm
            done = True
            print(f"set {time.time():.6f} {bpm}", flush=True)
        if found is not None and not forced and time.monotonic() - found >= force_at:
            link.force_beat(link.beat + 2.0)
            forced = True
            print(f"forced {time.time():.6f} {link.beat:.6f}", flush=True)
        print(f"beat {time.time():.6f} {link.beat:.6f}", flush=True)
        await asyncio.sleep(0.004)
    link.enabled = False


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]),
                     float(sys.argv[5]) if len(sys.argv) > 5 else None))

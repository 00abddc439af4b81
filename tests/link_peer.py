"""A second Ableton Link peer in its own process, for the tempo tests and the benchmark (not a test).

    python tests/link_peer.py SET_AT BPM SECONDS

Joins the session, waits for a peer, sets BPM once SET_AT seconds after it found one (printing the
wall time it did so, `set <time>`), and prints `tempo <time> <bpm>` whenever the session's tempo
changes, for SECONDS seconds."""

import asyncio
import sys
import time

from aalink import Link


async def main(set_at: float, bpm: float, seconds: float) -> None:
    link = Link(100.0)
    link.enabled = True
    print(f"start {time.time():.6f}", flush=True)
    end = time.monotonic() + seconds
    found, done, last = None, False, None
    while time.monotonic() < end:
        if found is None and link.num_peers > 0:
            found = time.monotonic()
            print(f"peers {time.time():.6f} {link.num_peers}", flush=True)
        if found is not None and not done and time.monotonic() - found >= set_at:
            link.tempo = bpm
            print(f"set {time.time():.6f} {bpm}", flush=True)
            done = True
        if link.tempo != last:
            last = link.tempo
            print(f"tempo {time.time():.6f} {last:.4f}", flush=True)
        await asyncio.sleep(0.002)
    link.enabled = False


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])))

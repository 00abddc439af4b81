"""A second Ableton Link peer in its own process, for the tempo tests and the benchmark (not a test).

    python tests/link_peer.py SET_AT BPM SECONDS [REPEAT]

Joins the session, waits for a peer, sets BPM once SET_AT seconds after it found one (printing the
wall time it did so, `set <time> <bpm>`), and prints `tempo <time> <bpm>` whenever the session's
tempo changes, for SECONDS seconds. With REPEAT it sets BPM + 1, BPM, BPM + 1, ... REPEAT more
times, 0.3 s apart (the benchmark)."""

import asyncio
import sys
import time

from aalink import Link


async def main(set_at: float, bpm: float, seconds: float, repeat: int = 0) -> None:
    link = Link(100.0)
    link.enabled = True
    print(f"start {time.time():.6f}", flush=True)
    end = time.monotonic() + seconds
    found, done, last = None, 0, None
    while time.monotonic() < end:
        if found is None and link.num_peers > 0:
            found = time.monotonic()
            print(f"peers {time.time():.6f} {link.num_peers}", flush=True)
        if found is not None and done <= repeat and time.monotonic() - found >= set_at + 0.3 * done:
            link.tempo = bpm + done % 2
            print(f"set {time.time():.6f} {bpm + done % 2}", flush=True)
            done += 1
        if link.tempo != last:
            last = link.tempo
            print(f"tempo {time.time():.6f} {last:.4f}", flush=True)
        await asyncio.sleep(0.002)
    link.enabled = False


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]),
                     int(sys.argv[4]) if len(sys.argv) > 4 else 0))

"""The show's side of the Link tests (not a test): a parameter store with the show's tempo, its
TempoLink in a session with tests/link_peer.py in another process. Prints one JSON line.

    python tests/link_show.py    (run inside a network namespace with only loopback: see test_tempo.py)

The peer sets 133 BPM; the show's tempo must follow (when, in wall time, against the peer's `set`).
Then the show taps 150 BPM (0.4 s apart): the peer must follow. Every wait is for something seen
(the peer's lines, read on a thread as they come; the store's changes), with a generous deadline:
beside CPU hogs the peer's start-up and Link's discovery take what they take. The peer lives until
it is ended here."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import read_lines, wait_for

from unstable.control.store import ParameterStore
from unstable.schema import SHOW, show_specs
from unstable.tempo import TAP, TempoLink, tempo_specs

HERE = Path(__file__).resolve().parent
DEADLINE = 30.0  # seconds for anything awaited: far beyond what it takes on a loaded machine


def tempos(lines, after=0.0):
    """The peer's `tempo <time> <bpm>` lines from `after` (wall time) on, as (time, bpm)."""
    out = [(float(x.split()[1]), float(x.split()[2])) for x in list(lines) if x.startswith("tempo ")]
    return [(t, v) for t, v in out if t >= after]


def main() -> None:
    store = ParameterStore({SHOW: show_specs(1) + tempo_specs(120.0)})
    seen = []
    store.add_listener(lambda keys, origin: (SHOW, "tempo") in keys and seen.append(
        (time.time(), store.get(SHOW, "tempo"), origin)))
    link = TempoLink(store, link=True).start()
    peer = subprocess.Popen([sys.executable, str(HERE / "link_peer.py"), "0.5", "133", "300"],
                            stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=read_lines, args=(peer.stdout, lines), daemon=True)
    reader.start()
    taps = []
    try:
        wait_for(lambda: peer.poll() is not None or any(abs(v - 133) < 1e-3 for _, v, _ in seen), DEADLINE)
        followed = next((t for t, v, _ in seen if abs(v - 133) < 1e-3), None)
        time.sleep(0.3)
        taps_at = time.time()
        for _ in range(4):  # 0.4 s apart: 150 BPM; each tap's time is between the two readings
            before = time.monotonic()
            store.set(SHOW, "tap", 1, origin=("127.0.0.1", 9))
            taps.append((before, time.monotonic()))
            time.sleep(0.4)
        made = [(t, v) for t, v, origin in seen if origin == TAP]
        tapped = made[-1][1] if made else None
        # Until the peer has the show's tempo (or the deadline says it never will).
        wait_for(lambda: peer.poll() is not None or (
            tempos(lines, taps_at) and abs(tempos(lines, taps_at)[-1][1] - store.get(SHOW, "tempo")) < 0.01), DEADLINE)
        final = store.get(SHOW, "tempo")
    finally:
        if peer.poll() is None:
            peer.kill()
        peer.wait()
        reader.join(5.0)
        link.stop()
    set_t = next((float(x.split()[1]) for x in lines if x.startswith("set ")), None)
    # The first tempo the peer saw after the taps made one (the session carries it to a microsecond
    # a beat, so two taps' tempos may be one to the peer: its first change is compared, not the last).
    peer_tapped = next(iter(tempos(lines, made[0][0])), None) if made else None
    peer_tempos = tempos(lines)
    print(json.dumps({"set": set_t, "followed": followed, "tapped": tapped, "taps": taps, "made": made,
                      "final": final, "peer_final": peer_tempos[-1][1] if peer_tempos else None,
                      "peer_tapped": peer_tapped, "peer_lines": lines[-5:]}))


if __name__ == "__main__":
    main()

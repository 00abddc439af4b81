"""The show's side of the Link tests (not a test): a parameter store with the show's tempo, its
TempoLink in a session with tests/link_peer.py in another process. Prints one JSON line.

    python tests/link_show.py    (run inside a network namespace with only loopback: see test_tempo.py)

The peer sets 133 BPM; the show's tempo must follow (when, in wall time, against the peer's `set`).
Then the show taps 150 BPM (0.4 s apart): the peer must follow."""

import json
import subprocess
import sys
import time
from pathlib import Path

from unstable.control.store import ParameterStore
from unstable.schema import SHOW, show_specs
from unstable.tempo import TempoLink, tempo_specs

HERE = Path(__file__).resolve().parent


def main() -> None:
    store = ParameterStore({SHOW: show_specs(1) + tempo_specs(120.0)})
    seen = []
    store.add_listener(lambda keys, origin: (SHOW, "tempo") in keys and seen.append(
        (time.time(), store.get(SHOW, "tempo"), origin)))
    link = TempoLink(store, link=True).start()
    peer = subprocess.Popen([sys.executable, str(HERE / "link_peer.py"), "0.5", "133", "6"],
                            stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and not any(abs(v - 133) < 1e-3 for _, v, _ in seen):
            time.sleep(0.01)
        followed = next((t for t, v, _ in seen if abs(v - 133) < 1e-3), None)
        time.sleep(0.3)
        taps_at = time.time()
        for _ in range(4):  # 0.4 s apart: 150 BPM
            store.set(SHOW, "tap", 1, origin=("127.0.0.1", 9))
            time.sleep(0.4)
        tapped = store.get(SHOW, "tempo")
        out, _ = peer.communicate(timeout=10)
        lines = out.splitlines()
    finally:
        if peer.poll() is None:
            peer.kill()
        link.stop()
    set_t = next((float(x.split()[1]) for x in lines if x.startswith("set ")), None)
    peer_150 = next((float(x.split()[1]) for x in lines if x.startswith("tempo ") and float(x.split()[2]) > 140
                     and float(x.split()[1]) > taps_at), None)
    print(json.dumps({"set": set_t, "followed": followed, "tapped": tapped, "taps_at": taps_at,
                      "peer_final": float(lines[-1].split()[2]) if lines and lines[-1].startswith("tempo") else None,
                      "peer_150": peer_150, "peer_lines": lines[-5:]}))


if __name__ == "__main__":
    main()

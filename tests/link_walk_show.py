"""The show's side of the Link walk test (not a test): a show's timeline with a walk period in beats,
its inputs (ShowInputs: TempoLink and the once-a-second alignment, as `unstable live --link` hooks
them on the engine) in a session with tests/link_beat_peer.py in another process. Prints one JSON
line: per frame the wall time, the beats the walk has walked and the show's beat count, and the
peer's lines.

    python tests/link_walk_show.py SHOW.toml AFTER   (inside a network namespace with only loopback)

The show plays until AFTER seconds past the peer's forced beat, as the peer reports it (its lines are
read on a thread as they come): beside CPU hogs the peer's start-up and Link's discovery take what
they take. Waiting for the peer to find the show, and then for its forced beat, gives up after
DEADLINE seconds each (the test then says which line never came). The peer lives until it is ended
here.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import read_lines

from unstable.control.show_inputs import ShowInputs
from unstable.control.store import ParameterStore
from unstable.frame.timeline import ShowTimeline
from unstable.schema import SHOW, common_specs, show_specs
from unstable.show import load_show
from unstable.tempo import tempo_specs

HERE = Path(__file__).resolve().parent
FPS = 50
DEADLINE = 30.0


class Timer:
    def __init__(self):
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


class Engine:
    """What ShowInputs.attach reads of a live engine: its store, timer, timeline and frame hooks."""

    def __init__(self, store, timeline):
        self.params, self.timeline, self.timer = store, timeline, Timer()
        self.run_dir, self.frame_hooks = None, []


def main(path: str, after: float) -> None:
    show = load_show(Path(path))
    t = show.settings.tempo
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1) + tempo_specs(t.bpm, t.link)})
    timeline = ShowTimeline(show.resolved_scenes(), store, ["eq"], FPS, walk_bpm=show.walk_tempo)
    eng = Engine(store, timeline)
    inputs = ShowInputs(show, link=True)
    inputs.attach(eng)
    peer = subprocess.Popen([sys.executable, str(HERE / "link_beat_peer.py"), str(t.beats_per_bar), "1.0", "133",
                             "300", "3.0"], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=read_lines, args=(peer.stdout, lines), daemon=True)
    reader.start()

    def seen(word: str) -> float | None:
        """The wall time of the peer's first `word ...` line, once it has come."""
        return next((float(x.split()[1]) for x in list(lines) if x.startswith(word + " ")), None)

    def done() -> bool:
        """Played past the forced beat by `after` seconds, or given up on a line that never came."""
        if peer.poll() is not None:
            return True
        found, forced = seen("peers"), seen("forced")
        if forced is not None:
            return time.time() > forced + after
        if found is not None:
            return time.time() > found + DEADLINE
        return eng.timer.elapsed() > DEADLINE

    frames = []
    try:
        eng.timer.start = time.monotonic()
        wall0 = time.time() - eng.timer.elapsed()
        n = 0
        while not done():
            # As the live engine does: frame n stands at n / fps on the grid, late or not, and the
            # slots a late frame skipped are advanced without pixels.
            last = max(n, int(eng.timer.elapsed() * FPS))
            while n <= last:
                state = timeline.advance(n)
                frames.append((wall0 + n / FPS, state.walk_times["eq"] * show.walk_tempo / 60.0,
                               timeline.beats.beat, store.get(SHOW, "tempo")))
                n += 1
            for hook in eng.frame_hooks:
                hook(eng)
            time.sleep(max(0.0, (n / FPS) - eng.timer.elapsed()))
    finally:
        if peer.poll() is None:
            peer.kill()
        peer.wait()
        reader.join(5.0)
        inputs.stop()
    print(json.dumps({"frames": frames, "peer": lines}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))

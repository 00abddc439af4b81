"""A MIDI controller in its own process, for the port tests (not a test): virtual JACK ports
NAME (out: what its knobs send) and NAME (in: its LEDs), driven from stdin.

    python tests/midi_controller.py NAME
    stdin:  "send 176 21 127"  -> the bytes go out of its port
    stdout: "ready", then "led 176 21 64" for every message the show sends back
"""

import sys
import time

import rtmidi


def main(name: str) -> None:
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "controller")
    out.open_virtual_port(name)
    inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "controller-leds")
    inp.open_virtual_port(name)
    inp.set_callback(lambda event, _: print("led", *event[0], flush=True))
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "send":
            out.send_message([int(w) for w in words[1:]])
        elif words and words[0] == "sleep":
            time.sleep(float(words[1]))
    out.close_port()
    inp.close_port()


if __name__ == "__main__":
    main(sys.argv[1])

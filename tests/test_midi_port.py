"""MIDI through a real port: a userspace JACK server (`jackd -d dummy`, no sound card, no ALSA
sequencer needed) and a controller in another process with virtual ports. The show's MidiLink finds
the port by name, its knob moves a parameter, the LEDs follow a change made elsewhere, unplugging
is one log line and the port comes back by itself, learn saves a binding that works after a
restart, and an unknown port is one line while the show plays on."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ONE_PANEL_SHOW, wait_for
from unstable.control.midi import LEARN_FILE, MidiLink
from unstable.control.midi_map import MidiMap, MidiSettings, learn_specs
from unstable.control.store import ParameterStore
from unstable.schema import SHOW, common_specs, show_specs
from unstable.tempo import tempo_specs

HERE = Path(__file__).resolve().parent
PAGE = ("127.0.0.1", 50123)  # where the control page's writes come from


@pytest.fixture(scope="module")
def jack():
    """A JACK server of our own (dummy driver) for these tests; rtmidi's JACK clients find it by name."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (scripts/setup.sh installs jackd2)")
    # One name, not one per run: JACK keeps at most 8 server names in its registry, and a server
    # that had to be killed leaves its name there (a later server of the same name takes it over).
    name = f"unstable-tests-{os.getuid()}"
    env = {"JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1", "JACK_NO_AUDIO_RESERVATION": "1"}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    proc = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import rtmidi
    try:
        assert wait_for(lambda: _jack_up(rtmidi), timeout=10), "jackd did not start"
        yield name
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # it waits for clients that are gone
            proc.kill()
            proc.wait()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _jack_up(rtmidi) -> bool:
    try:
        rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "probe").get_ports()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        time.sleep(0.1)
        return False


class Controller:
    """The controller process: `send(*bytes)`, `leds` it received."""

    def __init__(self, name: str = "knobs"):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "midi_controller.py"), name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout.readline().strip() == "ready"
        self.leds: list[list[int]] = []
        import threading
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("led "):
                self.leds.append([int(w) for w in line.split()[1:]])

    def send(self, *data: int) -> None:
        self.proc.stdin.write("send " + " ".join(map(str, data)) + "\n")
        self.proc.stdin.flush()

    def unplug(self) -> None:
        self.proc.kill()
        self.proc.wait()


def store(learn=False):
    groups = {"eq": common_specs(), SHOW: show_specs(2) + tempo_specs()}
    if learn:
        groups[SHOW] = groups[SHOW] + learn_specs(sum(map(len, groups.values())) + 1)
    return ParameterStore(groups)


def test_a_knob_moves_its_parameter_and_the_leds_follow_changes_made_elsewhere(jack, tmp_path):
    s = store()
    ctl = Controller()
    link = MidiLink(s, MidiSettings(port="knobs", map=(MidiMap(cc=21, param="eq.hue", takeover=False),
                                                       MidiMap(note=40, scene=1))), tmp_path, api="jack",
                    watch=0.1).start()
    try:
        assert link.port_name is not None and "knobs" in link.port_name
        ctl.send(0xB0, 21, 127)
        assert wait_for(lambda: s.get("eq", "hue") == 180.0, timeout=30)
        ctl.send(0x90, 40, 100)
        assert wait_for(lambda: [e.value for e in s.drain_events() if e.kind == "scene"] == [1.0], timeout=30)
        s.set("eq", "hue", 0.0, origin=PAGE)                 # the page moved it: the ring shows it
        assert wait_for(lambda: [0xB0, 21, 64] in ctl.leds, timeout=30), ctl.leds
        s.set(SHOW, "scene", 1)                              # a scene change lights its pad
        assert wait_for(lambda: [0x90, 40, 127] in ctl.leds, timeout=30), ctl.leds
    finally:
        link.stop()
        ctl.unplug()


def test_unplugging_is_one_line_and_the_port_reconnects_when_it_is_back(jack, tmp_path, caplog):
    s = store()
    ctl = Controller()
    link = MidiLink(s, MidiSettings(port="knobs", map=(MidiMap(cc=7, param="eq.fade", takeover=False),)), tmp_path,
                    api="jack", watch=0.1).start()
    try:
        ctl.send(0xB0, 7, 0)
        assert wait_for(lambda: s.get("eq", "fade") == 0.0, timeout=30)
        with caplog.at_level(logging.INFO, logger="unstable.midi"):
            ctl.unplug()
            assert wait_for(lambda: link.inport is None, timeout=30)
            time.sleep(0.5)                                   # several more looks while it is gone
            s.set("eq", "fade", 0.5)                          # the show plays on
            gone = [r for r in caplog.records if "disappeared" in r.getMessage()]
            assert len(gone) == 1, [r.getMessage() for r in caplog.records]
            ctl = Controller()
            assert wait_for(lambda: link.reconnects == 1, timeout=5)
            assert wait_for(lambda: [r for r in caplog.records if "reconnected" in r.getMessage()])
        assert len([r for r in caplog.records if "reconnected" in r.getMessage()]) == 1
        ctl.send(0xB0, 7, 127)
        assert wait_for(lambda: s.get("eq", "fade") == 1.0)
    finally:
        link.stop()
        ctl.unplug()


def test_an_unknown_port_is_one_line_and_opens_when_it_appears(jack, tmp_path, caplog):
    s = store()
    with caplog.at_level(logging.WARNING, logger="unstable.midi"):
        link = MidiLink(s, MidiSettings(port="nanoKONTROL", map=(MidiMap(cc=7, param="eq.fade", takeover=False),)),
                        tmp_path, api="jack", watch=0.1).start()
        try:
            time.sleep(0.5)
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 1 and "no input port matches 'nanoKONTROL'" in lines[0], lines
            ctl = Controller("nanoKONTROL2 MIDI 1")
            assert wait_for(lambda: link.inport is not None, timeout=5)
            ctl.send(0xB0, 7, 0)
            assert wait_for(lambda: s.get("eq", "fade") == 0.0)
            ctl.unplug()
        finally:
            link.stop()


def test_learn_binds_the_clicked_control_saves_it_and_it_works_after_a_restart(jack, tmp_path):
    s = store(learn=True)
    keys = s.keys()
    ctl = Controller()
    link = MidiLink(s, MidiSettings(port="knobs"), tmp_path, api="jack", watch=0.1).start()
    try:
        s.set(SHOW, "midi_learn", 2 + keys.index(("eq", "saturation")), origin=PAGE)  # the page: click "saturation"
        assert wait_for(lambda: link.learn_target is not None)
        ctl.send(0xB2, 30, 64)                                # move a knob on channel 3
        assert wait_for(lambda: s.get(SHOW, "midi_learn") == 0.0)
        assert link.bindings() == [{"source": "ch3 cc30", "target": "eq.saturation", "learned": True}]
        ctl.send(0xB2, 30, 127)                               # within a step of 1.0? no: soft takeover waits
        ctl.send(0xB2, 30, 60)                                # crossed 0.5 (saturation 1.0 of 2.0): moves
        assert wait_for(lambda: s.get("eq", "saturation") == pytest.approx(2 * 60 / 127))
    finally:
        link.stop()
    assert "cc = 30" in (tmp_path / LEARN_FILE).read_text()
    # A restart: a new store and link from the same run folder.
    s2 = store(learn=True)
    link2 = MidiLink(s2, MidiSettings(port="knobs"), tmp_path, api="jack", watch=0.1).start()
    try:
        assert wait_for(lambda: link2.inport is not None)
        ctl.send(0xB2, 30, 64)
        ctl.send(0xB2, 30, 10)
        assert wait_for(lambda: s2.get("eq", "saturation") == pytest.approx(2 * 10 / 127))
        assert link2.bindings()[0]["learned"]
    finally:
        link2.stop()
        ctl.unplug()


def test_a_learned_file_with_a_binding_the_show_no_longer_has_is_one_line_and_the_rest_load(tmp_path, caplog):
    (tmp_path / LEARN_FILE).write_text('[[map]]\ncc = 1\nparam = "eq.gone"\n\n[[map]]\ncc = 2\nparam = "eq.hue"\n')
    with caplog.at_level(logging.ERROR, logger="unstable.midi"):
        link = MidiLink(store(), MidiSettings(port="x"), tmp_path)
    assert [m.cc for m in link.mapper.maps] == [2]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "eq.gone" in lines[0] and LEARN_FILE in lines[0], lines


LIVE_SHOW = ONE_PANEL_SHOW + """\
[training]
render_threads = 1
[midi]
port = "knobs"
api = "jack"
[[midi.map]]
cc = 8
param = "show.master_fade"
takeover = false
"""


@pytest.mark.usefixtures("one_torch_thread")
def test_midi_played_live_lands_in_the_automation_and_the_page_lists_the_bindings(jack, tmp_path):
    from test_show import write_show
    from unstable.control.show_inputs import ShowInputs
    from unstable.frame.automation import load_automation
    from unstable.live import Engine
    from unstable.show import load_show
    show = load_show(write_show(tmp_path, LIVE_SHOW))
    auto = tmp_path / "live.automation.jsonl"
    ctl = Controller()
    eng = Engine(show, headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run", train=False,
                 automation=auto, echo=lambda s: None)
    inputs = ShowInputs(show)
    inputs.attach(eng)
    try:
        with eng:
            eng.frame(number=0)                               # the inputs start after the first frame
            assert inputs.midi is not None and inputs.midi.inport is not None
            ctl.send(0xB0, 8, 0)
            assert wait_for(lambda: eng.params.get(SHOW, "master_fade") == 0.0)
            for n in range(1, 4):
                eng.frame(number=n)
            page = eng.controls.web_link.server.space.page_schema()
    finally:
        inputs.stop()
        ctl.unplug()
    assert page["midi"] == [{"source": "cc8", "target": "show.master_fade", "learned": False}]
    a = load_automation(auto)
    assert a.at(1) == {"set": {"show": {"master_fade": 0.0}}}


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
def test_learn_on_the_control_page_click_a_control_move_a_knob_listed_and_saved(jack, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_show import write_show
    from test_web_page import open_page
    from unstable.control.show_inputs import ShowInputs
    from unstable.live import Engine
    from unstable.show import load_show
    show = load_show(write_show(tmp_path, LIVE_SHOW))
    ctl = Controller()
    eng = Engine(show, headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run", train=False,
                 echo=lambda s: None)
    inputs = ShowInputs(show)
    inputs.attach(eng)
    driver = _chromium()
    try:
        with eng:
            eng.frame(number=0)
            open_page(driver, eng.web.url())
            assert driver.find_element(By.ID, "bindings").text == "cc8 → show.master_fade"
            driver.find_element(By.ID, "learn").click()
            assert wait_for(lambda: eng.params.get(SHOW, "midi_learn") == 1.0)
            driver.find_element(By.CSS_SELECTOR, "[data-learn='/unstable/eq/hue'] label").click()  # click "hue"
            assert wait_for(lambda: inputs.midi.learn_target is not None and inputs.midi.learn_target[:2] == ("eq", "hue"))
            ctl.send(0xB0, 30, 64)
            WebDriverWait(driver, 10).until(lambda d: "cc30 → eq.hue (learned)" in d.find_element(By.ID, "bindings").text)
            assert driver.find_element(By.ID, "learn").get_attribute("aria-pressed") == "false"
    finally:
        driver.quit()
        inputs.stop()
        ctl.unplug()
    assert 'param = "eq.hue"' in (tmp_path / "run" / LEARN_FILE).read_text()


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,1400"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_page_load_timeout(30)
    return driver

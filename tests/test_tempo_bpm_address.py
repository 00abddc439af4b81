"""`/unstable/show/tempo` is in BPM (the spec's `osc_units`), everywhere the address appears: the OSC
server over real UDP on loopback (in and feedback), OSCQuery (RANGE, UNIT, LISTEN's value), the
control page's schema and the page itself in a real browser, and the TouchOSC and Max controllers.
Every other fader's plain address stays 0..1."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zlib

import pytest
from pythonosc.osc_message import OscMessage

from helpers import Client, wait_for
from unstable.control.controllers import maxpat, touchosc_xml
from unstable.control.osc import OscServer
from unstable.control.oscquery import AddressSpace
from unstable.control.store import ParameterStore
from unstable.control.tosc_phone import touchosc_phone_xml
from unstable.schema import SHOW, ParamSpec, common_specs, show_specs
from unstable.tempo import tempo_specs

TEMPO = "/unstable/show/tempo"


def groups():
    return {"eq": common_specs(), SHOW: show_specs(2) + tempo_specs(120.0)}


def test_the_plain_tempo_address_takes_and_feeds_back_bpm_over_udp(caplog):
    store = ParameterStore(groups())
    server = OscServer(store, port=0, feedback_interval=0.0).start()
    player, listener = Client(server.port), Client(server.port)
    try:
        listener.send("/unstable/subscribe", listener.port, types=["i"])
        assert wait_for(lambda: len(server.subscribers) == 1)
        listener.received(quiet=0.3)                      # the full state a subscription starts with
        player.send(TEMPO, 133.0)
        assert wait_for(lambda: store.get(SHOW, "tempo") == 133.0)
        got = dict(listener.received(quiet=0.3))
        assert got[TEMPO] == pytest.approx(133.0) and got[TEMPO + "/raw"] == pytest.approx(133.0)
        # Every other fader is still 0..1 on its plain address.
        player.send("/unstable/show/master_fade", 0.25)
        player.send("/unstable/eq/hue", 0.75)
        assert wait_for(lambda: store.get("eq", "hue") == pytest.approx(90.0))
        assert store.get(SHOW, "master_fade") == pytest.approx(0.25)
        got = dict(listener.received(quiet=0.3))
        assert got["/unstable/eq/hue"] == pytest.approx(0.75) and got["/unstable/eq/hue/raw"] == pytest.approx(90.0)
        # Out of the BPM range: clamped to it (not to 0..1) with one line naming the address.
        with caplog.at_level("WARNING"):
            player.send(TEMPO, 999.0)
            assert wait_for(lambda: store.get(SHOW, "tempo") == 300.0)
            player.send(TEMPO, 0.5)                        # a 0..1 fader's value is 20 BPM, not 160
            assert wait_for(lambda: store.get(SHOW, "tempo") == 20.0)
        lines = [r.getMessage() for r in caplog.records if TEMPO in r.getMessage()]
        # One line (rate-limited per address), in BPM.
        assert len(lines) == 1 and "999.0 is outside [20, 300]" in lines[0], lines
    finally:
        player.close()
        listener.close()
        server.stop()


def test_oscquery_publishes_the_tempo_in_bpm_with_its_range_and_unit():
    store = ParameterStore(groups())
    store.set(SHOW, "tempo", 133.0)
    space = AddressSpace(store)
    node = space.node(TEMPO)
    assert node["TYPE"] == "f" and node["VALUE"] == [133.0]
    assert node["RANGE"] == [{"MIN": 20.0, "MAX": 300.0}] and node["UNIT"] == ["BPM"]
    address, args = (lambda m: (m.address, list(m.params)))(OscMessage(space.message(TEMPO)))
    assert address == TEMPO and args == [pytest.approx(133.0)]   # what LISTEN streams
    hue = space.node("/unstable/eq/hue")
    assert hue["RANGE"] == [{"MIN": 0.0, "MAX": 1.0}] and "UNIT" not in hue
    page = {p["name"]: p for g in space.page_schema()["groups"] for p in g["params"]}
    assert page["tempo"]["osc_units"] is True and page["hue"]["osc_units"] is False


def _tempo_fader_scale(xml: str) -> list[tuple[str, str]]:
    root = ET.fromstring(xml)
    out = []
    for osc in root.iter("osc"):
        if osc.find("./path/partial/value").text == TEMPO:
            part = osc.find("./arguments/partial")
            out.append((part.find("scaleMin").text, part.find("scaleMax").text))
    return out


def test_the_controllers_send_and_show_the_tempo_in_bpm():
    g = groups()
    # TouchOSC scales its 0..1 fader onto 20..300 for what it sends and back for what it receives.
    assert _tempo_fader_scale(touchosc_xml(g)) == [("20", "300")]
    assert _tempo_fader_scale(touchosc_phone_xml(g)) == [("20", "300")]
    hue = [osc.find("./arguments/partial/scaleMax").text for osc in ET.fromstring(touchosc_xml(g)).iter("osc")
           if osc.find("./path/partial/value").text == "/unstable/eq/hue"]
    assert hue == ["1"]
    # Max: the slider that feeds `prepend /unstable/show/tempo` spans 20..300.
    patch = maxpat(g)["patcher"]
    boxes = {b["box"]["id"]: b["box"] for b in patch["boxes"]}
    pre = next(i for i, b in boxes.items() if b.get("text") == f"prepend {TEMPO}")
    (slider,) = [boxes[ln["patchline"]["source"][0]] for ln in patch["lines"]
                 if ln["patchline"]["destination"][0] == pre]
    assert slider["maxclass"] == "slider" and (slider["min"], slider["size"]) == (20.0, 280.0)


def test_a_tempo_spec_in_own_units_must_be_linear():
    with pytest.raises(ValueError, match="osc_units"):
        ParamSpec("rate", 1e-4, 1.0, 1e-3, log=True, osc_units=True)


def test_the_page_fader_sends_bpm_and_follows_bpm_from_osc(tmp_path):
    """The control page in a real browser: its tempo fader sends BPM to the plain address, and a
    tempo sent over OSC (in BPM) puts the fader where that tempo is."""
    from test_web_page import CHROMIUM, DRIVER, fader_value, move_fader, open_page
    from test_engine import make_engine
    if not (CHROMIUM and DRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,1400"):
        opts.add_argument(a)
    browser = webdriver.Chrome(service=Service(DRIVER), options=opts)
    eng = make_engine(tmp_path)
    try:
        with eng:
            eng.frame(0.0)
            open_page(browser, eng.web.url())
            move_fader(browser, TEMPO, 0.5)
            assert wait_for(lambda: eng.params.get(SHOW, "tempo") != 120.0, timeout=10)
            assert 140.0 < eng.params.get(SHOW, "tempo") < 180.0, eng.params.get(SHOW, "tempo")  # mid 20..300
            Client(eng.osc.port).send(TEMPO, 90.0)
            assert wait_for(lambda: eng.params.get(SHOW, "tempo") == 90.0)
            assert wait_for(lambda: abs(fader_value(browser, TEMPO) - 0.25) < 1e-3, timeout=10)
            shown = browser.execute_script(
                f"return document.querySelector(\"[data-address='{TEMPO}']\").closest('.param').textContent")
            assert "90 BPM" in shown or "90.0 BPM" in shown, shown
    finally:
        browser.quit()

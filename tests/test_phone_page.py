"""The control page on a phone: chromium emulating a 390x844 touch screen, driven by real touch
events (CDP `Input.dispatchTouchEvent`), against a running show whose parameter store must change.

What a phone needs: nothing wider than the screen, labels in full above full-width faders, every
control at least 48 px and reachable by a finger, scenes as big buttons, plain words in sight and
the protocol words (OSC addresses, loss names, OSCQuery news) only behind "details".
"""

import shutil
import subprocess
import sys
import time

import pytest
from helpers import wait_for
from test_engine import make_engine

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed "
                       "(scripts/setup.sh installs them)"),
]
PHONE = (390, 844)
TOUCH = 48  # px: the smallest target a finger hits reliably (Material, Apple HIG: 44-48)

PHONE_SHOW = """\
name = "phone"
size = [96, 32]
fps = 10
[pieces.eq]
piece = "pieces/eq.toml"
[pieces.eq.directions]
count = 1
[pieces.eq2]
piece = "pieces/eq2.toml"
[layout]
panels = ["eq/g0", "eq/g1", "eq2/g0"]
[[scenes]]
name = "opening"
duration = 5
[[scenes]]
name = "second half"
crossfade = 0.5
layout = {panels = ["eq2/g1"]}
[[scenes]]
name = "close"
"""


@pytest.fixture(scope="module")
def phone():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={PHONE[0]},{PHONE[1]}", "--disable-background-timer-throttling",
              "--disable-renderer-backgrounding"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 3, "mobile": True})
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    yield driver
    driver.quit()


def open_page(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "status").text == "live")


def rect(driver, el) -> dict:
    """`el` scrolled to the middle of the screen; its box in viewport CSS pixels."""
    return driver.execute_script("arguments[0].scrollIntoView({block: 'center'});"
                                 "const r = arguments[0].getBoundingClientRect();"
                                 "return {x: r.x, y: r.y, w: r.width, h: r.height}", el)


def touch(driver, x, y, to_x=None):
    """A finger down at (x, y), optionally sliding sideways to `to_x`, and up: real touch events."""
    cmd = lambda kind, pts: driver.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": kind, "touchPoints": pts})
    cmd("touchStart", [{"x": x, "y": y, "id": 1}])
    if to_x is not None:
        for i in range(1, 6):
            time.sleep(0.03)   # a finger's pace: moves sent back to back are coalesced into one
            cmd("touchMove", [{"x": x + (to_x - x) * i / 5, "y": y, "id": 1}])
    # A finger rests a moment before it lifts: a tap is then a click, and a slide ends where it
    # stopped instead of flinging on (a fling goes on after the lift and eats the next tap).
    time.sleep(0.15)
    cmd("touchEnd", [])


def settled_rect(driver, el, timeout: float = 30.0) -> dict:
    """`el` scrolled to the middle of the screen, once the page has stopped moving (two readings
    agree: a browser beside busy processes may take longer than the usual pause to settle); its box
    then."""
    r = rect(driver, el)
    time.sleep(0.35)
    end = time.monotonic() + timeout
    while True:
        now = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                    "return {x: r.x, y: r.y, w: r.width, h: r.height}", el)
        if now == r or time.monotonic() > end:
            return now
        r = now
        time.sleep(0.15)


def tap(driver, el):
    # A finger lifts, the page settles after scrolling, then it taps: a touch that lands while the
    # page is still moving stops the movement instead of tapping (as on a real phone).
    r = settled_rect(driver, el)
    touch(driver, r["x"] + r["w"] / 2, r["y"] + r["h"] / 2)


def slide(driver, el, fraction):
    """Put a finger on the fader's thumb and slide it to where the thumb shows `fraction`."""
    r = rect(driver, el)
    thumb = driver.execute_script("return parseFloat(getComputedStyle(arguments[0]).getPropertyValue('--thumb'))", el)
    at = lambda f: r["x"] + thumb / 2 + f * (r["w"] - thumb)
    touch(driver, at(float(el.get_attribute("value"))), r["y"] + r["h"] / 2, to_x=at(fraction))


def visible_text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def test_every_control_fits_a_phone_and_works_by_touch(tmp_path, phone):
    from selenium.webdriver.common.by import By
    eng = make_engine(tmp_path, PHONE_SHOW)
    with eng:
        eng.frame(0.0)
        open_page(phone, eng.web.url())
        # Nothing is wider than the screen: no sideways scrolling, no element past either edge.
        assert phone.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
        outside = phone.execute_script(
            "return [...document.body.querySelectorAll('*')].filter(e => { const r = e.getBoundingClientRect();"
            " return r.width && (r.left < -0.5 || r.right > innerWidth + 0.5); }).map(e => e.outerHTML.slice(0, 80))")
        assert outside == []
        # Labels in full (nothing cut), in words, above a fader as wide as its group.
        labels = phone.execute_script(
            "return [...document.querySelectorAll('.param label')].map(l => ({text: l.firstChild.textContent,"
            " cut: l.scrollWidth > l.clientWidth + 1, above: l.getBoundingClientRect().bottom <="
            " document.getElementById(l.htmlFor).getBoundingClientRect().top,"
            " wide: document.getElementById(l.htmlFor).getBoundingClientRect().width / innerWidth}))")
        assert len(labels) == len(eng.params.keys()) - 3   # every parameter but the scene, record and tap (a button)
        for lab in labels:
            assert not lab["cut"] and lab["above"] and "_" not in lab["text"], lab
        assert "impersonate weight" in [lab["text"] for lab in labels]
        faders = phone.find_elements(By.CSS_SELECTOR, "input[type=range]")
        assert all(f.rect["width"] >= 0.75 * PHONE[0] for f in faders)
        # Every control a finger needs is at least 48 px each way.
        targets = phone.find_elements(By.CSS_SELECTOR, "[data-address], #details")
        small = [(t.get_attribute("data-address"), t.size) for t in targets
                 if t.size["height"] < TOUCH or t.size["width"] < TOUCH]
        assert small == []

        # Each fader, moved by a finger, moves its parameter in the show's store.
        for n, el in enumerate(faders):
            piece, name = el.get_attribute("data-address").split("/")[2:4]
            spec = eng.params.spec(piece, name)
            target = 0.8 if eng.params.get_unit(piece, name) < 0.5 else 0.2
            step = 1 / (spec.hi - spec.lo) if spec.kind == "int" else 0.0
            slide(phone, el, target)
            assert wait_for(lambda: abs(eng.params.get_unit(piece, name) - target) <= 0.03 + step, timeout=30), \
                (piece, name, eng.params.get_unit(piece, name), target)
        # Each toggle, tapped, flips.
        toggles = phone.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
        assert len(toggles) == 4   # training and critic training, for each piece
        for el in toggles:
            piece, name = el.get_attribute("data-address").split("/")[2:4]
            before = eng.params.get(piece, name)
            tap(phone, el)
            assert wait_for(lambda: eng.params.get(piece, name) == 1.0 - before, timeout=30), (piece, name)
        # Scenes are one big button each, named as the show names them; a tap plays that scene.
        scenes = phone.find_elements(By.CSS_SELECTOR, "#scenes button")
        assert [b.text for b in scenes] == ["opening", "second half", "close"]
        assert all(b.size["height"] >= 64 and b.size["width"] >= 0.4 * PHONE[0] for b in scenes)
        for i in (2, 1, 0):
            tap(phone, scenes[i])
            assert wait_for(lambda: eng.params.get("show", "scene") == i, timeout=30), i
            assert wait_for(lambda: "current" in scenes[i].get_attribute("class"), timeout=30)
        # Record and still; the piece's action button reaches the show as an event.
        tap(phone, phone.find_element(By.ID, "record"))
        assert wait_for(lambda: eng.params.get("show", "record") == 1.0, timeout=30)
        tap(phone, phone.find_element(By.ID, "record"))
        assert wait_for(lambda: eng.params.get("show", "record") == 0.0, timeout=30)
        eng.params.drain_events()
        tap(phone, phone.find_element(By.ID, "still"))
        refresh = phone.find_element(By.CSS_SELECTOR, "[data-address='/unstable/eq/directions/refresh']")
        assert refresh.text == "refresh directions"
        tap(phone, refresh)
        events = []
        assert wait_for(lambda: events.extend(eng.params.drain_events()) or
                        {"still", "directions/refresh"} <= {e.kind for e in events}, timeout=30), events


def test_a_vertical_swipe_over_a_fader_scrolls_and_leaves_it_alone(tmp_path, phone):
    """Full-width faders cover most of a phone's screen: scrolling past them must not play them."""
    from selenium.webdriver.common.by import By
    eng = make_engine(tmp_path, PHONE_SHOW)
    with eng:
        eng.frame(0.0)
        open_page(phone, eng.web.url())
        el = phone.find_element(By.CSS_SELECTOR, "[data-address='/unstable/eq/hue']")
        r = rect(phone, el)
        before = phone.execute_script("return scrollY")
        x, y = r["x"] + r["w"] * 0.8, r["y"] + r["h"] / 2
        phone.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y, "id": 1}]})
        for i in range(1, 8):
            time.sleep(0.03)
            phone.execute_cdp_cmd("Input.dispatchTouchEvent",
                                  {"type": "touchMove", "touchPoints": [{"x": x, "y": y - 30 * i, "id": 1}]})
        phone.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        assert wait_for(lambda: phone.execute_script("return scrollY") > before + 50, timeout=30)
        time.sleep(0.3)
        assert eng.params.get("eq", "hue") == 0.0


def test_protocol_words_stay_behind_details(tmp_path, phone):
    from selenium.webdriver.common.by import By
    eng = make_engine(tmp_path, PHONE_SHOW)
    hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)]
    try:
        with eng:
            eng.frame(0.0)
            open_page(phone, eng.web.url())
            # A second's telemetry with a system's loss names, and a scene that changes the OSCQuery tree.
            line = {"fps": 10.0, "frame_ms_p99": 12.0, "late_frames": 0, "scene": 0, "recording": False,
                    "steps_per_s": {"eq": 3.5, "eq2": 0.0}, "losses": {"eq": {"class_mmd": 0.25, "global_mmd": 0.5}},
                    "guard": {"eq": {"recoveries": 2, "last": "non-finite loss"}}}
            # Sent until it shows: the page may not have asked for telemetry yet when the first one goes
            # out. (Not just "learning": the "learning rate" fader says that before any telemetry.)
            assert wait_for(lambda: eng.web_link.telemetry(line) or "3.5 steps a second" in visible_text(phone),
                            timeout=30)
            eng.params.set("show", "scene", 1)
            t = [0.1]

            def changed():
                eng.frame(t[0])
                t[0] += 0.1
                return "address space changed" in phone.find_element(By.ID, "changes").get_attribute("textContent")

            assert wait_for(changed, timeout=30)
            text = visible_text(phone)
            for word in ("/unstable", "class_mmd", "address space", "OSCQuery", "_", "log)", "p99"):
                assert word not in text, word
            assert "eq: learning, 3.5 steps a second · 2 bad steps undone" in text
            assert "eq2: not learning" in text and "10 frames a second" in text
            # The details button shows them to the technician.
            tap(phone, phone.find_element(By.ID, "details"))
            assert wait_for(lambda: "class_mmd" in visible_text(phone), timeout=30)
            text = visible_text(phone)
            assert "/unstable/eq/hue" in text and "address space changed at" in text and "(log)" in text
            tap(phone, phone.find_element(By.ID, "details"))
            assert wait_for(lambda: "class_mmd" not in visible_text(phone), timeout=30)
    finally:
        for h in hogs:
            h.kill()
            h.wait()

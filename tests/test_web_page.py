"""The control page in a real browser: Debian's chromium, headless, driven by Selenium through
Debian's chromium-driver (scripts/setup.sh installs both; nothing is downloaded).

A fader moved on the page changes the parameter, the next frame and the automation record; an OSC
change over UDP and a move in another browser tab move the page's fader; a browser on another
machine without the token gets nothing. "Another machine" is a network namespace this test makes
(a veth pair, 10.231.<n>.1 here and .2 there): the show listens on 0.0.0.0 and chromium runs inside
the namespace, so it reaches the show from a non-loopback address, as a phone on the gallery's
network would.
"""

import json
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from helpers import Client, wait_for
from test_engine import CELLS, make_engine
from test_show import SHOW

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed "
                       "(scripts/setup.sh installs them)"),
]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=900,1400", "--disable-background-timer-throttling",
              "--disable-renderer-backgrounding"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def open_page(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "status").text == "live")


def fader_value(driver, address) -> float:
    return float(driver.execute_script("return document.querySelector(`[data-address='${arguments[0]}']`).value",
                                       address))


def move_fader(driver, address, fraction):
    """Click the fader at `fraction` of its width, as a finger would."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    el = driver.find_element(By.CSS_SELECTOR, f"[data-address='{address}']")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    w = el.size["width"]
    ActionChains(driver).move_to_element_with_offset(el, int((fraction - 0.5) * w), 0).click().perform()


def test_a_fader_on_the_page_changes_the_parameter_the_next_frame_and_the_automation(tmp_path, browser):
    automation = tmp_path / "performance.automation.jsonl"
    eng = make_engine(tmp_path, automation=automation)
    with eng:
        eng.params.update({"eq": {"walk_speed": 0.0}, "eq2": {"walk_speed": 0.0}})
        eng.frame(0.0)
        first = eng.read().copy()
        open_page(browser, eng.web.url())
        # One group per piece, a toggle for on/off parameters, units beside the values.
        assert browser.find_element("id", "group-eq") and browser.find_element("id", "group-eq2")
        assert browser.execute_script("return document.querySelector(\"[data-address='/unstable/eq/training']\").type") \
            == "checkbox"
        assert "deg" in browser.execute_script(
            "return document.querySelector(\"[data-address='/unstable/eq/hue']\").closest('.param').textContent")

        move_fader(browser, "/unstable/eq/hue", 0.75)
        assert wait_for(lambda: eng.params.get("eq", "hue") != 0.0, timeout=30)
        hue = eng.params.get("eq", "hue")
        assert 45.0 < hue < 135.0, hue   # about three quarters of -180..180
        eng.frame(0.1)                   # the very next frame shows it
        nxt = eng.read().copy()
        assert not np.array_equal(nxt[:, CELLS["eq/g0"]], first[:, CELLS["eq/g0"]])
        assert np.array_equal(nxt[:, CELLS["eq2/g0"]], first[:, CELLS["eq2/g0"]])
        eng.frame(0.2)
    # The browser's move is in the automation record, like an OSC controller's.
    lines = [json.loads(line) for line in automation.read_text().splitlines()]
    sets = [line["set"]["eq"]["hue"] for line in lines if "set" in line and "hue" in line["set"].get("eq", {})]
    assert sets and sets[-1] == pytest.approx(hue)


def test_osc_and_another_browser_move_the_fader_on_the_page(tmp_path, browser):
    eng = make_engine(tmp_path)
    with eng:
        eng.frame(0.0)
        open_page(browser, eng.web.url())
        first_tab = browser.current_window_handle
        # A change over OSC (UDP) moves the fader.
        Client(eng.osc.port).send("/unstable/eq/fade", 0.25)
        assert wait_for(lambda: fader_value(browser, "/unstable/eq/fade") == 0.25, timeout=10)
        # A scene change over OSC marks its button.
        Client(eng.osc.port).send("/unstable/scene", 1)
        assert wait_for(lambda: browser.execute_script(
            "return document.querySelector('#scenes button.current')?.dataset.scene") == "1", timeout=10)
        # A fader moved in another browser tab moves this one.
        browser.switch_to.new_window("tab")
        open_page(browser, eng.web.url())
        move_fader(browser, "/unstable/eq/saturation", 0.25)
        assert wait_for(lambda: eng.params.get("eq", "saturation") != 1.0, timeout=30)
        u = eng.params.get_unit("eq", "saturation")
        browser.close()
        browser.switch_to.window(first_tab)
        assert wait_for(lambda: abs(fader_value(browser, "/unstable/eq/saturation") - u) < 1e-3, timeout=10)
        # The preview shows frames while the page watches (the browser decodes each one in its
        # own time: frames go on until one has been shown, 10 s at most).
        t = [1.0]

        def preview_shown():
            eng.frame(t[0])
            t[0] += 0.3
            time.sleep(0.3)
            return browser.execute_script("return document.getElementById('preview').naturalWidth") > 0

        assert wait_for(preview_shown, timeout=10)
        assert eng.preview.reads >= 1


# -- from another machine --------------------------------------------------------------------------

def chromium_in(ns, url) -> str:
    """The DOM chromium renders for `url` inside namespace `ns` (after its scripts ran)."""
    out = subprocess.run(["ip", "netns", "exec", ns, CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                          "--disable-dev-shm-usage", "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=90)
    return out.stdout


def fetch_in(ns, url) -> str:
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=10); print(r.status)\n"
            "except urllib.error.HTTPError as e: print(e.code)\n")
    import sys
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, url], capture_output=True,
                          text=True, timeout=60).stdout.strip()


def test_a_browser_on_another_machine_needs_the_token(tmp_path, other_machine):
    ns, here, there = other_machine
    text = SHOW.replace("[layout]", '[web]\nhost = "0.0.0.0"\nadvertise = false\n[layout]')
    eng = make_engine(tmp_path, text)
    with eng:
        eng.frame(0.0)
        base = f"http://{here}:{eng.web.port}"
        assert any(u.startswith(base) and "token=" in u for u in eng.web_link.urls())
        # Without the token: the page, the tree, a value and the websocket are all refused.
        dom = chromium_in(ns, f"{base}/control")
        assert "this show needs its token" in dom and "group-eq" not in dom
        assert fetch_in(ns, f"{base}/unstable/eq/hue?VALUE") == "403"
        assert fetch_in(ns, f"{base}/control/show.json") == "403"
        assert fetch_in(ns, f"{base}/control?token=wrong-token-123") == "403"
        assert eng.web.stats["refused"] >= 4
        # With the token in the URL `unstable live` printed, the page loads and builds its controls
        # (its later requests carry the token as a cookie).
        dom = chromium_in(ns, eng.web.url(here))
        assert 'id="group-eq"' in dom and 'data-address="/unstable/eq/hue"' in dom
        # From this machine (loopback) no token is needed.
        assert urllib.request.urlopen(f"http://127.0.0.1:{eng.web.port}/unstable/eq/hue?VALUE").status == 200
        assert eng.params.get("eq", "hue") == 0.0

"""Presets on the control page (Debian's chromium, headless, through Selenium) and in the OSCQuery
tree: a preset saved from the page is written into the run folder, listed on the page and as the
VALS of /unstable/preset/recall, and recalled from the page."""

import json
import time
import urllib.request

import pytest
from helpers import wait_for
from test_web_page import CHROMIUM, DRIVER, browser, open_page  # noqa: F401 (the fixture)
from test_engine import make_engine

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed "
                       "(scripts/setup.sh installs them)"),
]


def frames_until(eng, cond, start: int, timeout: float = 30.0) -> int:
    """Draw frames (events are acted on between them) until `cond()`, for up to `timeout` seconds
    (a browser beside busy processes takes what it takes); returns the next number."""
    n, end = start, time.monotonic() + timeout
    while time.monotonic() < end:
        eng.frame(number=n)
        n += 1
        if cond():
            return n
    raise AssertionError("the condition never held")


def test_save_list_and_recall_a_preset_from_the_page(tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    eng = make_engine(tmp_path)
    with eng:
        base = f"http://127.0.0.1:{eng.web.port}"
        eng.params.update({"eq": {"saturation": 1.75}})
        n = frames_until(eng, lambda: True, 0)
        open_page(browser, f"{base}/control")
        browser.find_element(By.ID, "preset-name").send_keys("from page")
        browser.find_element(By.ID, "preset-save").click()
        folder = tmp_path / "run" / "presets"
        n = frames_until(eng, lambda: (folder / "from page.json").exists(), n)
        assert json.loads((folder / "from page.json").read_text())["values"]["eq"]["saturation"] == 1.75
        # Listed in the tree (the recall method's VALS) and on the page.
        node = json.load(urllib.request.urlopen(f"{base}/unstable/preset/recall"))
        assert node["RANGE"][0]["VALS"] == ["from page"] and node["TYPE"] == "s"
        assert json.load(urllib.request.urlopen(f"{base}/unstable/preset/morph"))["TYPE"] == "sf"
        assert wait_for(lambda: "from page" in browser.find_element(By.ID, "preset-list").text, 10)
        eng.params.update({"eq": {"saturation": 0.25}})
        browser.find_element(By.CSS_SELECTOR, "#preset-list li button").click()
        frames_until(eng, lambda: eng.params.get("eq", "saturation") == 1.75, n)

"""The contact sheet: starring in a real browser (Debian's chromium, headless, through Selenium)
changes the next generation's parents; the server keeps the control page's access rules."""

from __future__ import annotations

import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import tiny_eq_piece, wait_for
from unstable.explore.explorer import Explorer, new_settings
from unstable.explore.records import read_lineage, read_marks
from unstable.explore.sheet import ContactSheet

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def start(tmp_path: Path, population=2):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_eq_piece("steps = 1", name="tiny-sheet"))
    settings = new_settings(path, population=population, steps=2, segments=2, seed=5, threads=1)
    ex = Explorer(tmp_path / "out", settings, workers=0, auto=False, echo=lambda s: None)
    ex.start()
    sheet = ContactSheet(ex, port=0).start()
    errors = []

    def run():
        try:
            ex.run(2)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return ex, sheet, t, errors


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def click(driver, css) -> bool:
    """Click `css`; False when the page redrew it under the click (polled state changed): try again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    try:
        driver.find_element(By.CSS_SELECTOR, css).click()
        return True
    except StaleElementReferenceException:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed "
                    "(scripts/setup.sh installs them)")
def test_starring_in_the_browser_changes_the_parents(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    ex, sheet, t, errors = start(tmp_path)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,1200"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        assert wait_for(lambda: ex.waiting == 0, 120), errors
        driver.get(sheet.url())
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: not d.find_element(By.ID, "breed").get_attribute("disabled"))
        ids = "return [...document.querySelectorAll('#gen-0 .card')].map(c => c.dataset.id)"
        wait.until(lambda d: d.execute_script(ids) == ["v0-00", "v0-01"])
        # Without a choice both would be parents (population 2 keeps max(2, 2 // 3) = 2 by novelty).
        star = "#gen-0 .card[data-id='v0-01'] button.star"
        wait.until(lambda d: click(d, star))
        wait.until(lambda d: d.execute_script(f"return document.querySelector(\"{star}\").getAttribute('aria-pressed')")
                   == "true")
        assert read_marks(tmp_path / "out") == {"v0-01": "star"}
        wait.until(lambda d: click(d, "#breed"))
        assert wait_for(lambda: any(r.generation == 1 for r in read_lineage(tmp_path / "out")), 30)
        gen1 = [r for r in read_lineage(tmp_path / "out") if r.generation == 1]
        assert {p for r in gen1 for p in r.parents} == {"v0-01"}
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gen-1 .card"))
    finally:
        driver.quit()
        ex.stop()
        t.join(120)
        sheet.stop()
    assert not errors


def test_the_sheet_keeps_the_access_rules(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_eq_piece("steps = 1", name="tiny-sheet"))
    settings = new_settings(path, population=2, steps=2, segments=2, seed=5, threads=1)
    ex = Explorer(tmp_path / "out", settings, workers=0, auto=False, echo=lambda s: None)
    ex.start()
    from unstable.explore.breeding import breed_generation
    breed_generation(tmp_path / "out", settings, 0, ["base"])
    with ContactSheet(ex, port=0).start() as sheet:
        base = f"http://127.0.0.1:{sheet.port}/explore"
        assert get(base)[0] == 200
        status, body = get(f"{base}/state.json")
        assert status == 200 and b'"v0-01"' in body
        # A change without the page's header (a cross-site <img> or link) is refused, nothing written.
        assert get(f"{base}/mark?id=v0-01&mark=star")[0] == 403
        assert read_marks(tmp_path / "out") == {}
        h = {"X-Unstable-Explore": "1"}
        assert get(f"{base}/mark?id=v0-01&mark=star", h)[0] == 200
        assert read_marks(tmp_path / "out") == {"v0-01": "star"}
        assert get(f"{base}/mark?id=../../etc&mark=star", h)[0] == 404
        assert get(f"{base}/mark?id=v0-01&mark=love", h)[0] == 400
        assert get(f"{base}/v/v0-01/piece.toml")[0] == 404  # only grids and loops are served
        assert get(f"{base}/breed", h)[0] == 409  # nothing waits for the artist yet
        # DNS rebinding: a request that calls the server by another name is refused.
        assert get(f"{base}/state.json", {"Host": "attacker.example"})[0] == 403

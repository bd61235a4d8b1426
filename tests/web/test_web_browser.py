"""A real browser (headless Chromium, driven by Selenium) against a real uvicorn server.

Skips when Selenium, Debian's `chromium` or `chromium-driver` is missing (CI installs them).
With PIXSEARCH_UPDATE_SCREENSHOTS=1 the screenshots are also copied to docs/; the README's two come from
test_web_demo_screens.py (the demo's trained models; these tests run tiny random ones).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import live_server

from pixsearch.settings import Settings
from pixsearch.web import WebOptions

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]


def _find(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


API_KEY = "browser-test-key"


@pytest.fixture
def server_url(fresh_library: Path, caption_spec: str, vqa_spec: str, tiny_ofa_spec: str) -> Iterator[str]:
    options = WebOptions(
        captioner=caption_spec,
        answerer=vqa_spec,
        entailer=tiny_ofa_spec,
        api_key=API_KEY,
        cutoff_z=None,
        duplicate_threshold=None,
        keyword_weight=0.0,
    )
    with live_server(Settings(library=fresh_library), options) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    binary = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no chromium browser or chromedriver found (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="pixsearch-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _save(driver, name: str, tmp_path: Path) -> Path:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000, "the screenshot looks empty"
    if os.environ.get("PIXSEARCH_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS / name)
    return shot


def test_search_then_ask_a_question(browser, server_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(server_url + "/")
    box = wait.until(ready.element_to_be_clickable((By.ID, "q")))
    box.send_keys("a red circle on a white background")
    driver.find_element(By.ID, "search-button").click()

    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#results li.result img")))
    thumbnails = driver.find_elements(By.CSS_SELECTOR, "#results li.result img")
    assert len(thumbnails) == 24
    # every thumbnail really loaded (decoded by the browser), not a broken-image icon
    wait.until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    assert "q=a+red+circle" in driver.current_url and driver.find_element(By.ID, "next")
    _save(driver, "tiny-search-page.png", tmp_path)

    first = driver.find_element(By.CSS_SELECTOR, "#results li.result a.thumb")
    name = first.get_attribute("title")
    first.click()
    wait.until(ready.presence_of_element_located((By.ID, "photo")))
    assert driver.find_element(By.TAG_NAME, "h1").text == name
    caption = driver.find_element(By.ID, "caption")
    wait.until(lambda d: caption.get_attribute("data-missing") == "false")  # generated on first view
    assert caption.text.strip() and "No caption" not in caption.text

    driver.find_element(By.ID, "question").send_keys("what color is the circle?")
    driver.find_element(By.ID, "ask-button").click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#answers li.answer")))
    answers = driver.find_elements(By.CSS_SELECTOR, "#answers li.answer")
    assert answers and answers[0].find_element(By.CLASS_NAME, "text").text.strip()
    assert answers[0].find_element(By.CLASS_NAME, "prob").text.endswith("%")
    wait.until(lambda d: d.execute_script("return document.getElementById('preview').naturalWidth > 0"))
    _save(driver, "tiny-result-page.png", tmp_path)


def test_check_a_statement_and_edit_tags(browser, server_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(server_url + "/images/2")
    wait.until(ready.presence_of_element_located((By.ID, "photo")))

    # the statement box: three relations with probabilities, the most likely one marked
    driver.find_element(By.ID, "statement").send_keys("there is a red circle")
    wait.until(ready.element_to_be_clickable((By.ID, "entail-button"))).click()
    # the one model worker may first be captioning this photo (generated on view): allow for a slow machine,
    # and fail with the page's own error if the request failed instead
    WebDriverWait(driver, 180).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#verdict li.relation")
            or d.find_element(By.ID, "entail-error").get_attribute("hidden") is None
        )
    )
    error = driver.find_element(By.ID, "entail-error")
    assert error.get_attribute("hidden") is not None, f"the statement check failed: {error.text}"
    rows = driver.find_elements(By.CSS_SELECTOR, "#verdict li.relation")
    assert [row.get_attribute("data-relation") for row in rows] == ["entailment", "neutral", "contradiction"]
    assert all(row.find_element(By.CLASS_NAME, "prob").text.endswith("%") for row in rows)
    assert len(driver.find_elements(By.CSS_SELECTOR, "#verdict li.best")) == 1

    # tags: add one with the API key, then remove it again
    driver.find_element(By.ID, "api-key").send_keys(API_KEY)
    driver.find_element(By.ID, "new-tag").send_keys("Sunny Day")
    driver.find_element(By.ID, "add-tag").click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, '#tags li.confirmed[data-name="Sunny Day"]')))
    _save(driver, "result-page-tags.png", tmp_path)
    driver.find_element(By.CSS_SELECTOR, '#tags li[data-name="Sunny Day"] button[title="remove"]').click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, '#tags li[data-name="Sunny Day"]'))
    assert driver.find_element(By.ID, "tag-error").get_attribute("hidden") is not None


def test_results_show_at_once_then_reorder_in_place_when_the_rerank_arrives(
    browser, fresh_library: Path, tiny_blip_dirs, tmp_path: Path
) -> None:
    """Two states: first-stage results with "Reranking…" while the reranker works (held here by a gate,
    not a sleep), then the same cells reordered as the reranker answered."""
    import functools
    import threading

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from pixsearch.models import Role, create
    from pixsearch.photos import load_photo
    from pixsearch.rerank import Fusion, RerankOptions, RerankService
    from pixsearch.storage import Library

    spec = f"blip-itm:{tiny_blip_dirs['itm']}"
    library = Library.open(fresh_library)
    options = RerankOptions(k=8, fusion=Fusion.ITM)
    service = RerankService(
        create(spec, Role.RERANKER), spec, fresh_library, options, functools.partial(load_photo, library)
    )
    gate, answered = threading.Event(), []

    def held_rerank(query, hits):
        assert gate.wait(120), "the test never let the rerank finish"
        reranked = service.rerank_images(query, hits)
        answered.append([hit.image_id for hit in reranked])
        return reranked

    web = WebOptions(cutoff_z=None, duplicate_threshold=None, keyword_weight=0.0)
    driver, wait = browser, WebDriverWait(browser, 60)
    with live_server(Settings(library=fresh_library), web, rerank_hook=held_rerank) as port:
        try:
            driver.get(f"http://127.0.0.1:{port}/?q=a+red+circle&k=12&rerank=true")
            wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#results li.result img")))
            status = driver.find_element(By.ID, "rerank-status")
            grid = driver.find_element(By.ID, "results")
            first_stage = [int(cell.get_attribute("data-id")) for cell in grid.find_elements(By.CSS_SELECTOR, "li")]
            assert len(first_stage) == 12 and status.is_displayed() and "Reranking" in status.text
            assert grid.get_attribute("data-reranked") is None and not answered
            _save(driver, "tiny-search-reranking.png", tmp_path)
            gate.set()
            wait.until(lambda d: grid.get_attribute("data-reranked") == "true" or "Not reranked" in status.text)
        finally:
            gate.set()
        assert status.text == "Reranked", status.text
        reordered = [int(cell.get_attribute("data-id")) for cell in grid.find_elements(By.CSS_SELECTOR, "li")]
        assert reordered == answered[0] and reordered != first_stage
        assert driver.find_element(By.ID, "summary").text.endswith(", reranked")
        _save(driver, "tiny-search-reranked.png", tmp_path)
    library.close()

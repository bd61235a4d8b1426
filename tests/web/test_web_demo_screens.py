"""The offline demo in a real browser: its packaged models answer a words query, caption a photo and
answer a question about it. With PIXSEARCH_UPDATE_SCREENSHOTS=1 the README's screenshots are taken here,
so they show the demo's trained models, not tiny random ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from live import live_server
from test_web_browser import _save, browser  # noqa: F401 - the browser fixture

from pixsearch.settings import Settings
from pixsearch.train.demo import DemoOptions, demo_server, prepare_demo

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(library=tmp_path_factory.mktemp("unused"))
    demo = prepare_demo(DemoOptions(root=tmp_path_factory.mktemp("demo")), settings, lambda *_: None)
    settings, options, rerank_hook = demo_server(demo, settings)
    with live_server(settings, options, rerank_hook=rerank_hook) as port:
        yield f"http://127.0.0.1:{port}"


def test_the_demo_finds_captions_and_answers(browser, demo_url: str, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 120)
    driver.get(demo_url + "/?q=a+red+circle")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#results li.result img")))
    wait.until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results li.result a.thumb img')].slice(0, 6)"
            ".every(i => i.complete && i.naturalWidth > 0)"  # the first row; the rest load lazily, on scrolling
        )
    )
    _save(driver, "search-page.png", tmp_path)

    driver.find_element(By.CSS_SELECTOR, "#results li.result a.thumb").click()
    wait.until(ready.presence_of_element_located((By.ID, "photo")))
    caption = driver.find_element(By.ID, "caption")
    wait.until(lambda d: caption.get_attribute("data-missing") == "false")
    words = caption.text.split()
    assert len(words) >= 3 and len(set(words)) > len(words) // 2, f"a trained captioner, not noise: {caption.text!r}"
    driver.find_element(By.ID, "question").send_keys("what shape is it?")
    driver.find_element(By.ID, "ask-button").click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#answers li.answer")))
    answer = driver.find_element(By.CSS_SELECTOR, "#answers li.answer .text").text.strip()
    assert answer and answer != "what"
    wait.until(lambda d: d.execute_script("return document.getElementById('preview').naturalWidth > 0"))
    _save(driver, "result-page.png", tmp_path)

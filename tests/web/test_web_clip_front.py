"""clip-retrieval's own front end (its real build, from the clip-retrieval package on PyPI) in headless
Chromium against a live pixsearch server on another origin: it searches, pages past its first 40 results
while scrolling (/metadata), and its "similar image" button searches by one of pixsearch's photo URLs.

CI installs the package with `pip install --no-deps clip-retrieval` (its build is MIT-licensed static
files; its Python dependencies are not needed). Skips without it, or without Chromium.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from urllib.parse import urlencode

import pytest
from images import write_folder
from live import live_server
from sqlalchemy import select
from test_web_browser import browser  # noqa: F401 - the browser fixture

from pixsearch.cli import build_parser
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.settings import Settings
from pixsearch.storage import Library
from pixsearch.storage.annotations import PERSON, set_caption
from pixsearch.storage.schema import ImageRow
from pixsearch.web import WebOptions

PHOTOS = 64  # the front end shows 40, then asks /metadata for more while the page scrolls
FRONT = "const root = document.querySelector('clip-front')?.shadowRoot;"
FIGURES = "return [...document.querySelector('clip-front').shadowRoot.querySelectorAll('figure')]"


def front_build() -> Path:
    try:
        index = Path(distribution("clip-retrieval").locate_file("front/build/index.html"))
    except PackageNotFoundError:
        index = None
    if index is None or not index.is_file():
        pytest.skip("clip-retrieval's front end is not installed (pip install --no-deps clip-retrieval)")
    return index.parent


@contextlib.contextmanager
def static_files(folder: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving `folder`, as `clip-retrieval front` would."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def captions(tmp_path_factory: pytest.TempPathFactory, clip_spec: str) -> tuple[Path, dict[int, str]]:
    """A library of PHOTOS drawn photos; every other one has a person's caption (the rest have none)."""
    root = tmp_path_factory.mktemp("clip-front")
    write_folder(root / "photos", PHOTOS)
    library = Library.open(root / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0, batch_size=16)).run([root / "photos"])
    written = {}
    with library.session() as session:
        for image_id in session.execute(select(ImageRow.id).order_by(ImageRow.id)).scalars():
            if image_id % 2 == 0:
                written[image_id] = f"photo number {image_id}"
                set_caption(session, image_id, PERSON, written[image_id])
    library.close()
    return root / "library", written


@pytest.fixture(scope="module")
def front_url(captions: tuple[Path, dict[int, str]]) -> Iterator[str]:
    build = front_build()
    with static_files(build) as front:
        options = WebOptions(cors_origins=(front,), cutoff_z=None, duplicate_threshold=None, keyword_weight=0.0)
        with live_server(Settings(library=captions[0]), options) as port:
            query = urlencode({"back": f"http://127.0.0.1:{port}", "index": "pixsearch"})
            yield f"{front}/?{query}"


def _figures(driver) -> list[dict]:
    """Each rendered figure: its picture's src, whether it loaded, its caption."""
    return driver.execute_script(
        FIGURES + ".map(f => { const i = f.querySelector('img.pic'), c = f.querySelector('figcaption');"
        " return {src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0,"
        " caption: c ? c.textContent.trim() : null}; })"
    )


def until(driver, wait, condition, what: str) -> None:
    """wait.until, failing with what the front end shows and says (its state, its console)."""
    from selenium.common.exceptions import TimeoutException

    try:
        wait.until(condition)
    except TimeoutException:
        state = driver.execute_script(
            "const c = document.querySelector('clip-front');"
            "return {text: c.text, images: c.images && c.images.length, lastMetadataId: c.lastMetadataId}"
        )
        raise AssertionError(
            f"no {what}: {len(_figures(driver))} figures, {state}, console {driver.get_log('browser')[-5:]}"
        ) from None


def test_clip_retrieval_front_end_searches_pages_and_finds_similar(browser, front_url, captions) -> None:  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver, written = browser, captions[1]
    wait = WebDriverWait(driver, 60)
    driver.get(front_url)
    wait.until(lambda d: d.execute_script(FRONT + "return !!root && root.querySelectorAll('option').length > 0"))
    # the tiny random model makes every photo look alike: a person unticks "Hide (near) duplicate images"
    # to see them all, then searches
    driver.execute_script(
        FRONT + "[...root.querySelectorAll('label')].find(l => l.textContent.includes('Hide (near) duplicate'))"
        ".querySelector('input').click()"
    )
    front = driver.find_element(By.CSS_SELECTOR, "clip-front").shadow_root
    front.find_element(By.ID, "searchBar").send_keys("shapes")
    front.find_element(By.ID, "textSearch").click()
    until(driver, wait, lambda d: len(_figures(d)) >= 40 and all(f["loaded"] for f in _figures(d)[:40]), "a first page")
    # scrolling down makes the front end ask /metadata for the hits past its first 40
    until(
        driver,
        wait,
        lambda d: d.execute_script("window.scrollTo(0, document.body.scrollHeight)") or len(_figures(d)) == PHOTOS,
        "every hit shown after scrolling",
    )
    wait.until(lambda d: all(f["loaded"] for f in _figures(d)))
    shown = _figures(driver)
    assert len({f["src"] for f in shown}) == PHOTOS
    for figure in shown:
        image_id = int(figure["src"].split("/api/images/")[1].split("/")[0])
        assert figure["caption"] == written.get(image_id, ""), figure  # a photo without a caption shows too

    # "similar image" on the 7th result: it sends that photo's URL here, answered from its stored vector
    driver.execute_script("window.scrollTo(0, 0)")
    figure = driver.execute_script(FIGURES + "[6]")
    chosen = shown[6]["src"]
    button = driver.execute_script("return arguments[0].querySelector('img.subImageSearch')", figure)
    ActionChains(driver).move_to_element(figure).pause(0.2).click(button).perform()
    until(driver, wait, lambda d: len(_figures(d)) >= 40 and _figures(d)[0]["src"] == chosen, "the chosen photo first")
    wait.until(lambda d: all(f["loaded"] for f in _figures(d)[:40]))
    assert "imageUrl=" in driver.current_url


def test_serve_help_names_the_cors_setting(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    assert "--cors-origins" in text and "PIXSEARCH_CORS_ORIGINS" in text
    assert build_parser().parse_args(["serve", "--cors-origins", "http://a:1,http://b:2"]).cors_origins

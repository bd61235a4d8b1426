"""The relevance cut-off judges each photo against the query itself, so a thing in most of the library
keeps all its photos and a thing in none of it is "no good match". Checked on the synthetic world,
whose truth is known, with a tiny CLIP trained on it here (tests/search/world_model.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from world_model import BACKGROUND, WorldModel, colours_of, scenes, write_scenes

from pixsearch.errors import ConfigError
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.search.engine import SearchOptions, hybrid_search
from pixsearch.search.relevance import Background, calibrate, fit_z_min, z_scores
from pixsearch.storage import Library
from pixsearch.synth import render
from pixsearch.synth.world import COLOURS

log = logging.getLogger(__name__)
QUERY = "red"


# -- the pieces, on constructed vectors -------------------------------------------------------------
def test_z_is_the_querys_distance_above_the_photos_own_background() -> None:
    photos = np.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    background = np.asarray([[0.5, 0.5, 0.7], [0.1, 0.3, 0.9], [0.3, 0.1, 0.9]], dtype=np.float32)
    query = np.asarray([0.9, 0.1, 0.4], dtype=np.float32)
    against = photos @ background.T
    expected = (photos @ query - against.mean(axis=1)) / against.std(axis=1)
    np.testing.assert_allclose(z_scores(query, photos, background), expected, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"\(2, 3\)"):
        z_scores(query[:2], photos, background)


def test_prompts_that_name_the_query_are_no_background_for_it() -> None:
    background = Background(("a photo", "a photo of a dog", "a red ball", "red", "the sea"))
    assert background.unrelated_to("a dog on a beach").tolist() == [True, False, True, True, True]
    assert background.unrelated_to("Red").tolist() == [True, True, False, False, True]
    with pytest.raises(ConfigError, match="at least 3"):
        Background(("a photo", "an image"))


def test_a_calibration_ships_with_a_model_folder(tmp_path: Path) -> None:
    assert Background.of_model(f"clip:{tmp_path}") is None and Background.of_model("clip:openai/clip") is None
    Background(("red", "green", "blue"), -0.25).write(tmp_path)
    assert Background.of_model(f"clip:{tmp_path}") == Background(("red", "green", "blue"), -0.25)
    (tmp_path / "relevance.json").write_text('{"background": ["red"]}')
    with pytest.raises(ConfigError, match="relevance.json"):
        Background.of_model(f"clip:{tmp_path}")


def test_fitted_z_min_separates_the_known_sides() -> None:
    assert fit_z_min([0.1, 0.5, 1.2, 2.0], [False, False, True, True]) == pytest.approx(0.85)
    with pytest.raises(ConfigError, match="do not"):
        fit_z_min([1.0, 2.0], [True, True])


# -- on the synthetic world -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def z_min(world_model: WorldModel) -> float:
    """Calibrated on the model, with photos of its world whose truth is known (not the libraries below)."""
    encoder = create(world_model.spec)
    calibration = scenes(seed=3, count=300)
    photos = encoder.encode_images([render(scene, 32) for _, scene in calibration])
    shows = np.asarray([[colour in colours_of(scene) for colour in COLOURS] for _, scene in calibration])
    fitted = calibrate(encoder.encode_texts, photos, COLOURS, shows, BACKGROUND).z_min
    log.info("z_min fitted on 300 calibration photos x %d colours: %.3f", len(COLOURS), fitted)
    Background(BACKGROUND, fitted).write(Path(world_model.spec.split(":", 1)[1]))  # ships with the model
    return fitted


@pytest.fixture(scope="module")
def libraries(world_model: WorldModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Library, set[str]]]:
    """'most': 60 photos with something red and 40 without; 'none': 100 photos with nothing red.
    Each with the names of its red photos."""
    root = tmp_path_factory.mktemp("relevance")
    pool = scenes(seed=7, count=400)
    red = [s for s in pool if QUERY in colours_of(s[1])]
    other = [s for s in pool if QUERY not in colours_of(s[1])]
    made = {}
    for name, chosen in (("most", red[:60] + other[:40]), ("none", other[40:140])):
        write_scenes(root / name / "photos", chosen)
        library = Library.open(root / name / "library")
        Indexer(library, create(world_model.spec), IndexOptions(workers=0)).run([root / name / "photos"])
        made[name] = (library, {n for n, scene in chosen if QUERY in colours_of(scene)})
    return made


def _search(library: Library, z_min: float):
    """With the default options: the model's own relevance.json gives the background and z_min."""
    result = hybrid_search(SearchService(library), QUERY, k=100, options=SearchOptions(duplicate_threshold=None))
    assert result.cutoff == pytest.approx(z_min)
    return result


def test_a_thing_in_most_of_the_library_keeps_every_photo_of_it(libraries, z_min: float) -> None:
    library, truth = libraries["most"]
    kept = {Path(hit.path).name for hit in _search(library, z_min).hits}
    recall, precision = len(kept & truth) / len(truth), len(kept & truth) / max(len(kept), 1)
    log.info("'%s' in 60 of 100 photos: kept %d, recall %.3f, precision %.3f", QUERY, len(kept), recall, precision)
    assert recall == 1.0 and precision >= 0.95


def test_a_thing_in_none_of_the_library_is_no_good_match(libraries, z_min: float) -> None:
    library, truth = libraries["none"]
    result = _search(library, z_min)
    log.info("'%s' in 0 of 100 photos: kept %d", QUERY, len(result.hits))
    assert not truth and result.hits == [] and result.no_good_match
    assert "relevance cut-off" in result.explain()

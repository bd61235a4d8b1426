"""The vocabulary, prompt ensembling and the calibrated zero-shot threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pixsearch.errors import ConfigError
from pixsearch.models import create
from pixsearch.tagging.vocabulary import Entry, Vocabulary
from pixsearch.tagging.zero_shot import (
    Calibration,
    Prompts,
    ZeroShotOptions,
    ZeroShotTagger,
    ensemble_text_vectors,
    threshold,
)


# -- vocabulary -----------------------------------------------------------------------------------
def test_builtin_vocabulary_is_large_and_clean() -> None:
    vocabulary = Vocabulary.builtin()
    names = vocabulary.names
    assert 2000 <= len(names) <= 5000 and len(set(names)) == len(names)
    assert {"dog", "beach", "wedding", "sunset", "skiing", "black and white", "snow"} <= set(names)
    assert all(name == " ".join(name.lower().split()) for name in names)
    assert {e.kind for e in vocabulary.entries} == {"thing", "mass", "scene", "activity", "event", "style", "condition"}


def test_prompts_and_statements_read_naturally() -> None:
    vocabulary = Vocabulary.builtin()
    assert "a photo of an owl." in vocabulary.get("owl").prompts()
    assert "a photo of snow." in vocabulary.get("snow").prompts()
    assert "a photo taken at night." in vocabulary.get("night").prompts()
    assert "a photo of people skiing." in vocabulary.get("skiing").prompts()
    assert vocabulary.statement("Dog") == "there is a dog in the photo"
    assert vocabulary.statement("not in the list") == "there is a not in the list in the photo"
    assert Entry("mouse", "thing", "a mouse (animal)").prompts()[0] == "a photo of a mouse (animal)."


def test_user_files_extend_replace_and_remove(tmp_path: Path) -> None:
    extra = tmp_path / "mine.txt"
    extra.write_text("# mine\ngrandma's garden\n-dog\n[event]\nkitesurf cup\n[scene]\nbeach = a quiet beach\n")
    vocabulary = Vocabulary.load([extra])
    assert vocabulary.get("grandma's garden").kind == "thing" and vocabulary.get("dog") is None
    assert vocabulary.get("kitesurf cup").kind == "event"
    assert vocabulary.get("beach").phrase == "a quiet beach"
    only = Vocabulary.load([extra], builtin=False)
    assert set(only.names) == {"grandma's garden", "kitesurf cup", "beach"}
    assert (
        only.fingerprint() != vocabulary.fingerprint()
        and only.fingerprint() == Vocabulary.load([extra], False).fingerprint()
    )


@pytest.mark.parametrize(
    "text, words", [("[colours]\nred\n", "unknown section"), ("tag =\n", "empty phrase"), ("x" * 201 + "\n", "longer")]
)
def test_bad_vocabulary_lines_are_named(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("ok\n" + text)
    with pytest.raises(ConfigError, match=f"bad.txt, line 2: .*{words}"):
        Vocabulary.load([path])
    with pytest.raises(ConfigError, match="cannot be read"):
        Vocabulary.load([tmp_path / "missing.txt"])


# -- calibration on constructed vectors -------------------------------------------------------------
def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def world() -> dict[str, np.ndarray]:
    """A 48-d space: every photo shares a common direction (which the tag 'photo' points along), 30%
    show a cat, 10% a dog; tag vectors point at their concept plus a little of the common direction;
    40 more tags point at directions of their own (as the rest of a real vocabulary would)."""
    rng = np.random.default_rng(0)
    dim, n = 48, 400
    axes = np.eye(dim)
    common, cat, dog = axes[:3]
    is_cat = rng.random(n) < 0.3
    is_dog = ~is_cat & (rng.random(n) < 0.15)
    photos = 0.9 * common + 0.6 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    photos += 0.45 * is_cat[:, None] * cat + 0.45 * is_dog[:, None] * dog
    tags = _unit(np.stack([common] + [0.3 * common + axes[i] for i in range(1, 44)]))
    return {"photos": _unit(photos), "tags": tags, "is_cat": is_cat, "is_dog": is_dog}


NAMES = ["photo", "cat", "dog"] + [f"thing {i}" for i in range(41)]


BACKGROUND = ("a photo", "a thing", "a scene", "a place", "a view")  # the first generic, then concepts


def _background(world: dict[str, np.ndarray]) -> np.ndarray:
    """Prompts along the common direction and along directions of their own (no tag's, no photo's)."""
    axes = np.eye(world["tags"].shape[1])
    return _unit(np.stack([axes[0]] + [0.3 * axes[0] + axes[i] for i in range(44, 48)]))


def _tagger(world: dict[str, np.ndarray], **options: float) -> ZeroShotTagger:
    tagger = ZeroShotTagger(encoder=None, vocabulary=Vocabulary(tuple(Entry(n) for n in NAMES)),
                            options=ZeroShotOptions(generic=BACKGROUND[:1], background=BACKGROUND[1:], **options))  # type: ignore[arg-type]  # fmt: skip
    tagger._tags = world["tags"]  # as if encoded
    tagger._prompts = Prompts.for_tags(_background(world), BACKGROUND, NAMES, generic=1)
    return tagger


def test_a_hub_tag_close_to_every_photo_is_not_given(world) -> None:
    raw = world["photos"] @ world["tags"].T
    assert (raw.argmax(axis=1) == 0).mean() > 0.9  # by raw similarity, 'photo' wins nearly everywhere
    tags = _tagger(world).tag_vectors(world["photos"])
    assert sum("photo" in dict(t) for t in tags) <= 2


def test_tags_that_fit_are_given_and_only_those(world) -> None:
    tags = [dict(t) for t in _tagger(world).tag_vectors(world["photos"])]
    cat = np.array(["cat" in t for t in tags])
    dog = np.array(["dog" in t for t in tags])
    # 30% of the library shows a cat, and the robust background still finds nearly all of them
    assert cat[world["is_cat"]].mean() > 0.9 and cat[~world["is_cat"]].mean() < 0.02
    assert dog[world["is_dog"]].mean() > 0.9 and dog[~world["is_dog"]].mean() < 0.02
    plain = ~world["is_cat"] & ~world["is_dog"]
    assert np.mean([not t for t, p in zip(tags, plain, strict=True) if p]) > 0.9  # plain photos: no tags
    assert all(0.5 <= score < 1 for t in tags for score in t.values())


def test_z_scores_are_standard_on_photos_without_the_tag(world) -> None:
    calibration = Calibration.fit(world["photos"], world["tags"], ZeroShotOptions())
    z = calibration.z_scores(world["photos"], world["tags"])
    for column, shows in ((1, world["is_cat"]), (2, world["is_dog"])):
        null = z[~shows, column]
        assert abs(np.median(null)) < 0.25 and 0.75 < 1.4826 * np.median(np.abs(null - np.median(null))) < 1.25
        assert np.median(z[shows, column]) > 4


def test_stricter_thresholds_and_caps_give_fewer_tags(world) -> None:
    def count(**options: float) -> int:
        return sum(len(t) for t in _tagger(world, **options).tag_vectors(world["photos"]))

    assert count(z_min=2.0) >= count(z_min=3.5) >= count(z_min=6.0)
    assert all(len(t) <= 1 for t in _tagger(world, z_min=0.1, max_tags=1).tag_vectors(world["photos"]))


def test_calibration_needs_photos() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        Calibration.fit(np.zeros((1, 4), np.float32), np.eye(4, dtype=np.float32), ZeroShotOptions())
    with pytest.raises(ConfigError, match="z_min"):
        ZeroShotOptions(z_min=0).check()


def test_the_threshold_grows_with_the_vocabulary() -> None:
    assert threshold(ZeroShotOptions(), 2822) == pytest.approx(4.13, abs=0.02)
    assert threshold(ZeroShotOptions(), 50) == pytest.approx(3.09, abs=0.02)
    assert threshold(ZeroShotOptions(z_min=2.0), 2822) == 2.0


# -- with a real (tiny) dual encoder ------------------------------------------------------------------
def test_prompt_ensembles_with_a_tiny_clip(clip_spec: str, vocabulary_file: Path, tmp_path: Path) -> None:
    from images import draw

    vocabulary = Vocabulary.load([vocabulary_file], builtin=False)
    encoder = create(clip_spec)
    vectors = ensemble_text_vectors(encoder, vocabulary)
    assert vectors.shape == (len(vocabulary), encoder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    single = encoder.encode_texts(vocabulary.get("circle").prompts())
    expected = single.mean(axis=0) / np.linalg.norm(single.mean(axis=0))
    assert np.allclose(vectors[vocabulary.names.index("circle")], expected, atol=1e-5)

    cache = tmp_path / "cache" / "tags.npy"
    tagger = ZeroShotTagger(encoder, vocabulary, ZeroShotOptions(z_min=0.5, max_tags=3), cache)
    tags = tagger.tag([draw(seed) for seed in range(12)])
    assert len(tags) == 12 and all(len(t) <= 3 and {n for n, _ in t} <= set(vocabulary.names) for t in tags)
    assert cache.exists() and np.array_equal(np.load(cache), tagger.tag_matrix)

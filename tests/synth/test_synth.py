from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pixsearch.evaluation.readers import read_pairs, read_questions
from pixsearch.synth import (
    SynthOptions,
    captions,
    hard_negatives,
    make_scene,
    questions,
    render,
    swapped,
    write_dataset,
)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_data_set_other_seed_other(tmp_path: Path) -> None:
    options = SynthOptions(seed=3, train=12, val=2, test=4, image_size=32)
    write_dataset(tmp_path / "a", options)
    write_dataset(tmp_path / "b", options)
    write_dataset(tmp_path / "c", SynthOptions(seed=4, train=12, val=2, test=4, image_size=32))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_a_scene_does_not_depend_on_how_many_are_made() -> None:
    assert make_scene(1, 57) == make_scene(1, 57)
    assert render(make_scene(1, 57), 32).tobytes() == render(make_scene(1, 57), 32).tobytes()
    assert make_scene(1, 57) != make_scene(1, 58)


def test_captions_state_the_scene_and_negatives_are_false() -> None:
    for index in range(50):
        scene = make_scene(0, index)
        a, b = scene.first, scene.second
        first, second = captions(scene)
        assert first == f"a {a.size} {a.colour} {a.shape} {scene.relation} a {b.size} {b.colour} {b.shape}"
        # the stated relation holds in the geometry
        dx, dy = b.x - a.x, b.y - a.y
        holds = {"left of": dx > 0, "right of": dx < 0, "above": dy > 0, "below": dy < 0}
        assert holds[scene.relation]
        assert abs(dy if scene.relation in ("left of", "right of") else dx) <= 0.15 + 1e-9
        for kind, negative in hard_negatives(scene):
            assert negative not in (first, second), kind
            twin = swapped(scene, kind)
            assert twin is not None and captions(twin)[0] == negative
        answers = dict(questions(scene))
        assert answers[f"what shape is the {a.colour} one?"] == a.shape


def test_written_files_read_back(tmp_path: Path) -> None:
    report = write_dataset(tmp_path, SynthOptions(seed=0, train=10, val=0, test=5, image_size=32, twin_fraction=1.0))
    assert report.images == 30 and report.twins == 15
    for name in ("captions.jsonl", "captions.csv", "karpathy.json"):
        pairs = read_pairs(tmp_path / name)
        assert not pairs.bad and len(pairs.pairs) == report.captions
        assert len(pairs.only("test").images()) == 10
    assert len(read_questions(tmp_path / "questions.jsonl").questions) == report.questions
    contrast = [json.loads(line) for line in (tmp_path / "contrast.jsonl").read_text().splitlines()]
    assert len(contrast) == 2 * report.twins
    for row in contrast:
        assert (tmp_path / row["image"]).exists() and (tmp_path / row["distractor"]).exists()
        assert row["image"] != row["distractor"]

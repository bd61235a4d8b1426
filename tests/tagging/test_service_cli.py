"""Tagging runs and tag edits through `pixsearch tag` and the service: person's tags win, removed tags
stay removed, --verify drops contradicted model tags only, XMP sidecars, index-time tagging."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from images import write_folder

from pixsearch import commands
from pixsearch.cli import build_parser, main
from pixsearch.errors import ConfigError
from pixsearch.models import create
from pixsearch.storage import Library
from pixsearch.storage.annotations import set_tag_state, suggest_tags, tags_of
from pixsearch.tagging import cli as tag_cli
from pixsearch.tagging.service import TaggingService, TagOptions, tag_after_index
from pixsearch.tagging.xmp import read_sidecar
from pixsearch.tagging.zero_shot import ZeroShotOptions

FIXTURES = Path(
    os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[2].parent / "shared" / "fixtures")
)
# the plumbing, not the threshold: a random tiny model's tags are noise the prompt rule would drop
SMALL = ["--vocabulary", "", "--no-builtin-vocabulary", "--z-min", "0.1", "--max-tags", "3", "--prompt-z", "-100",
         "--max-share", "1"]  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clip_spec: str, vocabulary_file: Path) -> Path:
    monkeypatch.setenv("PIXSEARCH_LIBRARY", str(tmp_path / "library"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PIXSEARCH_ENTAILER", raising=False)
    # main() finds `run_<command>` in pixsearch.commands; the tag command brings its own handler
    monkeypatch.setattr(commands, "run_tag", tag_cli.run, raising=False)
    SMALL[1] = str(vocabulary_file)
    write_folder(tmp_path / "photos", 6)
    assert main(["index", str(tmp_path / "photos"), "--model", clip_spec, "--workers", "0"]) == 0
    return tmp_path


def _tags(env: Path, image: str, capsys) -> dict[str, tuple[str, str]]:
    capsys.readouterr()
    assert main(["tag", "--list", "--image", image, "--json"]) == 0
    return {t["name"]: (t["state"], t["source"]) for t in json.loads(capsys.readouterr().out)["tags"]}


def test_tag_edits_round_trip_and_models_never_override_a_person(env: Path, capsys) -> None:
    photo = str(env / "photos" / "img_0001.png")
    assert main(["tag", "--add", "  Beach ", "--image", photo]) == 0
    assert "Beach confirmed" in capsys.readouterr().out  # as typed, less the extra spaces
    assert main(["tag", *SMALL]) == 0  # zero-shot with a small vocabulary that also has "beach"
    assert "photos given tags" in capsys.readouterr().out
    tags = _tags(env, "2", capsys)
    assert tags["Beach"] == ("confirmed", "person") and "beach" not in tags  # one tag, matched case-insensitively
    model_tags = [n for n, (state, source) in tags.items() if state == "suggested"]
    assert model_tags and all(tags[n][1].startswith("zero-shot:clip:") for n in model_tags)

    removed, kept = model_tags[0], model_tags[1:]
    assert main(["tag", "--remove", removed, "--image", "2"]) == 0
    for name in kept:
        assert main(["tag", "--confirm", name, "--image", "2"]) == 0
    assert main(["tag", *SMALL, "--z-min", "0.0001", "--max-tags", "20"]) == 0  # a model run that tags everything
    tags = _tags(env, "2", capsys)
    assert removed not in tags  # a person's removal keeps it out
    assert all(tags[name] == ("confirmed", tags[name][1]) for name in [*kept, "Beach"])

    capsys.readouterr()
    assert main(["tag", "--list", "--json"]) == 0
    counts = {c["tag"]: c for c in json.loads(capsys.readouterr().out)}
    assert counts["Beach"]["confirmed"] == 1


def test_edit_errors_are_one_line(env: Path, capsys) -> None:
    assert main(["tag", "--add", "dog"]) == 2
    assert "--image" in capsys.readouterr().err
    assert main(["tag", "--add", "dog", "--image", "999"]) == 2
    assert "no image" in capsys.readouterr().err
    assert main(["tag", "--add", "   ", "--image", "1"]) == 2
    assert main(["tag", "--verify"]) == 2
    assert "--entailer" in capsys.readouterr().err


class Contradicts:
    """An Entailer that contradicts every statement containing `word`, and records what it was asked."""

    def __init__(self, word: str) -> None:
        self.word, self.asked = word, []

    def load(self) -> None: ...

    def close(self) -> None: ...

    def judge(self, image, statement: str) -> dict[str, float]:
        self.asked.append(statement)
        no = 0.9 if self.word in statement else 0.05
        return {"entailment": 1 - no - 0.05, "neutral": 0.05, "contradiction": no}


def test_verify_drops_contradicted_model_tags_but_never_a_persons(library_copy) -> None:
    library, _photos = library_copy()
    with library.session() as session:
        suggest_tags(session, 1, [("circle", 0.9), ("square", 0.8)], "zero-shot:x")
        suggest_tags(session, 1, [("dog", 0.7)], "imagenet:y")
        set_tag_state(session, 2, "circle", "confirmed")
    entailer = Contradicts("circle")
    options = TagOptions(zero_shot=False, verify=True, entailer="fake:unused")
    report = TaggingService(library, options, entailer=entailer).run()
    with library.session() as session:
        assert {t.name: t.source for t in tags_of(session, 1)} == {"square": "zero-shot:x", "dog": "imagenet:y"}
        assert [(t.name, t.state) for t in tags_of(session, 2)] == [("circle", "confirmed")]
    assert report.checked == 3 and [tag for _path, tag in report.dropped] == ["circle"]
    assert sorted(entailer.asked) == sorted(
        ["there is a circle in the photo", "there is a square in the photo", "there is a dog in the photo"]
    )


def test_verify_with_a_real_ofa_checkpoint(env: Path, capsys, tiny_ofa_spec: str) -> None:
    fixture = FIXTURES / "ofa" / "visual-entailment"
    spec = f"ofa-ve:{fixture}" if fixture.is_dir() else tiny_ofa_spec  # ModelScope's own checkpoint when present
    assert main(["tag", "--add", "my own tag", "--image", "3"]) == 0
    assert main(["tag", *SMALL, "--max-tags", "1"]) == 0
    before = _tags(env, "3", capsys)
    assert main(["tag", "--verify", "--entailer", spec]) == 0
    out = capsys.readouterr().out
    after = _tags(env, "3", capsys)
    assert after["my own tag"] == ("confirmed", "person")
    entailer = create(spec)
    from pixsearch.imageio import load_image
    from pixsearch.tagging.vocabulary import Vocabulary

    image = load_image(env / "photos" / "img_0002.png")
    vocabulary = Vocabulary.load([Path(SMALL[1])])
    for name, (state, _source) in before.items():
        if state == "suggested":
            contradicted = entailer.judge(image, vocabulary.statement(name))["contradiction"] >= 0.5
            assert (name not in after) == contradicted, name
    assert "model tags checked" in out


def test_xmp_written_with_tags_and_imported_back(env: Path, capsys) -> None:
    photos = env / "photos"
    photo = str(photos / "img_0001.png")
    assert main(["tag", "--add", "grandma", "--image", photo]) == 0
    sidecar = photos / "img_0001.png.xmp"
    sidecar.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmp:Rating="5"><dc:subject><rdf:Bag><rdf:li>Summer 2019</rdf:li></rdf:Bag></dc:subject></rdf:Description>'
        "</rdf:RDF></x:xmpmeta>"
    )
    assert main(["tag", "--import-xmp", "--write-xmp", "--confirmed-only"]) == 0
    assert "keywords imported" in capsys.readouterr().out
    assert _tags(env, photo, capsys)["Summer 2019"] == ("confirmed", "xmp")
    keywords = read_sidecar(sidecar)
    assert keywords.subjects == ["Summer 2019", "grandma"] and 'xmp:Rating="5"' in sidecar.read_text()
    assert not (photos / "img_0002.png.xmp").exists() or read_sidecar(photos / "img_0002.png.xmp").subjects == []
    assert main(["tag", "--import-xmp"]) == 0  # what pixsearch wrote is not imported again as new
    assert _tags(env, photo, capsys)["grandma"] == ("confirmed", "person")


def test_index_time_tagging_handles_only_new_photos(library_copy, clip_spec: str, vocabulary_file: Path) -> None:
    from pixsearch.indexer import Indexer, IndexOptions

    library, photos = library_copy()
    encoder = create(clip_spec)
    options = TagOptions(only_new=True, vocabulary_files=(vocabulary_file,), builtin_vocabulary=False,
                         zero_shot_options=ZeroShotOptions(z_min=0.1, max_tags=2, prompt_z=-100.0, max_share=1.0))  # fmt: skip
    first = tag_after_index(library, encoder, options=options)
    assert sum(first.tagged.values()) == 16
    assert tag_after_index(library, encoder, options=options).tagged == {}  # nothing new
    write_folder(photos, 2, start=100)
    Indexer(library, encoder, IndexOptions(workers=0)).run([photos])
    assert sum(tag_after_index(library, encoder, options=options).tagged.values()) == 2
    assert build_parser().parse_args(["index", "x", "--tag"]).tag is True


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="entailer"):
        TagOptions(verify=True).check()
    with pytest.raises(ConfigError, match="contradiction"):
        TagOptions(contradiction=0).check()
    assert isinstance(Library, type)

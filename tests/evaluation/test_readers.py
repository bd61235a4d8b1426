from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pixsearch.evaluation.readers import BadRowPolicy, DataSetError, enforce, read_pairs, read_questions


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(path)
    return path


def test_karpathy_json(tmp_path: Path) -> None:
    _image(tmp_path / "val2014" / "a.jpg")
    _image(tmp_path / "b.jpg")
    data = {
        "images": [
            {
                "filepath": "val2014",
                "filename": "a.jpg",
                "split": "test",
                "sentences": [{"raw": "A cat."}, {"raw": "x"}],
            },
            {"filename": "b.jpg", "split": "train", "sentences": [{"raw": "A dog."}]},
            {"filename": "c.jpg", "split": "test", "sentences": []},
            {"sentences": [{"raw": "no file name"}]},
        ]
    }
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    result = read_pairs(path)
    assert [(p.image.name, p.caption, p.split) for p in result.pairs] == [
        ("a.jpg", "A cat.", "test"),
        ("a.jpg", "x", "test"),
        ("b.jpg", "A dog.", "train"),
    ]
    assert [str(row) for row in result.bad] == [
        f"{path}, entry 3: c.jpg: no 'sentences'",
        f"{path}, entry 4: no 'filename'",
    ]
    assert len(result.only("test").pairs) == 2


def test_csv_with_malformed_rows_and_missing_images(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "a.png")
    path = tmp_path / "caps.csv"
    path.write_text(
        "image,caption,split\nimg/a.png,a red square,test\nimg/a.png\n\nimg/missing.png,gone,test\n,no image,test\n"
    )
    result = read_pairs(path)
    assert [(p.image.name, p.caption) for p in result.pairs] == [("a.png", "a red square")]
    reasons = [str(row) for row in result.bad]
    assert reasons[0] == f"{path}, line 3: 1 fields where the header has 3"
    assert f"{path}, line 6: no image column" in reasons[1]
    assert reasons[2].startswith(f"{path}, line 5: {tmp_path / 'img' / 'missing.png'}: image file missing")


def test_jsonl_with_bad_json_and_unreadable_image(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    path = tmp_path / "caps.jsonl"
    lines = [
        json.dumps({"image": "a.png", "caption": "ok"}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"image": "broken.png", "caption": "bad file"}),
        json.dumps({"image": "a.png"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    result = read_pairs(path)
    assert [p.caption for p in result.pairs] == ["ok"]
    lines_named = sorted(row.line for row in result.bad)
    assert lines_named == [2, 3, 4, 5]
    assert any("not a readable image" in row.reason for row in result.bad)
    with pytest.raises(DataSetError) as error:
        enforce(result.bad, BadRowPolicy.STOP, str(path))
    assert f"{path}, line 2: not valid JSON" in str(error.value)
    enforce(result.bad, BadRowPolicy.SKIP, str(path))  # skipping never raises


def test_questions(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    path = tmp_path / "q.jsonl"
    rows = [
        {"image": "a.png", "question": "what colour?", "answer": "red"},
        {"image": "a.png", "question": "how many?", "answers": [{"answer": "2"}, {"answer": "two"}]},
        {"image": "a.png", "question": "no answer"},
        {"image": "gone.png", "question": "q", "answer": "a"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = read_questions(path)
    assert [q.answers for q in result.questions] == [("red",) * 10, ("2", "two")]
    assert sorted((row.line, row.reason.split(":")[-1].strip()) for row in result.bad) == [
        (3, "needs 'answer' (a string) or 'answers' (a list of strings)"),
        (4, "image file missing"),
    ]

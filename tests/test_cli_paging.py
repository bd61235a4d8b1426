"""`pixsearch search -k K --offset N` pages through the ranking, with or without a reranker."""

from __future__ import annotations

import json
from pathlib import Path

from images import write_folder

from pixsearch.cli import main


def test_offset_continues_the_ranking(tmp_path: Path, clip_spec: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PIXSEARCH_LIBRARY", str(tmp_path / "library"))
    write_folder(tmp_path / "photos", 12)
    assert main(["index", str(tmp_path / "photos"), "--model", clip_spec, "--workers", "0"]) == 0
    capsys.readouterr()

    def paths(*args: str) -> list[str]:
        assert main(["search", "shapes", "--json", "--no-cutoff", "--no-group", *args]) == 0
        return [hit["path"] for hit in json.loads(capsys.readouterr().out)]

    full = paths("-k", "10")
    assert paths("-k", "5", "--offset", "5") == full[5:10]
    assert paths("-k", "5", "--offset", "10") == paths("-k", "12")[10:12]


def test_offset_with_a_photo_query(tmp_path: Path, clip_spec: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PIXSEARCH_LIBRARY", str(tmp_path / "library"))
    photos = write_folder(tmp_path / "photos", 8)
    assert main(["index", str(tmp_path / "photos"), "--model", clip_spec, "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["search", "--image", str(photos[0]), "-k", "6", "--json"]) == 0
    full = [hit["path"] for hit in json.loads(capsys.readouterr().out)]
    assert main(["search", "--image", str(photos[0]), "-k", "3", "--offset", "3", "--json"]) == 0
    assert [hit["path"] for hit in json.loads(capsys.readouterr().out)] == full[3:6]

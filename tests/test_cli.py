from __future__ import annotations

import json
from pathlib import Path

import pytest
from images import write_folder

from pixsearch.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIXSEARCH_LIBRARY", str(tmp_path / "library"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_index_search_status(env: Path, clip_spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_folder(env / "photos", 6)
    (env / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    assert main(["index", str(env / "photos"), "--model", clip_spec, "--workers", "0"]) == 0
    out = capsys.readouterr()
    assert "6 embedded" in out.out and "skipped" in out.out and "broken.jpg" in out.out

    assert main(["search", "a red circle", "-k", "3", "--json", "--no-cutoff", "--no-group"]) == 0
    hits = _json(capsys)
    assert len(hits) == 3 and all(h["path"] in {str(p) for p in paths} for h in hits)

    assert main(["search", "--image", str(paths[2]), "-k", "1", "--json"]) == 0
    assert _json(capsys)[0]["path"] == str(paths[2])

    (env / "captions.txt").write_text("a red circle\na blue square\n")
    assert main(["index-texts", str(env / "captions.txt")]) == 0
    capsys.readouterr()
    assert main(["search", "--image", str(paths[0]), "--in", "texts", "--json"]) == 0
    assert {h["text"] for h in _json(capsys)} == {"a red circle", "a blue square"}

    assert main(["status", "--json"]) == 0
    status = _json(capsys)
    assert status["images"] == 6 and status["image_vectors"] == 6 and status["texts"] == 2
    assert status["model"] == clip_spec and status["index_type"].startswith("flat")
    assert [Path(s["path"]).name for s in status["skipped"]] == ["broken.jpg"]


def test_errors_become_exit_codes_with_one_line(env: Path, clip_spec: str, capsys, tiny_siglip_dir) -> None:
    assert main(["index", str(env / "nowhere"), "--model", clip_spec]) == 2
    assert "not a folder" in capsys.readouterr().err
    write_folder(env / "photos", 2)
    assert main(["index", str(env / "photos"), "--model", f"clip:{env / 'no-model'}", "--workers", "0"]) == 3
    assert "clip:" in capsys.readouterr().err
    assert main(["index", str(env / "photos"), "--model", clip_spec, "--workers", "0"]) == 0
    assert main(["index", str(env / "photos"), "--model", f"siglip:{tiny_siglip_dir}", "--workers", "0"]) == 4
    assert "--reindex" in capsys.readouterr().err
    assert main(["search", "--image", str(env / "missing.jpg")]) == 2
    err = capsys.readouterr().err
    assert "missing.jpg" in err and "Traceback" not in err
    assert main(["search", "dog", "-k", "0"]) == 2
    assert main(["search"]) == 2


def test_environment_settings_are_checked(env: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PIXSEARCH_BATCH_SIZE", "many")
    assert main(["status"]) == 2
    assert "PIXSEARCH_BATCH_SIZE" in capsys.readouterr().err


def test_hybrid_syntax_and_duplicates(env: Path, clip_spec: str, capsys) -> None:
    import shutil

    paths = write_folder(env / "photos" / "trips", 4)
    shutil.copy(paths[1], env / "photos" / "again.png")
    assert main(["index", str(env / "photos"), "--model", clip_spec, "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["search", "folder:trips", "--json", "--no-group"]) == 0
    assert sorted(Path(h["path"]).name for h in _json(capsys)) == sorted(p.name for p in paths)
    assert main(["search", '"again"', "--json", "--no-cutoff"]) == 0
    assert [Path(h["path"]).name for h in _json(capsys)] == ["again.png"]
    assert main(["duplicates", "--threshold", "0.9999", "--json"]) == 0
    assert [sorted(Path(h["path"]).name for h in g) for g in _json(capsys)] == [["again.png", "img_0001.png"]]
    assert main(["search", "after:someday"]) == 2
    assert "YYYY" in capsys.readouterr().err

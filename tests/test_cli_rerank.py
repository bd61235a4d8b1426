"""`pixsearch search --rerank ... --sim-weight W`: the itm+sim fusion weight is the user's to set."""

from __future__ import annotations

import json
from pathlib import Path

from images import write_folder

from pixsearch.cli import main


def test_sim_weight_zero_ranks_by_the_reranker_alone(tmp_path: Path, clip_spec, tiny_blip_dirs, monkeypatch, capsys):
    monkeypatch.setenv("PIXSEARCH_LIBRARY", str(tmp_path / "library"))
    write_folder(tmp_path / "photos", 10)
    assert main(["index", str(tmp_path / "photos"), "--model", clip_spec, "--workers", "0"]) == 0
    capsys.readouterr()
    rerank = ["--rerank", f"blip-itm:{tiny_blip_dirs['itm']}", "--rerank-k", "10", "-k", "10", "--json"]
    common = ["search", "a red circle", "--no-cutoff", "--no-group", *rerank]

    def ranking(*args: str) -> list[tuple[str, float]]:
        assert main([*common, *args]) == 0
        return [(hit["path"], round(hit["rerank_score"], 5)) for hit in json.loads(capsys.readouterr().out)]

    itm_only = ranking("--fusion", "itm")
    assert ranking("--sim-weight", "0") == itm_only
    heavy = ranking("--sim-weight", "1000")  # the similarity decides: the first-stage order comes back
    assert main(["search", "a red circle", "--no-cutoff", "--no-group", "-k", "10", "--json"]) == 0
    assert [path for path, _ in heavy] == [hit["path"] for hit in json.loads(capsys.readouterr().out)]


def test_a_bad_sim_weight_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PIXSEARCH_LIBRARY", str(tmp_path / "library"))
    assert main(["search", "x", "--sim-weight", "heavy"]) == 2
    assert "similarity weight must be a number >= 0" in capsys.readouterr().err


def test_index_fills_the_rerank_cache_up_to_its_bound(tmp_path: Path, clip_spec, tiny_blip_dirs, monkeypatch, capsys):
    monkeypatch.setenv("PIXSEARCH_LIBRARY", str(tmp_path / "library"))
    write_folder(tmp_path / "photos", 6)
    spec = f"blip-itm:{tiny_blip_dirs['itm']}"
    index = ["index", str(tmp_path / "photos"), "--model", clip_spec, "--workers", "0", "--rerank-cache", spec]
    assert main([*index, "--rerank-cache-max", "5k"]) == 0  # a tiny BLIP feature is ~2 kB on disk
    out = capsys.readouterr().out
    assert "reached its bound (5k)" in out
    files = list((tmp_path / "library" / "rerank-cache").rglob("*.pt"))
    assert 0 < len(files) < 6 and sum(f.stat().st_size for f in files) <= 5000
    assert main(["rerank-cache", "--rerank", spec]) == 0  # no bound: the rest
    assert "0 images computed" not in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["rerank_cache_images"] == 6 and status["rerank_cache_models"] == [spec]
    assert status["rerank_cache_bytes"] > 5000
    assert main(["status"]) == 0 and f"(6 images: {spec})" in capsys.readouterr().out


def test_a_bad_cache_bound_and_a_missing_reranker_are_named(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PIXSEARCH_LIBRARY", str(tmp_path / "library"))
    monkeypatch.delenv("PIXSEARCH_RERANKER", raising=False)
    assert main(["rerank-cache", "--rerank", "blip-itm:/x", "--rerank-cache-max", "lots"]) == 2
    assert "size 'lots' is not a number of bytes" in capsys.readouterr().err
    assert main(["index", str(tmp_path), "--rerank-cache"]) == 2
    assert "--rerank-cache needs a reranker" in capsys.readouterr().err

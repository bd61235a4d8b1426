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

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    assert status["waiting_shards"] == 0
    (Path(status["root"]) / "shards").mkdir()
    (Path(status["root"]) / "shards" / "job-000000.npz").write_bytes(b"x" * 1000)  # left by a killed --ray run
    assert main(["status"]) == 0
    assert "shards    1 from an `index --ray` run not merged yet" in capsys.readouterr().out


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


# -- messages that say what happened ------------------------------------------------------------
@pytest.fixture
def indexed(env: Path, clip_spec: str, capsys: pytest.CaptureFixture[str]) -> Path:
    write_folder(env / "photos", 4)
    assert main(["index", str(env / "photos"), "--model", clip_spec, "--workers", "0"]) == 0
    capsys.readouterr()
    return env


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_each_empty_answer_says_why(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "search", "orientation:portrait")  # the photos are 64 x 48
    assert code == 0 and out == "" and "cut-off" not in err and "no photo matches the filters" in err
    code, out, err = _run(capsys, "search", '"no such words here"')
    assert code == 0 and "cut-off" not in err and 'no photo contains the phrase "no such words here"' in err
    code, out, err = _run(capsys, "search", "shapes", "--no-cutoff", "--offset", "30")
    assert code == 0 and "cut-off" not in err and "--offset 30 is past the end" in err and "4 results" in err
    code, out, err = _run(capsys, "search", "shapes", "-k", "0")
    assert code == 2 and "k must be between 1 and 1000, got 0" in err


def test_filter_only_results_show_no_score(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "search", "orientation:landscape")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4 and all(line.startswith("filter match  ") for line in lines)
    assert "0.000" not in out
    code, out, _ = _run(capsys, "search", "orientation:landscape", "--json")
    assert {hit["score"] for hit in json.loads(out)} == {None} and {h["match"] for h in json.loads(out)} == {"filter"}


def test_word_results_show_the_score_that_orders_them(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "search", "shapes", "--no-cutoff", "--no-group")
    shown = [float(line.split()[0]) for line in out.splitlines()]
    assert code == 0 and len(shown) == 4 and shown == sorted(shown, reverse=True)
    assert all("similarity" in line for line in out.splitlines())


# -- start-up and pipes -----------------------------------------------------------------------------
def _python(code: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, **kwargs)


def test_building_the_parser_and_help_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import pixsearch.cli as cli\n"
        "cli.build_parser()\n"
        "for argv in (['--help'], ['search', '--help'], ['index', '--help'], ['duplicates', '--help'],"
        " ['tag', '--help'], ['serve', '--help']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('LOADED', sorted(m for m in ('torch', 'transformers') if m in sys.modules), file=sys.stderr)\n"
    )
    done = _python(code)
    assert "LOADED []" in done.stderr, done.stderr[-2000:]
    assert "synth" in done.stdout and "train" in done.stdout and "query language" in done.stdout


def test_training_commands_are_listed_with_their_own_help() -> None:
    from pixsearch.cli import TRAINING_COMMANDS, build_parser

    full = build_parser("train")  # the training package's own parsers
    commands = next(a for a in full._actions if a.dest == "command")
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    assert {name: helps[name] for name in TRAINING_COMMANDS} == TRAINING_COMMANDS


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    reader, writer = os.pipe()
    os.close(reader)  # like `| head` that has already gone
    code = (
        "import sys\n"
        "from pixsearch.cli import main\n"
        f"sys.exit(main(['status', '--library', {str(tmp_path / 'library')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(writer)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 1


# -- progress bars ----------------------------------------------------------------------------------
def test_progress_bars_close_when_their_phase_ends(capsys: pytest.CaptureFixture[str]) -> None:
    from pixsearch.commands import _Bars
    from pixsearch.indexer import Progress

    bars = _Bars()
    bars(Progress("scan", 7, 0))
    bars(Progress("scan", 7, 7))
    err = capsys.readouterr().err
    assert "7/7" in err.replace("\r", "\n").splitlines()[-1] and "scan" not in bars.bars  # drawn complete, closed
    bars(Progress("hash", 3, 7))
    bars(Progress("embed", 2, 7))
    assert "hash" not in bars.bars  # a new phase closes the one before
    bars.close()
    final = capsys.readouterr().err
    assert final.count("scan") == 0 and final.count("embed") >= 1


def test_python_dash_m_runs_the_cli() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pixsearch", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "usage: pixsearch" in run.stdout and "search" in run.stdout

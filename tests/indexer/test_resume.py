"""A real `pixsearch index` process is killed with SIGKILL mid-run; the rerun completes the job."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import assert_consistent
from images import write_folder

from pixsearch.storage import Library


def _env(library: Path) -> dict[str, str]:
    return {**os.environ, "PIXSEARCH_LIBRARY": str(library), "HF_HUB_OFFLINE": "1"}


def _vectors(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as connection:
            return connection.execute("select count(*) from embeddings").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_kill_mid_run_then_resume(tmp_path: Path, clip_spec: str) -> None:
    folder = tmp_path / "photos"
    total = 600  # enough batches of 2 that the kill always lands mid-run, even on a fast machine
    write_folder(folder, total)
    library = tmp_path / "library"
    command = [sys.executable, "-m", "pixsearch.cli", "index", str(folder), "--model", clip_spec, "--batch-size", "2"]
    process = subprocess.Popen(command, env=_env(library), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _vectors(library / "pixsearch.db") < 12:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "indexing never got going"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done_before = _vectors(library / "pixsearch.db")
    assert 12 <= done_before < total, "the run must be killed mid-way for this test to mean anything"

    rerun = subprocess.run(command, env=_env(library), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    embedded = int(re.search(r"(\d+) embedded", rerun.stdout).group(1))
    assert embedded == total - done_before, rerun.stdout  # nothing committed was embedded twice
    opened = Library.open(library)
    assert_consistent(opened)
    assert _vectors(library / "pixsearch.db") == total

"""Decode workers are tied to the `pixsearch index` process that started them.

A real `pixsearch index` runs in its own session; the tests watch its process tree through /proc.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from images import write_folder
from processes import alive, descendants, index_env, pixsearch_command, poll, read_to_eof

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")


def workers_of(pid: int, count: int) -> dict[int, int] | None:
    """The process tree below `pid` once the forkserver has forked `count` workers, else None."""
    tree = descendants(pid)
    parents = set(tree.values()) - {pid}
    if any(sum(1 for p in tree.values() if p == parent) >= count for parent in parents):
        return tree
    return None


def test_workers_forkserver_and_tracker_die_with_a_killed_indexer(tmp_path: Path, clip_spec: str) -> None:
    folder = tmp_path / "photos"
    write_folder(folder, 400)
    command = pixsearch_command() + ["index", str(folder), "--model", clip_spec, "--workers", "2", "--batch-size", "2"]
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(
            command, env=index_env(tmp_path / "library"), stdout=subprocess.PIPE, stderr=stderr, start_new_session=True
        )
    family: dict[int, int] = {}
    try:
        family = poll(lambda: process.poll() is None and workers_of(process.pid, 2), 120, "two decode workers")
        assert process.poll() is None, "the run ended before it could be killed"
        assert len(family) >= 4, family  # forkserver, resource tracker, two workers
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        out = read_to_eof(process.stdout, timeout=15)
        assert out is not None, "stdout stayed open after the indexer was killed: `$(pixsearch index ...)` would hang"
        poll(lambda: not any(alive(pid) for pid in family), 10, "the killed indexer's processes to end")
    finally:
        process.stdout.close()
        for pid in family:  # never leave a stray process behind, even when the test fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_index_from_a_folder_holding_a_pixsearch_folder(tmp_path: Path, clip_spec: str) -> None:
    """Workers import the installed package, not a `pixsearch/` folder in the current directory (a clone)."""
    folder = tmp_path / "photos"
    write_folder(folder, 6)
    cwd = tmp_path / "checkout"
    (cwd / "pixsearch").mkdir(parents=True)
    command = pixsearch_command() + ["index", str(folder), "--model", clip_spec, "--workers", "2", "--batch-size", "2"]
    done = subprocess.run(
        command, env=index_env(tmp_path / "library"), cwd=cwd, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"\b6 embedded\b", done.stdout) and re.search(r"\b0 skipped\b", done.stdout), done.stdout

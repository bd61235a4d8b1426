"""Decode workers are tied to the `pixsearch index` process that started them.

A real `pixsearch index` runs in its own session; the tests watch its process tree through /proc.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import pytest
from images import write_folder

T = TypeVar("T")

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")


def pixsearch_command() -> list[str]:
    """The installed console script: it does not put the current folder on sys.path (`python -m` would)."""
    script = Path(sys.executable).with_name("pixsearch")
    if not script.exists():
        pytest.skip("the pixsearch console script is not installed next to this Python")
    return [str(script)]


def index_env(library: Path) -> dict[str, str]:
    return {**os.environ, "PIXSEARCH_LIBRARY": str(library), "HF_HUB_OFFLINE": "1"}


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def descendants(pid: int) -> dict[int, int]:
    """Every living process below `pid`: child pid -> its parent pid."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (found := _stat(int(name))) is not None and found[0] != "Z":
            parents[int(name)] = found[1]
    below, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in below:
                below[child] = parent
                frontier.append(child)
    return below


def alive(pid: int) -> bool:
    found = _stat(pid)
    return found is not None and found[0] not in ("Z", "X")  # an orphaned zombie may wait long for its reaper


def poll(check: Callable[[], T], timeout: float, what: str) -> T:
    """Bounded polling: the first truthy value of `check()` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


def read_to_eof(stream: IO[bytes], timeout: float) -> bytes | None:
    """All of `stream` up to end of file, or None if it stays open past `timeout` (what `$(...)` waits for)."""
    chunks = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if selector.select(left):
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
    return None


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
        left = poll(lambda: not any(alive(pid) for pid in family) or None, 10, "the killed indexer's processes to end")
        assert left
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

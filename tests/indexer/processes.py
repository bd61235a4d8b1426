"""Running `pixsearch` in a subprocess and watching its process tree through /proc: descendants,
liveness, peak memory, bounded polling."""

from __future__ import annotations

import os
import selectors
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import pytest

T = TypeVar("T")


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


def peak_rss_bytes(pid: int) -> int:
    """The high-water mark of a process's resident memory (VmHWM), or 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class PeakMemory:
    """Samples the peak resident memory of a process and everything below it until stopped.

    VmHWM only grows, so a sample taken any time after a spike sees it; only a spike in a
    process's last few milliseconds could be missed (workers live until the run ends)."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid = pid
        self.peaks: dict[int, int] = {}
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in [self.pid, *descendants(self.pid)]:
                self.peaks[pid] = max(self.peaks.get(pid, 0), peak_rss_bytes(pid))
            self._stop.wait(self._every_s)

"""Worker processes for reading and decoding, with a bounded number of tasks in flight.

The workers are tied to the process that made the pool: each holds the read end of a pipe whose
only write end lives in that process, and exits the moment it reads end-of-file. So a parent
killed with SIGKILL takes its workers along, and with them the forkserver and the resource
tracker (which stay only while a worker holds their pipes), and every holder of its stdout.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import pixsearch

T = TypeVar("T")
R = TypeVar("R")

_PRELOAD = ["pixsearch.indexer.decode"]
_ENVIRON_LOCK = threading.Lock()


class InlineExecutor(Executor):
    """Runs each task in the calling process (workers=0): for debugging and tiny jobs."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


class TiedProcessPool(ProcessPoolExecutor):
    """A forkserver process pool (the parent holds torch threads; forking it is unsafe) whose
    workers exit as soon as the process that made it is gone, however it died."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        _start_forkserver()
        # the read end travels to each worker as it starts; the write end never leaves this process
        self._lifeline_read, self._lifeline_write = context.Pipe(duplex=False)
        super().__init__(
            max_workers=workers, mp_context=context, initializer=_watch_lifeline, initargs=(self._lifeline_read,)
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:  # workers still running would read EOF and stop mid-task
            self._lifeline_write.close()
            self._lifeline_read.close()


def _start_forkserver() -> None:
    """Start the forkserver (and resource tracker) importing the same `pixsearch` as this process.

    They run `python -c ...`, which puts the current folder first on sys.path: a `pixsearch/`
    folder where the user stands (a clone) would be imported instead of the package. Python 3.11's
    forkserver ignores the parent's sys.path, so while they start PYTHONSAFEPATH keeps the current
    folder off it and PYTHONPATH leads with the folder this process's package came from.
    """
    package_root = str(Path(pixsearch.__file__).resolve().parent.parent)
    with _ENVIRON_LOCK:
        before = {name: os.environ.get(name) for name in ("PYTHONSAFEPATH", "PYTHONPATH")}
        os.environ["PYTHONSAFEPATH"] = "1"
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, before["PYTHONPATH"]]))
        try:
            forkserver.ensure_running()
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _watch_lifeline(lifeline: Connection) -> None:
    """Worker initializer: a daemon thread ends this process when the parent's pipe closes."""
    threading.Thread(target=_exit_at_eof, args=(lifeline,), name="pixsearch-lifeline", daemon=True).start()


def _exit_at_eof(lifeline: Connection) -> None:
    try:
        while True:
            lifeline.recv_bytes()  # nothing is ever sent: this returns only by raising at EOF
    except (EOFError, OSError):
        pass
    os._exit(1)  # the parent is gone: no one is left to take a result, nothing to clean up


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))


def make_executor(workers: int) -> Executor:
    """A pool of `workers` decode processes tied to this one; workers=0 decodes in this process."""
    if workers <= 0:
        return InlineExecutor()
    return TiedProcessPool(workers)


def bounded_map(executor: Executor, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """Like executor.map, in order, but never more than `window` tasks submitted and unread,
    so a slow consumer (the model) does not pile decoded images up in memory."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()

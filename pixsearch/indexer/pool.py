"""Worker processes for reading and decoding, with a bounded number of tasks in flight."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class InlineExecutor(Executor):
    """Runs each task in the calling process (workers=0): for debugging and tiny jobs."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))


def make_executor(workers: int) -> Executor:
    """A process pool started by forkserver (the parent holds torch threads; forking it is unsafe)."""
    if workers <= 0:
        return InlineExecutor()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pixsearch.indexer.decode"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


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

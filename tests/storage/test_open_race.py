"""Processes opening one new library at the same moment (`pixsearch index` twice, or a server and an
index run started together) each find the database made once, and none fails creating it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from sqlalchemy import inspect

from pixsearch.storage import Library

OPENERS = 6


def _open(root: str, start, errors) -> None:
    start.wait()
    try:
        Library.open(Path(root)).close()
    except Exception as error:  # noqa: BLE001 - any failure is what this test reports
        errors.put(f"{type(error).__name__}: {error}")


def test_processes_opening_a_new_library_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    for attempt in range(3):
        root = tmp_path / f"library-{attempt}"
        start = context.Barrier(OPENERS)
        workers = [context.Process(target=_open, args=(str(root), start, errors)) for _ in range(OPENERS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert all(worker.exitcode == 0 for worker in workers)
        found = []
        while not errors.empty():
            found.append(errors.get())
        assert not found, found
        library = Library.open(root)
        with library.session() as session:
            assert "text_embeddings" in inspect(session.connection()).get_table_names()

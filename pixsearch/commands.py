"""The CLI's command handlers: open the library, call a service, show progress and results.

Only the CLI imports this module; it is the one place besides cli.py that prints.
"""

from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm

from pixsearch.cli import print_json
from pixsearch.errors import ConfigError
from pixsearch.imageio import load_image
from pixsearch.indexer import Indexer, IndexOptions, Progress
from pixsearch.indexer.texts import index_texts
from pixsearch.models import ModelOptions, Role, create
from pixsearch.search import SearchService
from pixsearch.settings import Settings
from pixsearch.storage import Library
from pixsearch.storage.status import library_status


def _open(settings: Settings) -> Library:
    return Library.open(settings.library, settings.db_url)


def _options(settings: Settings) -> ModelOptions:
    return ModelOptions(device=settings.device, dtype=settings.dtype)


class _Bars:
    """One tqdm bar per phase, on stderr."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}
        self.started: dict[str, float] = {}

    def __call__(self, event: Progress) -> None:
        bar = self.bars.get(event.phase)
        if bar is None:
            unit = "img" if event.phase == "embed" else "file"
            bar = tqdm(total=event.total or None, desc=event.phase, unit=unit, file=sys.stderr, dynamic_ncols=True)
            self.bars[event.phase] = bar
        if event.total and bar.total != event.total:
            bar.total = event.total
        bar.update(event.done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def run_index(args: argparse.Namespace, settings: Settings) -> int:
    library = _open(settings)
    with library.session() as session:
        active = library.active_model(session)
    spec = args.model or (active.spec if active else settings.model)
    encoder = create(spec, Role.DUAL_ENCODER, _options(settings))
    options = IndexOptions(
        batch_size=settings.batch_size, workers=settings.workers, max_pixels=settings.max_pixels, reindex=args.reindex
    )
    bars = _Bars()
    started = time.perf_counter()
    try:
        report = Indexer(library, encoder, options).run(args.folders, bars)
    finally:
        bars.close()
    elapsed = time.perf_counter() - started
    print(
        f"{report.scanned} files seen in {elapsed:.1f}s: {report.embedded} embedded "
        f"({report.images_per_second:.1f} images/s), {report.unchanged} unchanged, {report.moved} moved, "
        f"{report.copied} copies, {report.touched} touched, {report.removed} removed, {len(report.skipped)} skipped"
    )
    for failure in report.skipped:
        print(f"  skipped {failure.path}: {failure.reason}")
    return 0


def run_index_texts(args: argparse.Namespace, settings: Settings) -> int:
    library = _open(settings)
    with library.session() as session:
        active = library.active_model(session)
    encoder = create(active.spec if active else settings.model, Role.DUAL_ENCODER, _options(settings))
    with tqdm(desc="texts", unit="text", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = index_texts(library, encoder, args.file, args.collection, progress=progress)
    print(f"{report.added} texts added, {report.existing} already present, {report.blank} blank lines ignored")
    return 0


def run_search(args: argparse.Namespace, settings: Settings) -> int:
    if not args.query and not args.image:
        raise ConfigError("give words to search for, or --image PATH")
    service = SearchService(_open(settings), _options(settings))
    image = load_image(args.image, settings.max_pixels) if args.image else None
    if args.target == "texts":
        if image is None:
            raise ConfigError("--in texts needs --image PATH (image->text lookup)")
        hits = service.image_to_text(image, args.k, args.collection)
        if args.json:
            print_json([hit.to_json() for hit in hits])
        for hit in [] if args.json else hits:
            print(f"{hit.score:.4f}  {hit.text}")
        return 0
    if image is not None and args.query:
        vector = service.encode_text([args.query])[0] + service.encode_image(image)[0]
        hits = service.vector_to_image(vector / max(float((vector**2).sum()) ** 0.5, 1e-12), args.k, args.offset)
    elif image is not None:
        hits = service.image_to_image(image, args.k, args.offset)
    else:
        hits = service.text_to_image(args.query, args.k, args.offset)
    if args.json:
        print_json([hit.to_json() for hit in hits])
    for hit in [] if args.json else hits:
        print(f"{hit.score:.4f}  {hit.path}")
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    status = library_status(_open(settings))
    if args.json:
        print_json(status.to_json())
        return 0
    print(f"library   {status.root}")
    print(f"database  {status.database}")
    print(
        f"model     {status.model or '(none yet)'}"
        + (f"  dim {status.dim}, preprocessing {status.preprocess_id}" if status.model else "")
    )
    print(f"images    {status.images} ({status.image_vectors} vectors)")
    print(f"texts     {status.texts} ({status.text_vectors} vectors)")
    print(f"index     {status.index_type or '-'}, {status.index_bytes / 1e6:.1f} MB on disk")
    print(f"skipped   {len(status.skipped)}")
    for path, reason in status.skipped:
        print(f"  {path}: {reason}")
    return 0

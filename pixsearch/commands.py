"""The CLI's command handlers: open the library, call a service, show progress and results.

Only the CLI imports this module; it is the one place besides cli.py that prints.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time

from tqdm import tqdm

from pixsearch.cli import print_json
from pixsearch.errors import ConfigError, EmptyIndexError
from pixsearch.imageio import load_query_image
from pixsearch.indexer import Indexer, IndexOptions, Progress
from pixsearch.indexer.ray_job import RayOptions, require_ray
from pixsearch.indexer.texts import index_texts
from pixsearch.models import ModelOptions, Role, create
from pixsearch.models.roles import DualEncoder, Tower
from pixsearch.photos import load_photo
from pixsearch.rerank import Fusion, RerankOptions, RerankService
from pixsearch.rerank.cache import disk_usage, parse_size
from pixsearch.rerank.fusion import similarity_weight
from pixsearch.search import ImageHit, SearchService
from pixsearch.search.duplicates import find_duplicates
from pixsearch.search.engine import SearchOptions, hybrid_search
from pixsearch.search.relevance import read_prompts
from pixsearch.search.results import FILTER
from pixsearch.search.service import check_k
from pixsearch.settings import Settings
from pixsearch.storage import Library
from pixsearch.storage.ann import IndexChoice
from pixsearch.storage.schema import ModelRow
from pixsearch.storage.status import library_status


def _open(settings: Settings) -> Library:
    return Library.open(settings.library, settings.db_url)


def _options(settings: Settings) -> ModelOptions:
    return ModelOptions(device=settings.device, dtype=settings.dtype)


class _Bars:
    """One tqdm bar per phase, on stderr. A phase's bar is drawn complete and closed as soon as the
    phase ends (or the next one starts), so its count and time are those of the phase."""

    UNITS = {"embed": " photos"}

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, event: Progress) -> None:
        for phase in [p for p in self.bars if p != event.phase]:
            self._finish(phase)
        bar = self.bars.get(event.phase)
        if bar is None:
            unit = self.UNITS.get(event.phase, " files")
            bar = tqdm(total=event.total or None, desc=event.phase, unit=unit, file=sys.stderr, dynamic_ncols=True)
            self.bars[event.phase] = bar
        if event.total and bar.total != event.total:
            bar.total = event.total
        bar.update(event.done - bar.n)
        if event.total and event.done >= event.total:
            self._finish(event.phase)

    def _finish(self, phase: str) -> None:
        bar = self.bars.pop(phase)
        bar.refresh()
        bar.close()

    def close(self) -> None:
        for phase in list(self.bars):
            self._finish(phase)


def run_index(args: argparse.Namespace, settings: Settings) -> int:
    if args.rerank_cache is not None and not settings.reranker:
        raise ConfigError("--rerank-cache needs a reranker: --rerank-cache SPEC or PIXSEARCH_RERANKER")
    active = _active_model(settings)
    spec = args.model or (active.spec if active else settings.model)
    encoder = create(spec, Role.DUAL_ENCODER, _options(settings))
    ray = _ray_options(args, settings)
    # find the model before the library is made: a model that cannot be found leaves nothing behind
    if ray is None:
        encoder.load_towers(Tower.IMAGE)
    else:  # the Ray actors load the weights; reading the config here finds a missing model early
        _ = encoder.dim, encoder.preprocess_id
    library = _open(settings)
    options = IndexOptions(
        batch_size=settings.batch_size,
        workers=settings.workers,
        max_pixels=settings.max_pixels,
        reindex=args.reindex,
        lock_wait_s=args.wait,
        ray=ray,
        index_choice=IndexChoice.parse(settings.index_type) if settings.index_type else None,
    )
    bars = _Bars()
    started = time.perf_counter()
    try:
        report = Indexer(library, encoder, options).run(args.folders, bars)
    finally:
        bars.close()
    if args.query_model:
        _set_query_model(library, args.query_model, settings)
    elapsed = time.perf_counter() - started
    print(
        f"{report.scanned} files seen in {elapsed:.1f}s: {report.embedded} embedded "
        f"({report.images_per_second:.1f} images/s), {report.unchanged} unchanged, {report.moved} moved, "
        f"{report.copied} copies, {report.touched} touched, {report.removed} removed, {len(report.skipped)} skipped"
    )
    for failure in report.skipped:
        print(f"  skipped {failure.path}: {failure.reason}")
    if report.recovered:
        print(f"{report.recovered} photos recovered from the shards of an interrupted Ray run")
    if report.switch_missing:
        print(
            f"the library still searches with {active.spec if active else 'its old model'}: "
            f"{report.switch_missing} photos outside {', '.join(map(str, args.folders))} have no vector of {spec} yet; "
            "run `pixsearch index --reindex` on every folder of the library to finish the switch"
        )
    if args.rerank_cache is not None:
        fill_rerank_cache(library, settings)
    if args.tag:
        from pixsearch.tagging.cli import print_report
        from pixsearch.tagging.service import tag_after_index

        print_report(tag_after_index(library, encoder))
    return 0


def _ray_options(args: argparse.Namespace, settings: Settings) -> RayOptions | None:
    """`--ray`'s options, after checking that Ray is installed (before anything is written)."""
    if args.ray is None:
        if args.ray_actors is not None:
            raise ConfigError("--ray-actors needs --ray ADDRESS")
        return None
    require_ray()
    if not args.verbose:  # Ray Data logs each job's plan and timing at INFO; our bars show progress
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return RayOptions(args.ray, args.ray_actors, _options(settings))


def _set_query_model(library: Library, spec: str, settings: Settings) -> None:
    if spec.lower() == "none":
        with library.session() as session:
            library.set_query_model(session, None)
        return
    with library.session() as session:
        model = library.active_model(session)
    dim = create(spec, Role.TEXT_ENCODER, _options(settings)).dim
    if model is None or dim != model.dim:
        raise ConfigError(
            f"query model {spec} gives {dim}-d vectors; the library's model has {model.dim if model else '?'}"
        )
    with library.session() as session:
        library.set_query_model(session, spec)


def run_index_texts(args: argparse.Namespace, settings: Settings) -> int:
    library = _open(settings)
    with library.session() as session:
        active = library.active_model(session)
    encoder = create(active.spec if active else settings.model, Role.DUAL_ENCODER, _options(settings))
    with tqdm(desc="texts", unit="text", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = index_texts(library, encoder, args.file, args.collection, progress=progress, lock_wait_s=args.wait)
    print(f"{report.added} texts added, {report.existing} already present, {report.blank} blank lines ignored")
    return 0


def _active_model(settings: Settings) -> ModelRow | None:
    """The model of an existing library, without creating one where there is none yet."""
    if settings.db_url is None and not (settings.library / "pixsearch.db").exists():
        return None
    library = _open(settings)
    try:
        with library.session() as session:
            return library.active_model(session)
    finally:
        library.close()


def _reranker(settings: Settings, library: Library, encoder: DualEncoder | None = None) -> RerankService | None:
    """The configured reranker; its itm+sim weight comes from `encoder` (the library's dual encoder) when
    the setting says 'auto' or 'logit-scale'."""
    if not settings.reranker:
        return None
    if encoder is None:
        try:
            encoder = SearchService(library, _options(settings)).encoder
        except EmptyIndexError:
            encoder = None
    options = RerankOptions(
        k=settings.rerank_k,
        fusion=Fusion.parse(settings.fusion),
        similarity_weight=similarity_weight(settings.sim_weight, encoder),
        disk_cache=settings.rerank_disk_cache,
        disk_cache_bytes=parse_size(settings.rerank_cache_max) if settings.rerank_cache_max else None,
        max_pixels=settings.max_pixels,
    )
    model = create(settings.reranker, Role.RERANKER, _options(settings))
    # the library's own photos, read as the web reads them: below its folders, through no link
    return RerankService(model, settings.reranker, library.root, options, functools.partial(load_photo, library))


def run_search(args: argparse.Namespace, settings: Settings) -> int:
    if not args.query and not args.image:
        raise ConfigError("give words to search for, or --image PATH")
    check_k(args.k, args.offset)
    library = _open(settings)
    service = SearchService(library, _options(settings))
    reranker = None if args.no_rerank else _reranker(settings, library)
    # decoded exactly as the indexer decoded the library's photos (JPEG draft scale), so a photo finds itself
    image = load_query_image(args.image, service.encoder.transform, settings.max_pixels) if args.image else None
    # rerank looks at the top rerank_k, so fetch at least that many before paging
    fetch = max(args.k + args.offset, settings.rerank_k) if reranker else args.k + args.offset
    if args.target == "texts":
        if image is None:
            raise ConfigError("--in texts needs --image PATH (image->text lookup)")
        hits = service.image_to_text(image, fetch, args.collection)
        if reranker:
            hits = reranker.rerank_texts(image, hits)
        hits = hits[: args.k]
        if args.json:
            print_json([hit.to_json() for hit in hits])
        for hit in [] if args.json else hits:
            print(f"{hit.score:.4f}  {hit.text}")
        return 0
    if image is not None and args.query:
        vector = service.encode_text([args.query])[0] + service.encode_image(image)[0]
        hits = service.vector_to_image(vector / max(float((vector**2).sum()) ** 0.5, 1e-12), fetch)
    elif image is not None:
        hits = service.image_to_image(image, fetch)
    else:
        result = hybrid_search(service, args.query, fetch, 0, _search_options(args))
        if result.empty is not None:
            hint = " (--no-cutoff shows the nearest anyway)" if result.no_good_match else ""
            print(f"pixsearch: {result.explain()}{hint}", file=sys.stderr)
        hits = result.hits
        if reranker and result.query.has_vector:
            hits = reranker.rerank_images(" ".join(t for _, t in result.query.terms), hits)
    if hits and args.offset >= len(hits):
        print(f"pixsearch: --offset {args.offset} is past the end: {len(hits)} results in all", file=sys.stderr)
    hits = hits[args.offset : args.offset + args.k]
    if args.json:
        print_json([hit.to_json() for hit in hits])
    for hit in [] if args.json else hits:
        _print_hit(hit)
    return 0


def _search_options(args: argparse.Namespace) -> SearchOptions:
    cutoff = args.cutoff if args.cutoff is not None else SearchOptions.cutoff_z
    return SearchOptions(
        keyword_weight=args.keyword_weight,
        cutoff_z=None if args.no_cutoff else cutoff,
        min_score=args.min_score,
        background=read_prompts(args.background) if args.background else SearchOptions.background,
        model_calibration=args.cutoff is None and args.background is None,  # the model's relevance.json, if any
        duplicate_threshold=None if args.no_group else SearchOptions.duplicate_threshold,
    )


def _print_hit(hit: ImageHit) -> None:
    """The number that ordered the hit first, then the path, then the similarity and the rest as detail."""
    if hit.match == FILTER:
        print(f"filter match  {hit.path}")
        return
    if hit.rerank_score is not None:
        detail = f"similarity {hit.first_stage_score:.4f}, rerank {hit.rerank_score:.4f}"
    elif hit.fused_score is not None:
        keyword = f", keyword {hit.keyword_score:.2f}" if hit.keyword_score is not None else ""
        detail = f"similarity {hit.score:.4f}{keyword}; fused rank score"
    else:
        detail = "similarity"
    print(f"{hit.ranking_score:.4f}  {hit.path}  ({detail})")
    for member in hit.near_identical:
        print(f"        near-identical  {member.path}")


def run_duplicates(args: argparse.Namespace, settings: Settings) -> int:
    groups = find_duplicates(SearchService(_open(settings), _options(settings)), args.threshold)
    if args.json:
        print_json([[hit.to_json() for hit in group] for group in groups])
        return 0
    for number, group in enumerate(groups, start=1):
        print(f"group {number}: {len(group)} photos")
        for hit in group:
            print(f"  {hit.score:.4f}  {hit.path}")
    if not groups:
        print(f"no near-identical photos at similarity {args.threshold}")
    return 0


def run_rerank_cache(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.reranker:
        raise ConfigError("name the reranker with --rerank SPEC or PIXSEARCH_RERANKER")
    fill_rerank_cache(_open(settings), settings)
    return 0


def fill_rerank_cache(library: Library, settings: Settings) -> None:
    """Compute the configured reranker's image features for every photo not yet in its disk cache,
    up to the cache's bound (`rerank_cache_max`), with a progress bar; print what it did."""
    reranker = _reranker(settings.with_(rerank_disk_cache=True), library)
    assert reranker is not None and reranker.disk is not None
    hits = SearchService(library).all_images()
    with tqdm(total=len(hits), desc="rerank features", unit="img", file=sys.stderr) as bar:
        computed = reranker.precompute(hits, lambda done, total: bar.update(done - bar.n))
    used = sum(disk_usage(library.root).values())
    print(f"{computed} images computed, {len(hits) - computed} not; rerank caches use {used / 1e6:.1f} MB on disk")
    if reranker.disk.full:
        print(
            f"the rerank cache reached its bound ({settings.rerank_cache_max}): raise --rerank-cache-max to cache more"
        )


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
    if status.pending_model:
        print(f"switching to {status.pending_model}: a re-index has not finished (run it again to finish)")
    print(f"images    {status.images} ({status.image_vectors} vectors)")
    print(f"texts     {status.texts} ({status.text_vectors} vectors)")
    print(f"index     {status.index_type or '-'}, {status.index_bytes / 1e6:.1f} MB on disk")
    print(f"          type asked for: {status.index_choice}")
    print(
        f"rerank    {status.rerank_cache_bytes / 1e6:.1f} MB of cached reranker features on disk"
        + (
            f" ({status.rerank_cache_images} images: {', '.join(status.rerank_cache_models)})"
            if status.rerank_cache_images
            else ""
        )
    )
    if status.waiting_shards:
        print(
            f"shards    {status.waiting_shards} from an `index --ray` run not merged yet "
            f"({status.waiting_shard_bytes / 1e6:.1f} MB): run `pixsearch index` on the folders to merge them"
        )
    print(f"skipped   {len(status.skipped)}")
    for path, reason in status.skipped:
        print(f"  {path}: {reason}")
    return 0


def _origins(raw: str | None) -> tuple[str, ...] | None:
    return None if raw is None else tuple(origin.strip() for origin in raw.split(",") if origin.strip())


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from pixsearch.web import WebOptions
    from pixsearch.web.server import serve

    library = _open(settings)
    reranker = _reranker(settings, library)
    # the API key comes from the environment only (PIXSEARCH_API_KEY), never a flag visible in `ps`
    options = WebOptions.from_env(
        captioner=args.captioner,
        answerer=args.answerer,
        reranker=settings.reranker,
        entailer=args.entailer,
        writer=args.llm,
        cors_origins=_origins(args.cors_origins),
    )
    print(f"pixsearch: serving {settings.library} at http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    serve(settings, options, args.host, args.port, rerank_hook=reranker.rerank_images if reranker else None)
    return 0

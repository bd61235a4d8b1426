"""The `pixsearch` command: argument parsing, then a call into a service. Errors become exit codes here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pixsearch import __version__
from pixsearch.errors import (
    BadImageError,
    ConfigError,
    LibraryBusyError,
    LibraryError,
    ModelLoadError,
    ModelNotFoundError,
    NotFoundError,
    PixsearchError,
)
from pixsearch.settings import DEFAULT_MODEL, Settings

EXIT_CODES = {
    LibraryBusyError: 75,  # EX_TEMPFAIL: try again later
    ConfigError: 2,
    BadImageError: 2,
    NotFoundError: 2,
    ModelNotFoundError: 3,
    ModelLoadError: 3,
    LibraryError: 4,
}

# The training package's commands, listed (with their help) without importing it: it imports torch,
# which `pixsearch --help` should not wait for. Their parsers are built when one of them runs.
TRAINING_COMMANDS = {
    "synth": "generate a synthetic data set of coloured shapes",
    "train": "train or fine-tune a model on image-caption pairs",
    "eval": "recall, VQA and entailment accuracy, BLEU-4 and CIDEr on a data set",
    "demo": "offline demo: synthetic library, packaged tiny models, web UI",
}


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options every subcommand takes (library, database, device, dtype, verbosity); other
    packages' commands use it too."""
    parser.add_argument("--library", type=Path, help="library folder (env PIXSEARCH_LIBRARY; default: user data dir)")
    parser.add_argument("--db-url", help="SQLAlchemy URL of the metadata database (default: SQLite in the library)")
    parser.add_argument(
        "--device", help="torch device: auto (a CUDA GPU when torch sees one, else cpu), cpu, cuda, cuda:1 ..."
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype; auto: float16 on a GPU, bfloat16 on a CPU where it measures faster, else float32",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    """`--wait`, for commands that write to the library and so take its writer lock."""
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another process is writing to the library, wait this long for it (default: fail at once)",
    )


def add_sim_weight_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sim-weight",
        metavar="W",
        help="itm+sim fusion: rank by ITM logit + W x similarity; a number, 'logit-scale' (the dual encoder's "
        "learned temperature) or 'auto' (logit-scale where the model has one, else 1; env PIXSEARCH_SIM_WEIGHT)",
    )


def add_rerank_cache_max_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rerank-cache-max",
        metavar="SIZE",
        help="stop filling the reranker's disk cache at this size, e.g. 2G (BLIP-base: ~0.9 MB a photo; "
        "env PIXSEARCH_RERANK_CACHE_MAX)",
    )


SERVE_ENVIRONMENT = """environment:
  PIXSEARCH_API_KEY          key that changes to the library need (8+ characters; none: no changes)
  PIXSEARCH_CORS_ORIGINS     web origins allowed to call the API from a browser (comma-separated), e.g.
                             clip-retrieval's front end: PIXSEARCH_CORS_ORIGINS=http://localhost:1234
  PIXSEARCH_ALLOW_IMAGE_URL  1: /knn-service fetches an image_url of another server (off: only this server's)
  PIXSEARCH_MAX_UPLOAD_BYTES largest upload (default 20000000)
  PIXSEARCH_CAPTIONER, PIXSEARCH_ANSWERER, PIXSEARCH_ENTAILER, PIXSEARCH_RERANKER, PIXSEARCH_WRITER: model specs
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; the training commands' own parsers only when `command` is one of them."""
    parser = argparse.ArgumentParser(prog="pixsearch", description="Search your photos by words or by a photo.")
    parser.add_argument("--version", action="version", version=f"pixsearch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="index (or update) folders of photos")
    add_common_options(index)
    add_wait_option(index)
    index.add_argument("folders", nargs="+", type=Path)
    index.add_argument("--model", help=f"dual encoder spec backend:source (default {DEFAULT_MODEL}, or the library's)")
    index.add_argument("--reindex", action="store_true", help="switch the library to --model, re-embedding every image")
    index.add_argument("--batch-size", type=int)
    index.add_argument("--workers", type=int, help="decoding processes (default: one per core; 0: none)")
    index.add_argument("--max-pixels", type=int, help="refuse images larger than this (decompression bombs)")
    index.add_argument("--tag", action="store_true", help="then zero-shot tag new photos (tag --new-only)")
    index.add_argument(
        "--rerank-cache",
        nargs="?",
        const="",
        metavar="SPEC",
        help="then fill the reranker's disk cache of image features (the reranker: SPEC, else PIXSEARCH_RERANKER)",
    )
    add_rerank_cache_max_option(index)
    index.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="decode and embed as a Ray Data job: auto (this machine's cluster), local (start one for this run), "
        'ray://HOST:PORT or HOST:PORT; every node must see the photos at the same paths (pip install "pixsearch[ray]")',
    )
    index.add_argument("--ray-actors", type=int, metavar="N", help="model actors (default: one per GPU, or CPUs/2)")
    index.add_argument(
        "--index-type",
        metavar="TYPE",
        help="auto (exact below 50k vectors, IVF-PQ above), flat or ivfpq, with optional parameters: "
        "ivfpq:nlist=1024,m=64,nprobe=32,rerank=400 (env PIXSEARCH_INDEX_TYPE; kept by the library)",
    )
    index.add_argument(
        "--query-model",
        metavar="SPEC",
        help="answer word queries with this text model (e.g. st-text: multilingual CLIP); 'none' clears it",
    )

    texts = commands.add_parser("index-texts", help="add a text file (one text per line) for image->text lookups")
    add_common_options(texts)
    add_wait_option(texts)
    texts.add_argument("file", type=Path)
    texts.add_argument("--collection", help="collection name (default: the file name)")

    from pixsearch.search import query as query_language

    search = commands.add_parser(
        "search",
        help="search by words or by a photo",
        description="Search by words (with the query language below) or by a photo.",
        epilog="query language:\n" + query_language.__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_options(search)
    search.add_argument("query", nargs="?", help="words, phrases, filters (see below)")
    search.add_argument("--image", type=Path, help="search with a photo instead of (or as well as) words")
    search.add_argument("--in", dest="target", choices=["images", "texts"], default="images", help="what to return")
    search.add_argument("-k", "--top", dest="k", type=int, default=10, help="number of results (1-1000)")
    search.add_argument("--offset", type=int, default=0, help="skip this many results (paging)")
    search.add_argument("--collection", help="with --in texts: only this text collection")
    search.add_argument("--json", action="store_true", help="machine-readable output")
    search.add_argument(
        "--keyword-weight", type=float, default=1.0, help="weight of keyword matches in the fusion (0: off)"
    )
    search.add_argument("--min-score", type=float, help="drop results below this similarity")
    search.add_argument("--no-cutoff", action="store_true", help="no relevance cut-off: always return k results")
    search.add_argument(
        "--cutoff",
        type=float,
        metavar="Z",
        help="relevance cut-off: keep photos the words fit Z spreads better than background prompts (default 2.5)",
    )
    search.add_argument(
        "--background", type=Path, metavar="FILE", help="background prompts, one a line (a model of another world)"
    )
    search.add_argument("--no-group", action="store_true", help="do not collapse near-duplicate results")
    search.add_argument(
        "--rerank", metavar="SPEC", help="rerank the top results with this model (env PIXSEARCH_RERANKER)"
    )
    search.add_argument("--no-rerank", action="store_true", help="do not rerank, even if a reranker is configured")
    search.add_argument("--rerank-k", type=int, help="how many of the top results to rerank (default 16)")
    search.add_argument(
        "--fusion", choices=["itm+sim", "itm"], help="itm+sim: ITM logit + similarity (BLIP); itm: ITM only"
    )
    search.add_argument(
        "--rerank-disk-cache", action="store_true", default=None, help="keep reranker image features on disk"
    )
    add_sim_weight_option(search)

    cache = commands.add_parser("rerank-cache", help="precompute reranker image features for the whole library (disk)")
    add_common_options(cache)
    cache.add_argument("--rerank", metavar="SPEC", help="the reranker (env PIXSEARCH_RERANKER)")
    add_rerank_cache_max_option(cache)

    serve = commands.add_parser(
        "serve", help="the web UI and JSON API over the library", epilog=SERVE_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_common_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--captioner", metavar="SPEC", help="captions on result pages (env PIXSEARCH_CAPTIONER)")
    serve.add_argument("--answerer", metavar="SPEC", help="answers questions about a photo (env PIXSEARCH_ANSWERER)")
    serve.add_argument("--rerank", metavar="SPEC", help="reranker for searches with rerank on (env PIXSEARCH_RERANKER)")
    add_sim_weight_option(serve)
    serve.add_argument("--entailer", metavar="SPEC", help="checks statements about a photo (env PIXSEARCH_ENTAILER)")
    serve.add_argument(
        "--llm", metavar="SPEC", help="writes answers from the caption and the VQA answers (env PIXSEARCH_WRITER)"
    )
    serve.add_argument(
        "--cors-origins", metavar="ORIGINS",
        help="comma-separated web origins whose pages may call the API, e.g. where clip-retrieval's front end "
        "is served: http://localhost:1234 (env PIXSEARCH_CORS_ORIGINS; default none)",
    )  # fmt: skip

    duplicates = commands.add_parser("duplicates", help="list groups of near-identical photos")
    add_common_options(duplicates)
    duplicates.add_argument("--threshold", type=float, default=0.95, help="cosine similarity (default 0.95)")
    duplicates.add_argument("--json", action="store_true", help="machine-readable output")

    status = commands.add_parser("status", help="what the library holds")
    add_common_options(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    from pixsearch.ask_cli import register as register_ask

    register_ask(commands)
    from pixsearch.tagging.cli import register as register_tag

    register_tag(commands)
    if command in TRAINING_COMMANDS:
        from pixsearch.train.cli import register as register_training

        register_training(commands)
    else:
        for name, text in TRAINING_COMMANDS.items():
            commands.add_parser(name, help=text)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in `argv` (the first word not an option: the top level takes no values)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        library=args.library,
        db_url=args.db_url,
        device=args.device,
        dtype=args.dtype,
        batch_size=getattr(args, "batch_size", None),
        workers=getattr(args, "workers", None),
        max_pixels=getattr(args, "max_pixels", None),
        reranker=getattr(args, "rerank", None) or getattr(args, "rerank_cache", None) or None,
        rerank_k=getattr(args, "rerank_k", None),
        fusion=getattr(args, "fusion", None),
        sim_weight=getattr(args, "sim_weight", None),
        rerank_disk_cache=getattr(args, "rerank_disk_cache", None),
        rerank_cache_max=getattr(args, "rerank_cache_max", None),
        index_type=getattr(args, "index_type", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, so that a closed pipe is seen inside the try
        return code
    except BrokenPipeError:
        # `pixsearch duplicates | head`: the reader has gone. Python's documented recipe: send what is
        # left of stdout to devnull, so the flush at exit does not fail again, and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str]) -> int:
    args = build_parser(_command_of(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    _quiet_transformers(args.verbose)
    from pixsearch import commands

    try:
        settings = settings_from(args)
        # commands of other packages (tag, train, ...) set their own handler with set_defaults
        handler = getattr(args, "handler", None) or getattr(commands, "run_" + args.command.replace("-", "_"))
        return int(handler(args, settings) or 0)
    except PixsearchError as error:
        print(f"pixsearch: {error}", file=sys.stderr)
        return next((code for cls, code in EXIT_CODES.items() if isinstance(error, cls)), 1)
    except KeyboardInterrupt:
        print("pixsearch: interrupted; what was committed is kept, run the same command to resume", file=sys.stderr)
        return 130


def _quiet_transformers(verbose: bool) -> None:
    try:
        import transformers
    except ImportError:  # pragma: no cover - a dependency, but the CLI can still say so
        return
    transformers.logging.set_verbosity_info() if verbose else transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())

"""Text query latency with and without cross-attention reranking.

A library of --vectors image vectors (random unit vectors stored through the real storage path; a
few hundred real image files behind them), a CLIP ViT-B/32 text tower and a BLIP-base-sized ITM
reranker (real config, random weights). For rerank k in 16/32/64 it measures the query with the
vision features cached (the steady state) and, as the baseline in the same run, with the vision
tower run per query. Prints p50/p95 and the cost per reranked candidate.

    python bench/query_latency.py [--vectors 10000] [--queries 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import percentile, save_vit_b32_clip

QUERIES = ["a dog on a beach", "two people under an umbrella", "a red car in the snow", "a birthday cake", "sunset"]


def save_blip_base_itm(directory: Path) -> Path:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval
    from transformers.models.blip import BlipImageProcessorPil

    torch.manual_seed(0)
    config = BlipConfig()  # the defaults are BLIP base: ViT-B/16 at 384 px, BERT-base text with cross-attention
    BlipForImageTextRetrieval(config).save_pretrained(directory)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + " ".join(QUERIES).split()
    words += [f"[unused{i}]" for i in range(config.text_config.vocab_size - len(words))]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(vocab=str(directory / "vocab.txt"), bos_token="[DEC]").save_pretrained(directory)
    BlipImageProcessorPil(size={"height": 384, "width": 384}).save_pretrained(directory)
    return directory


def build_library(root: Path, spec: str, vectors: int, files: int):
    from images import write_folder

    from pixsearch.indexer import writer
    from pixsearch.indexer.decode import Prepared
    from pixsearch.models import create
    from pixsearch.storage import IMAGES, Library

    encoder = create(spec)
    paths = write_folder(root / "photos", files)
    library = Library.open(root / "library")
    rng = np.random.default_rng(0)
    with library.session() as session:
        model = library.use_model(session, spec, encoder.preprocess_id, encoder.dim)
    with library.writing("bench/query_latency.py"):
        _fill(library, encoder, model, paths, vectors, files)
    return library


def _fill(library, encoder, model, paths, vectors: int, files: int) -> None:
    from pixsearch.indexer import writer
    from pixsearch.indexer.decode import Prepared
    from pixsearch.storage import IMAGES

    rng = np.random.default_rng(0)
    index = library.load_index(IMAGES, model)
    for start in range(0, vectors, 1000):
        n = min(1000, vectors - start)
        items = [
            Prepared(f"{paths[(start + i) % files]}#{start + i}", f"{start + i:064x}", 1, 0.0, 64, 48, None, None, None)
            for i in range(n)
        ]
        batch = rng.standard_normal((n, encoder.dim)).astype(np.float32)
        batch /= np.linalg.norm(batch, axis=1, keepdims=True)
        with library.session() as session:
            writer.store_embedded(session, items, batch, model.key, index)
            index.generation = library.bump_generation(session, IMAGES, model.key)
    library.save_index(IMAGES, model.key, index)


def strip_fragment(hits):
    """Rows point at real files with a '#n' suffix to keep paths unique; load the file itself."""
    import dataclasses

    return [dataclasses.replace(hit, path=hit.path.split("#")[0]) for hit in hits]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--ks", default="16,32,64")
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    from pixsearch.models import Role, create
    from pixsearch.models.runtime import resolve_dtype
    from pixsearch.rerank import RerankOptions, RerankService
    from pixsearch.search import SearchService

    work = Path(tempfile.mkdtemp(prefix="pixsearch-latency-"))
    ks = [int(k) for k in args.ks.split(",")]
    spec = f"clip:{save_vit_b32_clip(work / 'clip')}"
    library = build_library(work, spec, args.vectors, files=max(ks))
    rerank_spec = f"blip-itm:{save_blip_base_itm(work / 'blip')}"
    reranker = create(rerank_spec, Role.RERANKER)
    reranker.load()
    search = SearchService(library)
    search.text_to_image("warm up", k=1)
    queries = (QUERIES * args.queries)[: args.queries]
    dtype = str(resolve_dtype(reranker.options)).replace("torch.", "")
    file_features: dict = {}
    print(
        f"{args.vectors} vectors, CLIP ViT-B/32 text tower, BLIP-base ITM at 384 px ({dtype}), {len(queries)} queries"
    )
    plain = [timed(lambda q=q: search.text_to_image(q, k=10)) for q in queries]
    print(f"no rerank            p50 {percentile(plain, 50) * 1e3:8.1f} ms  p95 {percentile(plain, 95) * 1e3:8.1f} ms")
    for k in ks:
        hits = {q: strip_fragment(search.text_to_image(q, k=k)) for q in queries}
        # baseline, one query per k: a fresh service has nothing cached, so the vision tower runs per candidate
        fresh = RerankService(reranker, rerank_spec, library.root, RerankOptions(k=k))
        cold = query_once(search, fresh, queries[0], k, hits[queries[0]])
        # steady state: the candidates' vision features are cached (rows share files, so one pass per file)
        cached = RerankService(reranker, rerank_spec, library.root, RerankOptions(k=k))
        seed_cache(cached, [h for q in queries for h in hits[q]], file_features)
        warm = [query_once(search, cached, q, k, hits[q]) for q in queries]
        per = (percentile(warm, 50) - percentile(plain, 50)) / k
        print(
            f"rerank k={k:<3} cached  p50 {percentile(warm, 50) * 1e3:8.1f} ms  p95 {percentile(warm, 95) * 1e3:8.1f} ms"
            f"  ({per * 1e3:.1f} ms per candidate)"
        )
        print(
            f"rerank k={k:<3} vision per query (baseline, 1 query) {cold * 1e3:8.1f} ms"
            f"  -> caching is {cold / percentile(warm, 50):.1f}x faster"
        )


def seed_cache(service, hits, file_features: dict) -> None:
    """Put each hit's vision features into the memory cache, computing each distinct file once."""
    from PIL import Image

    todo = sorted({h.path for h in hits} - set(file_features))
    for start in range(0, len(todo), 8):
        chunk = todo[start : start + 8]
        images = [Image.open(path).convert("RGB") for path in chunk]
        file_features.update(zip(chunk, service.reranker.image_features(images), strict=True))
    for hit in hits:
        service.memory.put((hit.image_id, hit.content_hash), file_features[hit.path])


def query_once(search, service, query: str, k: int, hits) -> float:
    """One whole query: the first stage (encode + ANN) and the rerank of its top k."""
    start = time.perf_counter()
    search.text_to_image(query, k=k)
    service.rerank_images(query, hits)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

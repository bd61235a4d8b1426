"""`pixsearch demo`: a synthetic library indexed with the demo models that ship in the package, served
with search, rerank, captions and VQA. No download; no training unless asked (`--retrain`, which runs
`demo_recipe` here: the same recipe that made the packaged models)."""

from __future__ import annotations

import functools
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pixsearch.errors import ModelNotFoundError
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.indexer.texts import index_texts
from pixsearch.models import ModelOptions, Role, create
from pixsearch.photos import load_photo
from pixsearch.settings import Settings
from pixsearch.storage import Library
from pixsearch.synth import SynthOptions, items, write_dataset
from pixsearch.train import demo_recipe as recipe

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, float | None], None]
MODELS = recipe.BACKENDS
# Measured on a 2-core AMD EPYC (one thread for torch): generating and indexing a photo ~9 ms,
# loading the models and starting the server ~6 s; the recipe's training ~22 minutes (the reranker 18).
SECONDS_PER_PHOTO = 0.009
START_SECONDS = 6
RETRAIN_MINUTES = 22


def default_demo_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("pixsearch")) / "demo"


@dataclass(frozen=True)
class DemoOptions:
    root: Path
    retrain: bool = False  # train the models here with the recipe, instead of the packaged ones
    quick: bool = False  # a small world (with retrain: a few steps, models untrained): seconds, for tests

    def world(self) -> SynthOptions:
        return recipe.QUICK_WORLD if self.quick else recipe.WORLD

    @property
    def models(self) -> Path:
        return Path(self.root) / "models" if self.retrain else recipe.PACKAGED


@dataclass
class Demo:
    root: Path
    library: Path
    data: Path
    specs: dict[str, str]
    rerank: dict[str, Any]  # k, fusion, sim_weight: the settings the figures were measured with
    measured: dict[str, Any]  # the manifest's figures (test split): R@1 with and without rerank
    trained: dict[str, float] = field(default_factory=dict)  # seconds per model trained in this run
    images: int = 0

    def summary(self) -> list[str]:
        lines = [f"demo library {self.library}: {self.images} photos of {self.data}"]
        for backend, spec in self.specs.items():
            how = f"trained here in {self.trained[backend]:.0f}s" if backend in self.trained else "packaged"
            lines.append(f"  {backend:<13} {spec} ({how})")
        lines.append(rerank_line(self.rerank, self.measured))
        return lines

    def to_json(self) -> dict[str, Any]:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


def rerank_line(rerank: dict[str, Any], measured: dict[str, Any]) -> str:
    """The demo's rerank settings and what they did to text->image R@1 on the world's test split."""
    weight = rerank["sim_weight"]
    if "similarity_weight" in measured:
        weight = f"{measured['similarity_weight']:.2f} ({weight})"
    line = f"rerank (off unless ticked): top {rerank['k']}, {rerank['fusion']}, similarity weight {weight}"
    before, after = measured.get("text_to_image", {}).get("R@1"), measured.get("text_to_image_reranked", {}).get("R@1")
    if before is None or after is None:
        return line
    verdict = "a lift" if after > before else "no lift: the tiny reranker is weaker than the tiny dual encoder"
    return (
        f"{line}; on the {measured.get('images')} test photos text->image R@1 is {before:.1%} without, "
        f"{after:.1%} with ({verdict})"
    )


def photo_count(options: DemoOptions) -> int:
    """How many photos the demo library holds."""
    return sum(1 for _ in items(options.world()))


def plan(options: DemoOptions) -> str:
    """What `pixsearch demo` is about to do and about how long it takes (its first line)."""
    photos = photo_count(options)
    if options.retrain:
        minutes = "a minute" if options.quick else f"about {RETRAIN_MINUTES} minutes on one CPU core"
        return (
            f"pixsearch demo: training the demo models here ({minutes}), then building a synthetic library "
            f"of {photos} photos with them"
        )
    how = "reusing" if _library_current(options) else "building"
    seconds = START_SECONDS + (0 if how == "reusing" else round(photos * SECONDS_PER_PHOTO))
    return (
        f"pixsearch demo: {how} a synthetic library of {photos} photos with the packaged demo models "
        f"(about {seconds} s; `--retrain` trains them here instead, about {RETRAIN_MINUTES} min)"
    )


def prepare_demo(options: DemoOptions, settings: Settings, progress: Progress) -> Demo:
    """Generate the photos, train the models if asked, index the library. Idempotent: a second call
    with the same options reuses the photos and the library.

    Raises:
        ModelNotFoundError: the packaged models are missing (an install without package data).
    """
    root = Path(options.root)
    data = root / "data"
    world = options.world()
    marker = data / "world.json"
    if not marker.exists() or json.loads(marker.read_text()).get("options") != asdict(world):
        shutil.rmtree(data, ignore_errors=True)
        write_dataset(data, world, lambda done, total: progress("generate photos", done, total, None))
    trained: dict[str, float] = {}
    if options.retrain:
        record = recipe.train_and_export(data, root / "train", options.models, progress, quick=options.quick)
        trained = record["training_seconds"]
    else:
        record = recipe.read_manifest(options.models)
    specs = {backend: f"{backend}:{options.models / backend}" for backend in MODELS}
    library_dir = _library(root, options, record)
    library = Library.open(library_dir)
    encoder = create(specs["clip"], Role.DUAL_ENCODER, ModelOptions(device=settings.device, dtype=settings.dtype))
    report = Indexer(library, encoder, IndexOptions(workers=0, batch_size=64)).run(
        [data / "images"], lambda event: progress(f"index ({event.phase})", event.done, event.total, None)
    )
    texts = root / "captions.txt"
    captions = [json.loads(line)["caption"] for line in (data / "captions.jsonl").read_text().splitlines()]
    texts.write_text("\n".join(dict.fromkeys(captions)) + "\n")
    index_texts(library, encoder, texts, "captions", progress=lambda d, t: progress("index texts", d, t, None))
    (library_dir.parent / "library.json").write_text(json.dumps(_library_key(options, record), indent=2))
    return Demo(root, library_dir, data, specs, record["rerank"], record["measured"], trained, report.scanned)


def _library_key(options: DemoOptions, record: dict[str, Any]) -> dict[str, Any]:
    """What the library's vectors depend on: the models (their place and digests) and the world."""
    return {"models": str(options.models), "files": record["files"], "world": asdict(options.world())}


def _library_current(options: DemoOptions, record: dict[str, Any] | None = None) -> bool:
    """Whether the library was built with these models and this world (and so can be reused)."""
    try:
        record = record or recipe.read_manifest(options.models)
        key = json.loads((Path(options.root) / "library.json").read_text())
    except (OSError, ValueError, ModelNotFoundError):
        return False
    return key == _library_key(options, record)


def _library(root: Path, options: DemoOptions, record: dict[str, Any]) -> Path:
    """The library folder, emptied first when it was built with other models or another world."""
    library_dir = root / "library"
    if not _library_current(options, record):
        shutil.rmtree(library_dir, ignore_errors=True)
        (root / "library.json").unlink(missing_ok=True)
    return library_dir


def serve_demo(demo: Demo, settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the demo library with its reranker (the demo's measured fusion settings), captioner and
    answerer until interrupted."""
    from pixsearch.web.server import serve

    settings, options, rerank_hook = demo_server(demo, settings)
    serve(settings, options, host, port, rerank_hook=rerank_hook)


def demo_server(demo: Demo, settings: Settings) -> tuple[Settings, Any, Callable[..., Any]]:
    """What the demo's server runs with: (settings, web options, rerank hook)."""
    from pixsearch.rerank import Fusion, RerankOptions, RerankService, similarity_weight
    from pixsearch.web.options import WebOptions

    settings = settings.with_(
        library=demo.library, db_url=None, model=demo.specs["clip"], reranker=demo.specs["blip-itm"]
    )
    model_options = ModelOptions(device=settings.device, dtype=settings.dtype)
    encoder = create(demo.specs["clip"], Role.DUAL_ENCODER, model_options)
    rerank = RerankOptions(
        k=demo.rerank["k"],
        fusion=Fusion.parse(demo.rerank["fusion"]),
        similarity_weight=similarity_weight(demo.rerank["sim_weight"], encoder),
    )
    reranker = RerankService(
        create(demo.specs["blip-itm"], Role.RERANKER, model_options),
        demo.specs["blip-itm"],
        demo.library,
        rerank,
        functools.partial(load_photo, Library.open(demo.library)),  # as the web reads photos: no links
    )
    options = WebOptions(
        captioner=demo.specs["blip-caption"], answerer=demo.specs["blip-vqa"], reranker=demo.specs["blip-itm"]
    )
    return settings, options, lambda query, hits: reranker.rerank_images(query, hits)

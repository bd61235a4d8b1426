"""`pixsearch demo`: a synthetic library, tiny models trained on it (or reused from the cache), the
library indexed, and the web UI served with search, rerank, captions and VQA. No download."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.indexer.texts import index_texts
from pixsearch.models import ModelOptions, Role, create
from pixsearch.settings import Settings
from pixsearch.storage import Library
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train.loop import TrainOptions
from pixsearch.train.run import TrainJob, run_job
from pixsearch.train.tiny import TINY_RERANKER, TinyConfig

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, float | None], None]
MODELS = ("clip", "blip-itm", "blip-caption", "blip-vqa")
STEPS = {"clip": 300, "blip-itm": 700, "blip-caption": 500, "blip-vqa": 500}
QUICK_STEPS = 3


def default_demo_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("pixsearch")) / "demo"


@dataclass(frozen=True)
class DemoOptions:
    root: Path
    retrain: bool = False
    quick: bool = False  # a few steps and scenes: the whole path in seconds, models untrained
    seed: int = 0

    def synth(self) -> SynthOptions:
        if self.quick:
            return SynthOptions(seed=self.seed, train=24, val=0, test=8, image_size=64, twin_fraction=0.5)
        return SynthOptions(seed=self.seed, train=800, val=0, test=100, image_size=64, twin_fraction=0.5)


@dataclass
class Demo:
    root: Path
    library: Path
    data: Path
    specs: dict[str, str]
    trained: dict[str, float] = field(default_factory=dict)  # seconds per model trained in this run
    images: int = 0

    def summary(self) -> list[str]:
        lines = [f"demo library {self.library}: {self.images} images of {self.data}"]
        for backend, spec in self.specs.items():
            how = f"trained in {self.trained[backend]:.0f}s" if backend in self.trained else "cached"
            lines.append(f"  {backend:<13} {spec} ({how})")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


def prepare_demo(options: DemoOptions, settings: Settings, progress: Progress) -> Demo:
    """Generate the data, train what is not cached, index the library. Idempotent: a second call
    with the same options reuses everything."""
    root = Path(options.root)
    data = root / "data"
    synth = options.synth()
    marker = data / "world.json"
    if not marker.exists() or json.loads(marker.read_text()).get("options") != asdict(synth):
        shutil.rmtree(data, ignore_errors=True)
        write_dataset(data, synth, lambda done, total: progress("generate images", done, total, None))
    specs = {backend: f"{backend}:{root / 'models' / backend}" for backend in MODELS}
    trained: dict[str, float] = {}
    for backend in MODELS:
        seconds = _train(backend, root, data, options, specs["clip"], settings, progress)
        if seconds is not None:
            trained[backend] = seconds
    library_dir = root / "library"
    if trained:  # new weights at the same path: vectors made with the old ones must go
        shutil.rmtree(library_dir, ignore_errors=True)
    model_options = ModelOptions(device=settings.device, dtype=settings.dtype)
    library = Library.open(library_dir)
    encoder = create(specs["clip"], Role.DUAL_ENCODER, model_options)
    report = Indexer(library, encoder, IndexOptions(workers=0, batch_size=64)).run(
        [data / "images"], lambda event: progress(f"index ({event.phase})", event.done, event.total, None)
    )
    texts = root / "captions.txt"
    captions = [json.loads(line)["caption"] for line in (data / "captions.jsonl").read_text().splitlines()]
    texts.write_text("\n".join(dict.fromkeys(captions)) + "\n")
    index_texts(library, encoder, texts, "captions", progress=lambda d, t: progress("index texts", d, t, None))
    images = report.scanned
    return Demo(root, library_dir, data, specs, trained, images)


def _train(
    backend: str, root: Path, data: Path, options: DemoOptions, miner: str, settings: Settings, progress: Progress
) -> float | None:
    output = root / "models" / backend
    steps = QUICK_STEPS if options.quick else STEPS[backend]
    done = output / "train_report.json"
    if done.exists() and not options.retrain and json.loads(done.read_text()).get("steps") == steps:
        return None
    shutil.rmtree(output, ignore_errors=True)
    job = TrainJob(
        backend=backend,
        data=data / ("questions.jsonl" if backend == "blip-vqa" else "captions.jsonl"),
        output=output,
        batch_size=32 if backend == "blip-itm" else 64,
        seed=options.seed,
        miner=miner if backend == "blip-itm" else None,
        negatives=data / "negatives.jsonl" if backend == "blip-itm" else None,
        tiny=TINY_RERANKER if backend == "blip-itm" else TinyConfig(),
        options=TrainOptions(steps=steps, lr=1e-3, warmup=min(30, steps), checkpoint_every=200),
    )
    model_options = ModelOptions(device=settings.device, dtype="float32")
    report = run_job(job, lambda phase, d, t, loss: progress(f"{backend}: {phase}", d, t, loss), model_options)
    return report.seconds


def serve_demo(demo: Demo, settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the demo library with its reranker, captioner and answerer until interrupted."""
    from pixsearch.rerank import RerankOptions, RerankService
    from pixsearch.web.options import WebOptions
    from pixsearch.web.server import serve

    settings = settings.with_(
        library=demo.library, db_url=None, model=demo.specs["clip"], reranker=demo.specs["blip-itm"]
    )
    model_options = ModelOptions(device=settings.device, dtype=settings.dtype)
    reranker = RerankService(
        create(demo.specs["blip-itm"], Role.RERANKER, model_options),
        demo.specs["blip-itm"],
        demo.library,
        # the tiny reranker is weaker than the dual encoder on unrelated scenes: fuse logit with logit
        RerankOptions(similarity_weight=create(demo.specs["clip"], Role.DUAL_ENCODER).logit_scale),
    )
    options = WebOptions(
        captioner=demo.specs["blip-caption"], answerer=demo.specs["blip-vqa"], reranker=demo.specs["blip-itm"]
    )
    serve(settings, options, host, port, rerank_hook=lambda query, hits: reranker.rerank_images(query, hits))

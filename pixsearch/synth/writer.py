"""Writing a synthetic data set: an image folder, captions (JSONL and CSV), questions, hard
negatives, contrast pairs and a Karpathy-split JSON."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pixsearch.errors import ConfigError
from pixsearch.synth.render import render
from pixsearch.synth.world import SWAP_KINDS, Scene, captions, hard_negatives, make_scene, questions, swapped

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SynthOptions:
    """How many scenes per split, image size, and the share of scenes that get a "twin": a second
    image identical but for one swapped attribute or a reversed relation."""

    seed: int = 0
    train: int = 1000
    val: int = 100
    test: int = 200
    image_size: int = 64
    twin_fraction: float = 0.25

    def check(self) -> None:
        if min(self.train, self.val, self.test) < 0 or self.train + self.val + self.test == 0:
            raise ConfigError(f"scene counts must be >= 0 and not all 0, got {self.train}/{self.val}/{self.test}")
        if not 16 <= self.image_size <= 1024:
            raise ConfigError(f"image size must be between 16 and 1024, got {self.image_size}")
        if not 0.0 <= self.twin_fraction <= 1.0:
            raise ConfigError(f"twin fraction must be between 0 and 1, got {self.twin_fraction}")


@dataclass(frozen=True)
class Item:
    """One image of the data set."""

    name: str  # file name under images/<split>/
    split: str
    scene: Scene
    twin_of: str | None = None  # the name of the image this one is the twin of
    twin_kind: str | None = None


@dataclass
class SynthReport:
    root: Path
    images: int = 0
    captions: int = 0
    questions: int = 0
    twins: int = 0
    files: dict[str, str] = field(default_factory=dict)


def items(options: SynthOptions) -> Iterator[Item]:
    """The data set's images in order; a twin directly follows its original, in the same split."""
    options.check()
    counts = {"train": options.train, "val": options.val, "test": options.test}
    index = 0
    for split in SPLITS:
        for _ in range(counts[split]):
            scene = make_scene(options.seed, index)
            name = f"scene_{index:06d}.png"
            yield Item(name, split, scene)
            rng = random.Random(f"twin:{options.seed}:{index}")
            if rng.random() < options.twin_fraction:
                kinds = [k for k in SWAP_KINDS if swapped(scene, k) is not None]
                kind = rng.choice(kinds)
                twin = swapped(scene, kind)
                assert twin is not None
                yield Item(f"scene_{index:06d}_{kind}.png", split, twin, twin_of=name, twin_kind=kind)
            index += 1


def write_dataset(
    root: Path, options: SynthOptions | None = None, progress: Callable[[int, int], None] | None = None
) -> SynthReport:
    """Generate the data set into `root` (created if needed; existing files are overwritten).

    Raises:
        ConfigError: invalid options.
    """
    options = options or SynthOptions()
    options.check()
    root = Path(root)
    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
    report = SynthReport(root)
    all_items = list(items(options))
    files = {
        "captions_jsonl": "captions.jsonl",
        "captions_csv": "captions.csv",
        "questions": "questions.jsonl",
        "negatives": "negatives.jsonl",
        "contrast": "contrast.jsonl",
        "karpathy": "karpathy.json",
    }
    karpathy = []
    by_name = {item.name: item for item in all_items}
    with (
        open(root / files["captions_jsonl"], "w", encoding="utf-8") as caps_jsonl,
        open(root / files["captions_csv"], "w", encoding="utf-8", newline="") as caps_csv,
        open(root / files["questions"], "w", encoding="utf-8") as qa_file,
        open(root / files["negatives"], "w", encoding="utf-8") as neg_file,
        open(root / files["contrast"], "w", encoding="utf-8") as contrast_file,
    ):
        table = csv.writer(caps_csv)
        table.writerow(["image", "caption", "split"])
        for number, item in enumerate(all_items, start=1):
            image = f"images/{item.split}/{item.name}"
            render(item.scene, options.image_size).save(root / image)
            texts = captions(item.scene)
            for text in texts:
                caps_jsonl.write(json.dumps({"image": image, "caption": text, "split": item.split}) + "\n")
                table.writerow([image, text, item.split])
            for question, answer in questions(item.scene):
                qa_file.write(
                    json.dumps({"image": image, "question": question, "answer": answer, "split": item.split}) + "\n"
                )
                report.questions += 1
            for kind, negative in hard_negatives(item.scene):
                neg_file.write(
                    json.dumps(
                        {"image": image, "caption": texts[0], "negative": negative, "kind": kind, "split": item.split}
                    )
                    + "\n"
                )
            if item.twin_of is not None:
                report.twins += 1
                for query_image, distractor, query in (
                    (f"images/{item.split}/{item.twin_of}", image, captions(by_name[item.twin_of].scene)[0]),
                    (image, f"images/{item.split}/{item.twin_of}", texts[0]),
                ):
                    contrast_file.write(
                        json.dumps(
                            {
                                "image": query_image,
                                "distractor": distractor,
                                "query": query,
                                "kind": item.twin_kind,
                                "split": item.split,
                            }
                        )
                        + "\n"
                    )
            karpathy.append(_karpathy_entry(item, number - 1, texts, report.captions))
            report.images += 1
            report.captions += len(texts)
            if progress:
                progress(number, len(all_items))
    (root / files["karpathy"]).write_text(json.dumps({"dataset": "pixsearch-synthetic", "images": karpathy}))
    (root / "world.json").write_text(json.dumps({"generator": "pixsearch.synth", "options": asdict(options)}, indent=2))
    report.files = files
    return report


def _karpathy_entry(item: Item, image_id: int, texts: list[str], first_sentence: int) -> dict[str, object]:
    sentences = [
        {"raw": text, "tokens": text.split(), "imgid": image_id, "sentid": first_sentence + i}
        for i, text in enumerate(texts)
    ]
    return {
        "filepath": f"images/{item.split}",
        "filename": item.name,
        "imgid": image_id,
        "split": item.split,
        "sentids": [s["sentid"] for s in sentences],
        "sentences": sentences,
    }

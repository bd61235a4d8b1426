"""A tiny CLIP trained here, in about half a minute on one thread, on the synthetic world of
`pixsearch.synth` (whose truth is known), with the existing training code.

Beside the world's two captions per scene, each thing in a scene is also captioned on its own
("a red circle", "a circle", "red", and as the zero-shot tagger prompts, "a photo of red."): those
are the short queries people type, and the world's truth says exactly which photos they are true of.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pixsearch.synth import SynthOptions, items, render, write_dataset
from pixsearch.synth.world import COLOURS, RELATIONS, SHAPES, SIZES, Scene
from pixsearch.train import TinyConfig, TrainJob, TrainOptions, run_job

WORLD = SynthOptions(seed=0, train=800, val=0, test=0, image_size=32, twin_fraction=0.0)
STEPS = 400
# What the world's model knows, and so what a photo of it is judged against (see search.relevance).
BACKGROUND = (*COLOURS, *SHAPES, *SIZES, *(relation.split()[0] for relation in RELATIONS))


@dataclass(frozen=True)
class WorldModel:
    spec: str
    seconds: float


def colours_of(scene: Scene) -> set[str]:
    return {scene.first.colour, scene.second.colour}


def train_world_model(root: Path) -> WorldModel:
    """Train (or reuse, when `root` already holds one) the world's tiny CLIP."""
    model = root / "clip"
    if (model / "config.json").exists():
        return WorldModel(f"clip:{model}", 0.0)
    torch.set_num_threads(1)
    started = time.perf_counter()
    data = root / "data"
    write_dataset(data, WORLD)
    rows = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines()]
    for item in items(WORLD):
        for thing in (item.scene.first, item.scene.second):
            for text in (
                f"a {thing.colour} {thing.shape}",
                f"a {thing.shape}",
                thing.colour,
                f"a photo of {thing.colour}.",
                f"a photo of a {thing.shape}.",
            ):
                rows.append({"image": f"images/{item.split}/{item.name}", "caption": text, "split": item.split})
    captions = data / "captions_and_things.jsonl"
    captions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    job = TrainJob(
        "clip",
        captions,
        model,
        batch_size=64,
        tiny=TinyConfig(patch_size=8),
        options=TrainOptions(steps=STEPS, lr=3e-3, warmup=30, checkpoint_every=10_000),
    )
    run_job(job)
    return WorldModel(f"clip:{model}", time.perf_counter() - started)


def write_scenes(folder: Path, scenes: list[tuple[str, Scene]], size: int = 32) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, scene in scenes:
        render(scene, size).save(folder / name)


def scenes(seed: int, count: int) -> list[tuple[str, Scene]]:
    """`count` scenes of the world drawn with `seed` (not the training seed), as (file name, scene)."""
    options = SynthOptions(seed=seed, train=0, val=0, test=count, image_size=32, twin_fraction=0.0)
    return [(item.name, item.scene) for item in items(options)]

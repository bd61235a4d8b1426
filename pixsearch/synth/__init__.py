"""A synthetic world of coloured shapes: images, captions, questions and hard negatives, by seed."""

from __future__ import annotations

from pixsearch.synth.render import render
from pixsearch.synth.world import Scene, Thing, captions, hard_negatives, make_scene, questions, swapped, vocabulary
from pixsearch.synth.writer import SynthOptions, SynthReport, items, write_dataset

__all__ = [
    "Scene",
    "SynthOptions",
    "SynthReport",
    "Thing",
    "captions",
    "hard_negatives",
    "items",
    "make_scene",
    "questions",
    "render",
    "swapped",
    "vocabulary",
    "write_dataset",
]

"""The synthetic world: scenes of two coloured shapes, what can be said about them, and what cannot.

A scene holds two things and the relation of the first to the second. Everything said about a
scene (captions, questions and answers, false "hard negative" captions) is derived from it, and a
scene is drawn from its own seeded generator, so scene `i` of seed `s` is the same whatever else is
generated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 205, 40),
    "purple": (140, 60, 185),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.11, "large": 0.2}  # radius as a fraction of the image side
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SWAP_KINDS = ("colour", "size", "shape", "relation")
_MAX_OFF_AXIS = 0.15  # how far the two things may differ across the relation's axis


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    size: str
    x: float  # centre, as fractions of the image side (0 left / top, 1 right / bottom)
    y: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Two things; `relation` says where the first is relative to the second."""

    first: Thing
    second: Thing
    relation: str
    background: tuple[int, int, int] = (245, 245, 245)


def make_scene(seed: int, index: int) -> Scene:
    """Scene number `index` of the world drawn with `seed` (independent of every other scene)."""
    rng = random.Random(seed * 1_000_003 + index)
    relation = rng.choice(RELATIONS)
    colour_a, colour_b = rng.sample(list(COLOURS), 2)  # distinct, so a colour swap always changes the scene
    size_a, size_b = rng.choice(list(SIZES)), rng.choice(list(SIZES))
    shape_a, shape_b = rng.choice(SHAPES), rng.choice(SHAPES)
    grey = rng.randint(225, 255)
    (xa, ya), (xb, yb) = _place(rng, SIZES[size_a], SIZES[size_b], relation)
    return Scene(
        Thing(colour_a, shape_a, size_a, xa, ya),
        Thing(colour_b, shape_b, size_b, xb, yb),
        relation,
        (grey, grey, grey),
    )


def _place(rng: random.Random, ra: float, rb: float, relation: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centres of the first and second thing, the first `relation` the second, not overlapping."""
    margin = 0.02
    while True:
        # along the axis: the first thing before (left / above) the second, with a visible gap
        a = rng.uniform(ra + margin, 1 - ra - margin)
        b = rng.uniform(rb + margin, 1 - rb - margin)
        if b - a < ra + rb + 0.04:
            continue
        across_a = rng.uniform(max(ra, rb) + margin, 1 - max(ra, rb) - margin)
        across_b = across_a + rng.uniform(-_MAX_OFF_AXIS, _MAX_OFF_AXIS)
        if not rb + margin <= across_b <= 1 - rb - margin:
            continue
        if relation in ("right of", "below"):
            a, b = b, a
        if relation in ("left of", "right of"):
            return (a, across_a), (b, across_b)
        return (across_a, a), (across_b, b)


def captions(scene: Scene) -> list[str]:
    """Two true captions: the first thing related to the second, and the other way round."""
    a, b = scene.first.phrase(), scene.second.phrase()
    return [f"a {a} {scene.relation} a {b}", f"a {b} {OPPOSITE[scene.relation]} a {a}"]


def swapped(scene: Scene, kind: str) -> Scene | None:
    """The scene with one attribute swapped between the two things, or the relation reversed.

    Returns None when the swap changes nothing (two things of the same size, say).
    """
    a, b = scene.first, scene.second
    if kind == "relation":
        if scene.relation in ("left of", "right of"):
            return replace(
                scene, first=replace(a, x=1 - a.x), second=replace(b, x=1 - b.x), relation=OPPOSITE[scene.relation]
            )
        return replace(
            scene, first=replace(a, y=1 - a.y), second=replace(b, y=1 - b.y), relation=OPPOSITE[scene.relation]
        )
    if kind not in ("colour", "size", "shape"):
        raise ValueError(f"swap kind {kind!r} is not one of {', '.join(SWAP_KINDS)}")
    if getattr(a, kind) == getattr(b, kind):
        return None
    if kind == "size":  # keep the things apart: a grown thing may need the centres moved, so re-place them
        return _resized(scene)
    return replace(scene, first=replace(a, **{kind: getattr(b, kind)}), second=replace(b, **{kind: getattr(a, kind)}))


def _resized(scene: Scene) -> Scene:
    a, b = scene.first, scene.second
    new_a, new_b = replace(a, size=b.size), replace(b, size=a.size)
    horizontal = scene.relation in ("left of", "right of")
    gap = new_a.radius + new_b.radius + 0.04
    along_a, along_b = (a.x, b.x) if horizontal else (a.y, b.y)
    if abs(along_a - along_b) < gap:
        middle = (along_a + along_b) / 2
        sign = 1 if along_b > along_a else -1
        along_a, along_b = middle - sign * gap / 2, middle + sign * gap / 2
    clamp = lambda v, r: min(max(v, r + 0.01), 1 - r - 0.01)  # noqa: E731
    along_a, along_b = clamp(along_a, new_a.radius), clamp(along_b, new_b.radius)
    if horizontal:
        new_a, new_b = (
            replace(new_a, x=along_a, y=clamp(a.y, new_a.radius)),
            replace(new_b, x=along_b, y=clamp(b.y, new_b.radius)),
        )
    else:
        new_a, new_b = (
            replace(new_a, y=along_a, x=clamp(a.x, new_a.radius)),
            replace(new_b, y=along_b, x=clamp(b.x, new_b.radius)),
        )
    return replace(scene, first=new_a, second=new_b)


def hard_negatives(scene: Scene) -> list[tuple[str, str]]:
    """False captions that differ from the first true caption by one swap: [(kind, caption)]."""
    out = []
    for kind in SWAP_KINDS:
        other = swapped(scene, kind)
        if other is not None:
            out.append((kind, captions(other)[0]))
    return out


def questions(scene: Scene) -> list[tuple[str, str]]:
    """Question-answer pairs that the scene answers without ambiguity: [(question, answer)]."""
    a, b = scene.first, scene.second
    pairs = []
    for thing, other in ((a, b), (b, a)):
        pairs.append((f"what shape is the {thing.colour} one?", thing.shape))
        pairs.append((f"how big is the {thing.colour} {thing.shape}?", thing.size))
        if thing.shape != other.shape:
            pairs.append((f"what colour is the {thing.shape}?", thing.colour))
    pairs.append((f"is the {a.colour} {a.shape} {scene.relation} the {b.colour} {b.shape}?", "yes"))
    pairs.append((f"is the {a.colour} {a.shape} {OPPOSITE[scene.relation]} the {b.colour} {b.shape}?", "no"))
    pairs.append((f"where is the {a.colour} {a.shape}?", _where(scene.relation)))
    return pairs


def _where(relation: str) -> str:
    return {"left of": "left", "right of": "right", "above": "top", "below": "bottom"}[relation]


def vocabulary() -> list[str]:
    """Every word the world's captions, questions and answers use, in a fixed order."""
    words = ["a", "the", "one", "is", "what", "how", "where", "colour", "color", "shape", "big", "of", "and"]
    words += list(COLOURS) + list(SHAPES) + list(SIZES) + ["left", "right", "above", "below", "top", "bottom"]
    words += ["yes", "no", "?", "photo", "picture", "there", "shapes"]
    return list(dict.fromkeys(words))

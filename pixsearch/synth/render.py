"""Drawing a scene with PIL."""

from __future__ import annotations

from PIL import Image, ImageDraw

from pixsearch.synth.world import COLOURS, Scene, Thing

_SUPERSAMPLE = 4  # draw large and shrink: smooth edges at 32 px


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as an RGB image of `size` x `size` pixels."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), scene.background)
    pen = ImageDraw.Draw(image)
    for thing in (scene.first, scene.second):
        _draw(pen, thing, big)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _draw(pen: ImageDraw.ImageDraw, thing: Thing, side: int) -> None:
    cx, cy, r = thing.x * side, thing.y * side, thing.radius * side
    fill = COLOURS[thing.colour]
    if thing.shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif thing.shape == "square":
        s = r * 0.88  # a square of the same area feel as the circle
        pen.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)

"""Text in photos, read with RapidOCR: PP-OCRv4 detection and recognition (Chinese and English)
as ONNX models that ship inside the `rapidocr-onnxruntime` package (Apache-2.0), so no download.

The text of a photo is its lines, top to bottom, each kept only when the recogniser is confident
(`min_score`) and it holds at least `min_chars` letters or digits: textures (bricks, leaves, fabric)
otherwise read as short nonsense.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from PIL import Image

from pixsearch.errors import ModelLoadError, ModelNotFoundError

log = logging.getLogger(__name__)

ENGINE = "rapidocr-onnxruntime PP-OCRv4"


@dataclass(frozen=True)
class OcrLine:
    text: str
    score: float
    box: tuple[tuple[float, float], ...]  # four corners, in the pixels of the image given


@dataclass(frozen=True)
class OcrResult:
    lines: tuple[OcrLine, ...]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def score(self) -> float:
        """Mean confidence of the kept lines (0 when there are none)."""
        return sum(line.score for line in self.lines) / len(self.lines) if self.lines else 0.0


@dataclass(frozen=True)
class OcrOptions:
    min_score: float = 0.6
    min_chars: int = 2
    max_side: int = 2048  # larger photos are shrunk first: text that small is rarely worth reading
    threads: int = 0  # onnxruntime threads; 0: its default (all cores)


class OcrReader:
    """Reads text in images. Cheap to build; `load()` opens the ONNX sessions once."""

    def __init__(self, options: OcrOptions | None = None) -> None:
        self.options = options or OcrOptions()
        self._engine: Any = None

    def load(self) -> None:
        """Raises ModelNotFoundError when rapidocr-onnxruntime is not installed, ModelLoadError when it fails."""
        if self._engine is not None:
            return
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as error:
            raise ModelNotFoundError(
                "reading text in photos needs the 'rapidocr-onnxruntime' package (its models ship inside it): "
                "pip install rapidocr-onnxruntime"
            ) from error
        threads = {"intra_op_num_threads": self.options.threads} if self.options.threads > 0 else {}
        try:
            self._engine = RapidOCR(**threads)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for a bad model
            raise ModelLoadError(f"RapidOCR could not start: {type(error).__name__}: {error}") from error
        # RapidOCR's logger writes DEBUG lines to its own stream handler; keep only its warnings
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)

    def close(self) -> None:
        self._engine = None

    def read(self, image: Image.Image) -> OcrResult:
        """The confident lines of text in `image`, top to bottom."""
        self.load()
        image = image.convert("RGB")
        if max(image.size) > self.options.max_side:
            image = image.copy()
            image.thumbnail((self.options.max_side, self.options.max_side), Image.Resampling.LANCZOS)
        found, _elapsed = self._engine(image)
        lines: list[OcrLine] = []
        for box, text, score in found or []:
            text = " ".join(str(text).split())
            if float(score) < self.options.min_score or sum(c.isalnum() for c in text) < self.options.min_chars:
                continue
            lines.append(OcrLine(text, float(score), tuple((float(x), float(y)) for x, y in box)))
        return OcrResult(tuple(lines))

"""OFA visual-entailment preprocessing: the image tensor and the prompt ids (ModelScope's
`OfaVisualEntailmentPreprocessor`, inference mode, one hypothesis and no second text)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from pixsearch.models.ofa.config import OfaTaskConfig
from pixsearch.models.ofa.tokenizer import OfaTokenizer
from pixsearch.models.preprocess import HALF, ImageTransform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MANY_SPACES = re.compile(r"\s{2,}")


def pre_caption(caption: str, max_words: int | None = None) -> str:
    """OFA's caption clean-up: lower-case, drop leading punctuation, '-' and '/' to spaces,
    collapse runs of whitespace, then keep at most `max_words` space-separated words."""
    caption = caption.lower().lstrip(",.!?*#:;~").replace("-", " ").replace("/", " ").replace("<person>", "person")
    caption = _MANY_SPACES.sub(" ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    if max_words is not None and len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


@dataclass(frozen=True)
class OfaTextInputs:
    """The token ids for one hypothesis.

    `input_ids` is the encoder source `<s> prompt </s>`. `decoder_prompt` is what the traverse mode
    feeds the decoder before each answer, and `prefix_tokens` what the generation mode forces:
    both are the source without `</s>` for prompt_type 'prev_output', and `<s>` / nothing for 'none'.
    """

    input_ids: list[int]
    decoder_prompt: list[int]
    prefix_tokens: list[int]


class OfaProcessor:
    """Turns (image, hypothesis) into model inputs, exactly as ModelScope's preprocessor does."""

    def __init__(self, tokenizer: OfaTokenizer, task: OfaTaskConfig) -> None:
        self.tokenizer = tokenizer
        self.task = task
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if task.imagenet_default_mean_and_std else (HALF, HALF)
        # torchvision Resize((s, s), BICUBIC) on a PIL image is PIL's bicubic resize, aspect ratio not kept.
        self.transform = ImageTransform(task.patch_image_size, mode="squash", resample="bicubic", mean=mean, std=std)

    def image(self, image: Image.Image) -> npt.NDArray[np.float32]:
        """PIL image -> float32 [3, patch_image_size, patch_image_size]."""
        return self.transform(image)

    def text(self, hypothesis: str) -> OfaTextInputs:
        """Hypothesis -> prompt ids; the prompt is cut to `max_src_length` BPE tokens before <s>/</s> are added."""
        prompt = self.task.prompt.format(pre_caption(hypothesis, self.task.max_src_length))
        tok = self.tokenizer
        source = [tok.bos_token_id, *tok.encode(prompt, self.task.max_src_length), tok.eos_token_id]
        if self.task.prompt_type == "prev_output":
            return OfaTextInputs(source, source[:-1], source[:-1])
        return OfaTextInputs(source, [tok.bos_token_id], [])

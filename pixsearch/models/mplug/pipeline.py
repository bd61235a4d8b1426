"""A drop-in for ModelScope's `pipeline(task, model=dir)` on mPLUG directories, run natively.

Inputs and outputs are those of ModelScope's pipelines:
- 'image-text-retrieval': `{'image': ..., 'text' or 'question': str}` -> `{'scores': [p_no_match, p_match]}`
- 'visual-question-answering': `{'image': ..., 'question': str}` -> `{'text': str}`
- 'image-captioning': an image (or `{'image': ...}`) -> `{'caption': str}`
An image is a PIL image or a path. Strings are decoded exactly as ModelScope decodes them
(`BertTokenizer.decode(top1, skip_special_tokens=True)`), so Chinese comes back with spaces between
characters, as it does there; the Captioner/Answerer backends join CJK text instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from pixsearch.errors import ConfigError
from pixsearch.models.mplug.config import CAPTION, RETRIEVAL, TASKS, VQA, read_task
from pixsearch.models.mplug.processor import open_image
from pixsearch.models.spec import ModelOptions, ModelSpec

if TYPE_CHECKING:
    from pixsearch.models.mplug.backends import MplugAnswerer, MplugCaptioner, MplugItmReranker

ImageInput = str | Path | Image.Image


def _split(inputs: Any, task: str) -> tuple[ImageInput, str]:
    """(image, text) from the forms ModelScope's MPlugPreprocessor accepts."""
    if isinstance(inputs, (Image.Image, str, Path)):
        image, text = inputs, None
    elif isinstance(inputs, tuple):
        image, text = inputs[0], (inputs[1] if len(inputs) > 1 else None)
    elif isinstance(inputs, Mapping) and "image" in inputs:
        image, text = inputs["image"], inputs.get("text", inputs.get("question"))
    else:
        raise ConfigError("mPLUG pipeline input must be an image, a path, an (image, text) tuple or {'image': ...}")
    if task == CAPTION:
        return image, ""
    if not isinstance(text, str):
        raise ConfigError(f"mPLUG {task} needs a 'text' or 'question' string next to the image")
    return image, text


class MplugPipeline:
    """`MplugPipeline(task, model_dir)(inputs)` -> the dict ModelScope's pipeline returns.

    Args:
        task: 'image-text-retrieval', 'visual-question-answering' or 'image-captioning';
            None takes the task the directory's configuration.json names.
        model_dir: a ModelScope mPLUG directory.
        options: device and dtype; float32 by default, as ModelScope runs.

    Raises:
        ConfigError: unknown task, or one the directory does not hold (at the first call).
    """

    def __init__(self, task: str | None, model_dir: str | Path, options: ModelOptions | None = None) -> None:
        self.model_dir = Path(model_dir)
        task = task or read_task(self.model_dir)
        if task not in TASKS:
            raise ConfigError(f"mPLUG pipeline task {task!r} is not one of {', '.join(TASKS)}")
        self.task = task
        self.options = options or ModelOptions(dtype="float32")
        self._backend: MplugItmReranker | MplugAnswerer | MplugCaptioner | None = None

    @property
    def backend(self) -> MplugItmReranker | MplugAnswerer | MplugCaptioner:
        if self._backend is None:
            from pixsearch.models.mplug import backends

            classes = {
                RETRIEVAL: backends.MplugItmReranker,
                VQA: backends.MplugAnswerer,
                CAPTION: backends.MplugCaptioner,
            }
            names = {RETRIEVAL: "mplug-itm", VQA: "mplug-vqa", CAPTION: "mplug-caption"}
            spec = ModelSpec(names[self.task], str(self.model_dir))
            self._backend = classes[self.task](spec, self.options)
        return self._backend

    def __call__(self, inputs: Any) -> dict[str, Any]:
        from pixsearch.models.mplug.backends import MplugAnswerer, MplugItmReranker

        image_input, text = _split(inputs, self.task)
        image = open_image(image_input)
        backend = self.backend
        if isinstance(backend, MplugItmReranker):
            logits = torch.from_numpy(backend.pair_logits(text, backend.image_features([image])))
            return {"scores": torch.softmax(logits, dim=-1)[0].tolist()}
        if isinstance(backend, MplugAnswerer):
            hyps = backend.hypotheses([image], [text])[0]
            return {"text": backend.tokenizer.decode(hyps[0].ids)}
        hyps = backend.hypotheses([image])[0]
        return {"caption": backend.tokenizer.decode(hyps[0].ids)}

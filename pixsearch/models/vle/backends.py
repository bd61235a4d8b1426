"""pixsearch backends on native VLE: an ITM reranker, a VQA answerer and a patch scorer."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch import nn

from pixsearch.errors import ConfigError
from pixsearch.models.hub import resolve_source
from pixsearch.models.image_state import ImageState, score_items, states_in_chunks
from pixsearch.models.roles import Scores
from pixsearch.models.runtime import resolve_device, resolve_dtype
from pixsearch.models.spec import ModelOptions, ModelSpec
from pixsearch.models.vle.heads import Head
from pixsearch.models.vle.itm import VleImageState, VleItmPass
from pixsearch.models.vle.processor import VleProcessor
from pixsearch.models.vle.weights import LoadReport, load_vle

log = logging.getLogger(__name__)

REQUIRED_FILES = ("config.json", "spm.model", "preprocessor_config.json")
ITM_MATCH = 1  # the ITM head's "match" class (the original pipeline's id2label {0: False, 1: True})
BATCH = 16  # images per vision-tower or fusion call, to bound memory on big rerank lists


class _VleBackend:
    """Shared loading for the VLE backends: the constructor stores, `load()` loads once."""

    head: Head = Head.BASE

    def __init__(self, spec: ModelSpec, options: ModelOptions) -> None:
        self.spec = spec
        self.options = options
        self._model: Any = None
        self._processor: VleProcessor | None = None
        self._device = torch.device("cpu")
        self.load_report: LoadReport | None = None

    def load(self) -> None:
        """Load weights and processor (idempotent).

        Raises:
            ModelNotFoundError: the spec's source cannot be found.
            ModelLoadError: the checkpoint does not fit (keys named).
        """
        if self._model is not None:
            return
        model_dir: Path = resolve_source(self.spec, required=REQUIRED_FILES)
        device, dtype = resolve_device(self.options), resolve_dtype(self.options)
        processor = VleProcessor.from_dir(model_dir)
        model, report = load_vle(model_dir, self.head, dtype=dtype, device=device)
        log.info("loaded %s (%s, %s) from %s", self.spec, dtype, device, model_dir)
        self._model, self._processor, self._device, self.load_report = model, processor, device, report

    def close(self) -> None:
        self._model = None
        self._processor = None

    @property
    def model(self) -> nn.Module:
        self.load()
        return self._model

    @property
    def processor(self) -> VleProcessor:
        self.load()
        assert self._processor is not None
        return self._processor

    def _inputs(self, texts: Sequence[str], images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        return {k: v.to(self._device) for k, v in self.processor(texts, images).items()}


class VleItmReranker(_VleBackend):
    """Reranker: the ITM logit of the match class. The vision tower output is the cacheable image side,
    and below it the image state (`VleImageState`: what the first co-attention layer does with the image
    alone); scoring runs `VleItmPass`, every candidate of a batch in one pass."""

    head = Head.ITM
    _pass: VleItmPass | None = None

    def close(self) -> None:
        super().close()
        self._pass = None

    @property
    def itm_pass(self) -> VleItmPass:
        if self._pass is None:
            self._pass = VleItmPass(self.model)
        return self._pass

    def image_features(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """-> one CPU tensor [1 + patches, vision_hidden] per image (the post-layernorm vision tower output)."""
        model, features = self.model, []
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                pixels = self.processor.pixels(images[start : start + BATCH]).to(self._device)
                batch = model.vle.get_image_features(pixels)
                features.extend(row.to("cpu").clone() for row in batch)
        return features

    def image_states(self, features: Sequence[Any]) -> list[VleImageState]:
        """The first co-attention layer's image-only work per image (see `VleImageState`)."""
        return states_in_chunks(features, BATCH, lambda chunk: self.itm_pass.states(self._stack(chunk)))

    def score_items(
        self, query: str, items: Sequence[Any], keep: bool = False
    ) -> tuple[Scores, list[ImageState | None]]:
        """ITM match logits of `query` against images given as features or states (see `image_state.score_items`)."""
        model, itm = self.model, self.itm_pass
        tokens = {k: v.to(self._device) for k, v in self.processor.tokenizer([query]).items()}
        with torch.inference_mode():
            # the text tower runs once; only the fusion and the head see every candidate
            text = model.vle.get_text_features(tokens["input_ids"], tokens["attention_mask"])
            return score_items(
                items,
                VleImageState,
                lambda features, own: itm.states(self._stack(features), own),
                lambda states: itm.logits(text, tokens["attention_mask"], states)[:, ITM_MATCH],
                BATCH,
                keep,
            )

    def score_features(self, query: str, features: Sequence[Any]) -> Scores:
        """-> float32[k], the ITM match logit of `query` against each cached image feature."""
        return np.ascontiguousarray(self.score_items(query, features)[0], dtype=np.float32)

    def score(self, query: str, images: Sequence[Image.Image]) -> Scores:
        """-> float32[k], the ITM match logit of `query` against each image."""
        return self.score_features(query, self.image_features(images))

    def _stack(self, features: Sequence[Any]) -> torch.Tensor:
        shapes = {tuple(torch.as_tensor(f).shape) for f in features}
        if len(shapes) != 1:
            raise ValueError(f"VLE image features of different shapes cannot be scored together: {sorted(shapes)}")
        dtype = self.model.vle.image_projection_layer.weight.dtype
        return torch.stack([torch.as_tensor(f) for f in features]).to(self._device, dtype)


class VleAnswerer(_VleBackend):
    """VQA over the checkpoint's answer vocabulary, as the original VLEForVQAPipeline."""

    head = Head.VQA

    def answer(self, image: Image.Image, question: str, top_k: int = 5) -> list[tuple[str, float]]:
        """-> the `top_k` most probable answers (softmax over the vocabulary), most probable first.

        Raises:
            ConfigError: top_k below 1.
        """
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        model = self.model
        with torch.inference_mode():
            logits = model(**self._inputs([question], [image]))[0].float()
        probs = torch.softmax(logits, dim=-1)
        top = torch.sort(probs, descending=True)
        k = min(top_k, probs.shape[0])
        labels = model.config.id2label
        return [(labels[int(i)], float(p)) for p, i in zip(top.values[:k], top.indices[:k], strict=True)]


class VlePatchBoxClassifier(_VleBackend):
    """Patch-box classification: which image patches the text describes."""

    head = Head.PBC

    def patch_scores(self, image: Image.Image, text: str) -> npt.NDArray[np.float32]:
        """-> float32[rows, cols]: per patch, the softmax probability of the match class (row-major patches)."""
        model = self.model
        with torch.inference_mode():
            logits = model(**self._inputs([text], [image]))[0].float()
        probs = torch.softmax(logits, dim=-1)[:, 1].cpu().numpy()
        grid = math.isqrt(probs.shape[0])  # square images, so the patches form a square grid
        return probs.reshape(grid, grid).astype(np.float32, copy=False)

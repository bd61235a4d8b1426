"""BLIP backends on transformers: ITM reranking, captioning and visual question answering.

All three share one loader (`blip_loading.load_blip`): weights checked key by key, the tokenizer
from the checkpoint directory, the pixel transform from its `preprocessor_config.json`, and the
attention of the vision tower and of the text encoders routed through `scaled_dot_product_attention`
(decoders keep transformers' eager path with its KV cache).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from pixsearch.errors import ConfigError
from pixsearch.models.blip_itm import BlipItmPass, BlipKeyValues
from pixsearch.models.blip_loading import LoadedBlip, load_blip
from pixsearch.models.image_state import ImageState, states_in_chunks
from pixsearch.models.preprocess import ImageTransform, stack
from pixsearch.models.roles import Scores
from pixsearch.models.spec import ModelOptions, ModelSpec

MATCH = 1  # index of the "match" class in BLIP's ITM head
ITM_BATCH = 64  # candidates per ITM pass; image keys/values in flight grow by 3.5 MB per candidate at base size


@dataclass(frozen=True)
class BlipGeneration:
    """Decoding settings; deterministic (no sampling). Defaults follow BLIP's own captioning setup."""

    num_beams: int = 3
    max_new_tokens: int = 20
    min_new_tokens: int = 5


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _BlipBackend:
    """Shared life cycle: cheap constructor, idempotent `load()`, `close()`, pixels from PIL images."""

    _model_class_name: str = ""

    def __init__(self, spec: ModelSpec, options: ModelOptions, *, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.spec = spec
        self.options = options
        self.batch_size = batch_size
        self._loaded: LoadedBlip | None = None

    def load(self) -> None:
        if self._loaded is None:
            import transformers

            self._loaded = load_blip(getattr(transformers, self._model_class_name), self.spec, self.options)

    def close(self) -> None:
        self._loaded = None

    @property
    def _blip(self) -> LoadedBlip:
        self.load()
        assert self._loaded is not None
        return self._loaded

    @property
    def transform(self) -> ImageTransform:
        """The pure PIL -> float32[3, H, W] preprocessing (loads the model if needed)."""
        return self._blip.transform

    def _pixel_tensor(self, pixels: npt.NDArray[np.float32]) -> torch.Tensor:
        blip = self._blip
        size = blip.transform.size
        # a smaller image would not fail in BLIP: it silently uses a slice of the position embeddings
        if pixels.ndim != 4 or pixels.shape[1:] != (3, size, size):
            raise ConfigError(f"model {self.spec}: pixels must be float32[n, 3, {size}, {size}], got {pixels.shape}")
        return torch.from_numpy(np.ascontiguousarray(pixels)).to(blip.device, blip.dtype)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        transform = self._blip.transform
        return self._pixel_tensor(stack([transform(image) for image in images]))


class BlipItmReranker(_BlipBackend):
    """Reranks images for a text query with BLIP's image-text matching (ITM) head.

    The score is the ITM logit of "match": the number LAVIS adds to the ITC cosine when it reranks.
    Like transformers' `BlipForImageTextRetrieval.forward`, the text starts with [CLS]; the original
    BLIP code puts its [ENC] token there instead.

    Speed and memory (BLIP-base, 384 px, 16-token query): the vision tower costs ~110 GFLOP per
    image, the image keys/values of the 12 cross-attention layers ~16 GFLOP and the text side
    ~3.5 GFLOP per candidate. So the work splits in three tiers the caller can cache:
    `image_features` (the vision tower's last hidden state, [577, 768], 1.7 MiB in float32, half as
    float16 on disk), `image_states` (the keys/values, `BlipKeyValues`, 42.5 MB per image in float32)
    and the per-query rest, which `score_items` runs for up to ITM_BATCH candidates as one batch
    (see `blip_itm.BlipItmPass`). Attention runs through SDPA everywhere (transformers has no SDPA
    path for BLIP).
    """

    _model_class_name = "BlipForImageTextRetrieval"

    @torch.inference_mode()
    def pixel_features(self, pixels: npt.NDArray[np.float32]) -> list[torch.Tensor]:
        """Vision-tower outputs for preprocessed pixels (see `transform`).

        Args:
            pixels: float32[n, 3, H, W].

        Returns:
            n CPU tensors [tokens, width], each owning its own memory.
        """
        vision = self._blip.model.vision_model
        features: list[torch.Tensor] = []
        for start in range(0, len(pixels), self.batch_size):
            hidden = vision(pixel_values=self._pixel_tensor(pixels[start : start + self.batch_size])).last_hidden_state
            # clone: a view would keep the whole batch's storage alive in the caller's cache
            features.extend(row.clone() for row in hidden.cpu().unbind(0))
        return features

    def image_features(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """Per-image vision features to cache and pass to `score_features`.

        Returns:
            one CPU tensor [tokens, width] per image, in the model dtype.
        """
        if not images:
            return []
        transform = self.transform
        return self.pixel_features(stack([transform(image) for image in images]))

    def image_states(self, features: Sequence[Any]) -> list[BlipKeyValues]:
        """Each image's cross-attention keys and values for every text layer, from its vision feature.

        Returns:
            one BlipKeyValues per feature ([layers, 2, heads, tokens, head_size] in the model dtype:
            42.5 MB per image at BLIP-base size in float32), for `score_items`.
        """
        return states_in_chunks(features, ITM_BATCH, lambda chunk: self._pass.states(self._stack_features(chunk)))

    def score_items(
        self, query: str, items: Sequence[Any], keep: bool = False
    ) -> tuple[Scores, list[ImageState | None]]:
        """ITM "match" logits of `query` against images given as vision features or as states.

        All items run as one batch (up to ITM_BATCH at a time); a state skips its image's key/value
        projections. With `keep`, the states of the images given as features come back too (they
        were computed anyway), for the caller to cache.

        Returns:
            float32[k] and, per item, its state (None for a feature when not `keep`).

        Raises:
            ConfigError: a feature or state that does not fit this model.
        """
        scores: list[torch.Tensor] = []
        states: list[ImageState | None] = []
        with torch.inference_mode():
            input_ids, attention_mask = self._tokens([query])
            for chunk in _chunks(items, ITM_BATCH):
                logits, chunk_states = self._pass.logits(input_ids, attention_mask, self._prepare(chunk), keep)
                scores.append(logits[:, MATCH].float().cpu())
                states.extend(chunk_states)
        return (torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float32)), states

    def score_features(self, query: str, features: Sequence[Any]) -> Scores:
        """ITM "match" logits of `query` against cached image features.

        Args:
            query: the text.
            features: tensors (or arrays) [tokens, width] from `image_features`.

        Returns:
            float32[k], higher is a better match.

        Raises:
            ConfigError: a feature whose shape does not fit this model.
        """
        return self.itm_logits(query, features)[:, MATCH].copy()

    def score(self, query: str, images: Sequence[Image.Image]) -> Scores:
        return self.score_features(query, self.image_features(images))

    def match_probabilities(self, query: str, features: Sequence[Any]) -> Scores:
        """softmax over the two ITM logits: float32[k] probabilities that each image matches."""
        logits = torch.from_numpy(self.itm_logits(query, features))
        return torch.softmax(logits, dim=-1)[:, MATCH].numpy()

    @torch.inference_mode()
    def itm_logits(self, query: str, features: Sequence[Any]) -> npt.NDArray[np.float32]:
        """Both ITM logits (no match, match) for each cached feature: float32[k, 2]."""
        if len(features) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        input_ids, attention_mask = self._tokens([query])
        rows = [
            self._pass.logits(input_ids, attention_mask, list(self._stack_features(chunk)))[0].float().cpu()
            for chunk in _chunks(features, ITM_BATCH)
        ]
        return torch.cat(rows).numpy()

    @torch.inference_mode()
    def score_texts(self, feature: Any, texts: Sequence[str]) -> Scores:
        """ITM "match" logits of several texts against one cached image feature (image -> text reranking).

        The image's keys and values are projected once per chunk of `batch_size` texts.

        Returns:
            float32[len(texts)], equal to `score_features(text, [feature])` for each text.
        """
        rows = []
        image = self._stack_features([feature])[0]
        for chunk in _chunks(texts, self.batch_size):
            input_ids, attention_mask = self._tokens(chunk)
            rows.append(self._pass.logits(input_ids, attention_mask, [image])[0].float().cpu())
        return torch.cat(rows)[:, MATCH].numpy() if rows else np.zeros(0, dtype=np.float32)

    def _tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        blip = self._blip
        tokens = blip.tokenizer(
            list(texts),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=blip.model.config.text_config.max_position_embeddings,
        )
        return tokens["input_ids"].to(blip.device), tokens["attention_mask"].to(blip.device)

    def close(self) -> None:
        super().close()
        self._itm_pass = None

    @property
    def _pass(self) -> BlipItmPass:
        if getattr(self, "_itm_pass", None) is None:
            self._itm_pass = BlipItmPass(self._blip.model)
        assert self._itm_pass is not None
        return self._itm_pass

    def _prepare(self, items: Sequence[Any]) -> list[Any]:
        """Features stacked and checked, states checked against this model; order kept."""
        fresh = [i for i, item in enumerate(items) if not isinstance(item, ImageState)]
        out = list(items)
        for i, feature in zip(fresh, self._stack_features([items[i] for i in fresh]) if fresh else [], strict=True):
            out[i] = feature
        layers = len(self._pass.layers)
        for item in items:
            if isinstance(item, ImageState) and (
                not isinstance(item, BlipKeyValues) or item.tensors[0].shape[0] != layers
            ):
                raise ConfigError(f"model {self.spec}: a {type(item).__name__} state is not one of this model's")
        return out

    def _stack_features(self, chunk: Sequence[Any]) -> torch.Tensor:
        blip = self._blip
        width = blip.model.config.vision_config.hidden_size
        tensors = [torch.as_tensor(feature) for feature in chunk]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[1] != width:
            raise ConfigError(
                f"model {self.spec}: image features must all be [tokens, {width}] (from image_features), "
                f"got shapes {sorted(shapes)}"
            )
        return torch.stack(tensors).to(blip.device, blip.dtype)


class BlipCaptioner(_BlipBackend):
    """Captions images with `BlipForConditionalGeneration`, unprompted, by beam search.

    Speed and memory: the vision tower runs once per image; beam search then runs the decoder
    `num_beams` times per step with cached self- and cross-attention keys. Images are captioned in
    chunks of `batch_size`; peak memory grows with batch_size x num_beams x image tokens.
    """

    _model_class_name = "BlipForConditionalGeneration"

    def __init__(
        self,
        spec: ModelSpec,
        options: ModelOptions,
        *,
        batch_size: int = 8,
        generation: BlipGeneration | None = None,
    ) -> None:
        super().__init__(spec, options, batch_size=batch_size)
        self.generation = generation or BlipGeneration()

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, special tokens stripped; the same images always give the same captions."""
        blip = self._blip
        captions: list[str] = []
        for chunk in _chunks(images, self.batch_size):
            output = blip.model.generate(
                pixel_values=self._pixels(chunk),
                do_sample=False,
                num_beams=self.generation.num_beams,
                max_new_tokens=self.generation.max_new_tokens,
                min_new_tokens=self.generation.min_new_tokens,
            )
            # the decoder's output starts with its one-token prompt ([DEC], the bos token)
            captions.extend(
                text.strip() for text in blip.tokenizer.batch_decode(output[:, 1:], skip_special_tokens=True)
            )
        return captions


class BlipAnswerer(_BlipBackend):
    """Answers questions about an image with `BlipForQuestionAnswering`, generating the answer.

    Speed and memory: one image per call; the vision tower and question encoder run once, then a
    beam search of `max(num_beams, 2 * top_k)` beams (10 by default) over at most `max_new_tokens`
    answer tokens. The decoder cross-attends only to the question tokens, so beams are cheap.
    """

    _model_class_name = "BlipForQuestionAnswering"

    def __init__(
        self,
        spec: ModelSpec,
        options: ModelOptions,
        *,
        batch_size: int = 8,
        generation: BlipGeneration | None = None,
    ) -> None:
        super().__init__(spec, options, batch_size=batch_size)
        # 10 beams: every top_k up to 5 then searches alike, so top_k=1 is the head of top_k=5
        self.generation = generation or BlipGeneration(num_beams=10, max_new_tokens=10, min_new_tokens=1)

    @torch.inference_mode()
    def answer(self, image: Image.Image, question: str, top_k: int = 5) -> list[tuple[str, float]]:
        """The `top_k` most likely answers with their probabilities, most likely first.

        prob is exp(sequence log-probability): the model's probability of generating exactly that
        answer and then stopping (beam search without length normalisation). Token sequences that
        decode to the same text are merged and their probabilities summed, so probabilities of
        different answers are disjoint and sum to at most 1. Fewer than top_k answers come back when
        the beams hold fewer distinct non-empty texts.

        Raises:
            ConfigError: top_k below 1.
        """
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        blip = self._blip
        tokens = blip.tokenizer(
            [question],
            return_tensors="pt",
            truncation=True,
            max_length=blip.model.config.text_config.max_position_embeddings,
        )
        beams = max(self.generation.num_beams, 2 * top_k)
        output = blip.model.generate(
            input_ids=tokens["input_ids"].to(blip.device),
            attention_mask=tokens["attention_mask"].to(blip.device),
            pixel_values=self._pixels([image]),
            do_sample=False,
            num_beams=beams,
            num_return_sequences=beams,
            max_new_tokens=self.generation.max_new_tokens,
            min_new_tokens=self.generation.min_new_tokens,
            length_penalty=0.0,  # sequences_scores is then the plain sum of token log-probs
            early_stopping=True,
            output_scores=True,
            return_dict_in_generate=True,
        )
        texts = blip.tokenizer.batch_decode(output.sequences[:, 1:], skip_special_tokens=True)
        probs: dict[str, float] = {}
        for text, prob in zip(texts, output.sequences_scores.float().exp().tolist(), strict=True):
            text = text.strip()
            if text:
                probs[text] = probs.get(text, 0.0) + prob
        ranked = sorted(probs.items(), key=lambda item: item[1], reverse=True)[:top_k]
        return [(text, min(prob, 1.0)) for text, prob in ranked]

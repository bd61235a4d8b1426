"""pixsearch backends on native mPLUG: dual encoder (ITC), ITM reranker, VQA answerer, captioner.

Each reads a ModelScope mPLUG directory (see `config.py`) and builds only the parts it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from pixsearch.errors import ConfigError
from pixsearch.models.embedding import to_embedding
from pixsearch.models.hub import resolve_source
from pixsearch.models.image_state import ImageState, score_items, states_in_chunks
from pixsearch.models.mplug.config import CAPTION, REQUIRED_FILES, RETRIEVAL, VQA, MplugConfig, read_config
from pixsearch.models.mplug.generation import DecodeSettings, Hypothesis, beam_search, greedy_search
from pixsearch.models.mplug.itm import MplugImageState, MplugItmPass
from pixsearch.models.mplug.loading import load_model
from pixsearch.models.mplug.modeling import RUN_PARTS, MplugModel
from pixsearch.models.mplug.processor import image_transform, pixels_of
from pixsearch.models.mplug.tokenizer import MplugTokenizer
from pixsearch.models.preprocess import ImageTransform, transform_id
from pixsearch.models.roles import Embedding, Scores, Tower
from pixsearch.models.runtime import resolve_device, resolve_dtype
from pixsearch.models.spec import ModelOptions, ModelSpec

log = logging.getLogger(__name__)

ITM_MATCH = 1  # column of the ITM head that means "match" (ModelScope's scores are [p_no_match, p_match])
BATCH = 16  # images per vision-tower, fusion or decoding call, to bound memory

_TOWER_PARTS = {Tower.BOTH: RUN_PARTS["itc"], Tower.TEXT: RUN_PARTS["itc-text"], Tower.IMAGE: RUN_PARTS["itc-image"]}


class _MplugBackend:
    """Shared: the constructor stores, `load()` reads the directory and weights once, `close()` frees them."""

    task: str = RETRIEVAL
    parts: frozenset[str] = RUN_PARTS[RETRIEVAL]

    def __init__(self, spec: ModelSpec, options: ModelOptions) -> None:
        self.spec = spec
        self.options = options
        self._dir: Path | None = None
        self._config: MplugConfig | None = None
        self._model: MplugModel | None = None
        self._tokenizer: MplugTokenizer | None = None

    @property
    def directory(self) -> Path:
        if self._dir is None:
            self._dir = resolve_source(self.spec, required=REQUIRED_FILES)
        return self._dir

    @property
    def config(self) -> MplugConfig:
        """The directory's configuration (reads config files only, no weights)."""
        if self._config is None:
            self._config = read_config(self.directory, self.task)
        return self._config

    def _load_parts(self, parts: frozenset[str]) -> None:
        if self._model is not None and parts <= self._model.parts:
            return
        wanted = parts | (self._model.parts if self._model is not None else frozenset())
        dtype, device = resolve_dtype(self.options), resolve_device(self.options)
        self._model = load_model(self.directory, self.task, wanted, dtype=dtype, device=str(device))
        self._tokenizer = self._tokenizer or MplugTokenizer.from_dir(self.directory)
        log.info("loaded mPLUG %s parts %s (%s, %s) from %s", self.task, sorted(wanted), dtype, device, self.directory)

    def load(self) -> None:
        """Load the weights this backend runs (idempotent).

        Raises:
            ModelNotFoundError: the spec's source cannot be found.
            ConfigError: the directory holds a model for another task, or an unsupported config.
            ModelLoadError: the checkpoint does not fit (keys named).
        """
        self._load_parts(self.parts)

    def close(self) -> None:
        self._model = None

    @property
    def model(self) -> MplugModel:
        """The loaded model (loads this backend's parts if nothing is loaded yet)."""
        if self._model is None:
            self.load()
        assert self._model is not None
        return self._model

    @property
    def tokenizer(self) -> MplugTokenizer:
        if self._tokenizer is None:
            self._tokenizer = MplugTokenizer.from_dir(self.directory)
        return self._tokenizer

    @property
    def transform(self) -> ImageTransform:
        return image_transform(self.config)

    def _image_embeds(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.model.image_embeds(pixels_of(self.transform, images))

    def decode_settings(self) -> DecodeSettings:
        config = self.config
        return DecodeSettings(
            beam_size=config.beam_size,
            min_length=config.min_length,
            max_length=config.max_length,
            start_id=self.tokenizer.cls_id,
            end_id=self.tokenizer.sep_id,
        )

    def _generate(self, memory: torch.Tensor, mask: torch.Tensor, greedy: bool) -> list[list[Hypothesis]]:
        model = self.model
        memory_kv, memory_mask = model.decoder_inputs(memory, mask)

        def step(prefixes: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
            kv = [(k.index_select(0, items), v.index_select(0, items)) for k, v in memory_kv]
            return model.text_decoder(prefixes, kv, memory_mask.index_select(0, items))[:, -1]

        if greedy:
            return [[h] for h in greedy_search(step, memory.shape[0], self.decode_settings(), memory.device)]
        return beam_search(step, memory.shape[0], self.decode_settings(), memory.device)


class MplugDualEncoder(_MplugBackend):
    """mPLUG's contrastive (ITC) towers: normalised vision_proj(image CLS) and text_proj(text CLS)."""

    parts = RUN_PARTS["itc"]

    @property
    def dim(self) -> int:
        return self.config.embed_dim

    @property
    def preprocess_id(self) -> str:
        return transform_id(self.transform)

    def load_towers(self, tower: Tower) -> None:
        """Load only the text tower, only the image tower, or both (adds to what is loaded)."""
        self._load_parts(_TOWER_PARTS[Tower(tower)])

    def encode_pixels(self, pixels: npt.NDArray[np.float32]) -> Embedding:
        size = self.config.image_res
        if pixels.ndim != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(f"mPLUG expects pixels of shape [n, 3, {size}, {size}], got {pixels.shape}")
        self.load_towers(Tower.IMAGE)
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = []
        with torch.inference_mode():
            for start in range(0, len(pixels), BATCH):
                batch = torch.from_numpy(np.ascontiguousarray(pixels[start : start + BATCH], dtype=np.float32))
                vectors.append(self.model.itc_image(self.model.image_embeds(batch)).float().cpu())
        return to_embedding(torch.cat(vectors), source=f"mplug image tower {self.spec}")

    def encode_images(self, images: Sequence[Image.Image]) -> Embedding:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(pixels_of(self.transform, images).numpy())

    def encode_texts(self, texts: Sequence[str]) -> Embedding:
        self.load_towers(Tower.TEXT)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = []
        with torch.inference_mode():
            for start in range(0, len(texts), BATCH):
                ids, mask = self.tokenizer.encode(texts[start : start + BATCH])
                vectors.append(self.model.itc_text(self.model.text_hidden(ids, mask)).float().cpu())
        return to_embedding(torch.cat(vectors), source=f"mplug text tower {self.spec}")


class MplugItmReranker(_MplugBackend):
    """mPLUG's ITM head. Image features are the image embeddings after visn_fc/visn_layer_norm,
    one CPU tensor [1 + patches, hidden] per image, so the vision tower runs once per image; image
    states (`MplugImageState`: the fusion layers' image-side projections up to the first joint layer)
    spare those too. Scoring runs `MplugItmPass`: every candidate of a batch in one pass."""

    parts = RUN_PARTS["itm"]

    def __init__(self, spec: ModelSpec, options: ModelOptions) -> None:
        super().__init__(spec, options)
        self._pass: MplugItmPass | None = None

    def close(self) -> None:
        super().close()
        self._pass = None

    @property
    def itm_pass(self) -> MplugItmPass:
        if self._pass is None:
            self._pass = MplugItmPass(self.model)
        return self._pass

    def image_features(self, images: Sequence[Image.Image]) -> list[Any]:
        features: list[Any] = []
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                embeds = self._image_embeds(images[start : start + BATCH]).cpu()
                # one storage per image, so a cached feature does not pin its whole batch
                features.extend(embed.clone() for embed in embeds.unbind(0))
        return features

    def image_states(self, features: Sequence[Any]) -> list[MplugImageState]:
        """The query-independent fusion projections of each image (see `MplugImageState`)."""
        return states_in_chunks(features, BATCH, lambda chunk: self.itm_pass.states(self._stack(chunk)))

    def score_items(
        self, query: str, items: Sequence[Any], keep: bool = False
    ) -> tuple[Scores, list[ImageState | None]]:
        """ITM match logits of `query` against images given as features or states (see `image_state.score_items`)."""
        model, itm = self.model, self.itm_pass
        ids, mask = self.tokenizer.encode([query])
        with torch.inference_mode():
            text, mask = model.text_hidden(ids, mask), mask.to(model.device)
            return score_items(
                items,
                MplugImageState,
                lambda features, own: itm.states(self._stack(features), own),
                lambda states: itm.logits(text, mask, states)[:, ITM_MATCH],
                BATCH,
                keep,
            )

    def pair_logits(self, query: str, features: Sequence[Any]) -> npt.NDArray[np.float32]:
        """ITM logits float32[k, 2] of (no match, match) for the query against each image's features
        (`MplugModel.itm_logits`, the reference path; `score_items` computes the same faster)."""
        if not features:
            return np.zeros((0, 2), dtype=np.float32)
        model = self.model
        ids, mask = self.tokenizer.encode([query])
        logits = []
        with torch.inference_mode():
            text = model.text_hidden(ids, mask)
            for start in range(0, len(features), BATCH):
                images = self._stack(features[start : start + BATCH])
                n = images.shape[0]
                pair = model.itm_logits(images, text.expand(n, -1, -1), mask.expand(n, -1))
                logits.append(pair.float().cpu())
        return torch.cat(logits).numpy()

    def score_features(self, query: str, features: Sequence[Any]) -> Scores:
        return np.ascontiguousarray(self.score_items(query, features)[0], dtype=np.float32)

    def score(self, query: str, images: Sequence[Image.Image]) -> Scores:
        return self.score_features(query, self.image_features(images))

    def _stack(self, features: Sequence[Any]) -> torch.Tensor:
        shapes = {tuple(torch.as_tensor(f).shape) for f in features}
        if len(shapes) != 1:
            raise ConfigError(f"model {self.spec}: image features of different shapes {sorted(shapes)}")
        model = self.model
        return torch.stack([torch.as_tensor(f) for f in features]).to(model.device, model.dtype)


class MplugAnswerer(_MplugBackend):
    """Visual question answering by generation, with ModelScope's beam search."""

    task = VQA
    parts = RUN_PARTS[VQA]

    def hypotheses(
        self, images: Sequence[Image.Image], questions: Sequence[str], greedy: bool = False
    ) -> list[list[Hypothesis]]:
        """The n-best answers (best first) for row-aligned images and questions."""
        if len(images) != len(questions):
            raise ValueError(f"mPLUG VQA got {len(images)} images but {len(questions)} questions")
        out: list[list[Hypothesis]] = []
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                ids, mask = self.tokenizer.encode(questions[start : start + BATCH])
                embeds = self._image_embeds(images[start : start + BATCH])
                memory, memory_mask = self.model.answer_memory(embeds, self.model.text_hidden(ids, mask), mask)
                out.extend(self._generate(memory, memory_mask, greedy))
        return out

    def answer(self, image: Image.Image, question: str, top_k: int = 5) -> list[tuple[str, float]]:
        """Up to `top_k` answers from the beam's n-best (at most beam_size), best first.

        The first answer is the one ModelScope's pipeline returns. Each probability is a softmax over
        the n-best hypotheses' beam scores (length-penalised cumulative log-probs), so they rank as the
        beam ranks them and sum to 1 over the n-best; hypotheses that decode to the same text are merged
        (probabilities added, first position kept).
        """
        hyps = self.hypotheses([image], [question])[0]
        probs = torch.softmax(torch.tensor([h.score for h in hyps], dtype=torch.float64), dim=0).tolist()
        merged: dict[str, float] = {}
        for hyp, prob in zip(hyps, probs, strict=True):
            text = self.tokenizer.decode(hyp.ids, cjk=True)
            merged[text] = merged.get(text, 0.0) + prob
        return list(merged.items())[: max(top_k, 0)]


class MplugCaptioner(_MplugBackend):
    """Image captioning by generation over the image embeddings; CJK output is joined without spaces."""

    task = CAPTION
    parts = RUN_PARTS[CAPTION]

    def hypotheses(self, images: Sequence[Image.Image], greedy: bool = False) -> list[list[Hypothesis]]:
        """The n-best captions (best first) per image."""
        out: list[list[Hypothesis]] = []
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                memory, mask = self.model.caption_memory(self._image_embeds(images[start : start + BATCH]))
                out.extend(self._generate(memory, mask, greedy))
        return out

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        return [self.tokenizer.decode(hyps[0].ids, cjk=True) for hyps in self.hypotheses(images)]


# the seed-compatible call lives in pipeline.py; exported here too, next to the backends it uses
from pixsearch.models.mplug.pipeline import MplugPipeline  # noqa: E402

__all__ = ["MplugAnswerer", "MplugCaptioner", "MplugDualEncoder", "MplugItmReranker", "MplugPipeline"]

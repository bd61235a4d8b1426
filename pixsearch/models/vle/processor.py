"""VLE inputs: DeBERTa-v2 sentencepiece tokens and CLIP-normalised pixels.

The tokenizer restates the slow `DebertaV2Tokenizer` the original processor uses (`[CLS] pieces
[SEP]`, right-padded with [PAD]) directly on sentencepiece: transformers 5 only offers the fast
tokenizer, whose conversion from spm.model needs protobuf, which this project does not install.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch
from PIL import Image

from pixsearch.errors import ModelLoadError
from pixsearch.models.preprocess import CLIP_MEAN, CLIP_STD, ImageTransform

# beyond this the tokenizer_config's model_max_length is transformers' "no limit" sentinel
_SANE_MAX_LENGTH = 100_000
_DEFAULT_MAX_LENGTH = 512


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from error


def _load_sentencepiece(path: Path) -> spm.SentencePieceProcessor:
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as error:
        raise ModelLoadError(f"cannot load sentencepiece model {path}: {error}") from error


def _token_text(value: Any, default: str) -> str:
    # special_tokens_map entries are either a string or an AddedToken dict
    if isinstance(value, dict):
        return str(value.get("content", default))
    return str(value) if value else default


class VleTokenizer:
    """Sentencepiece tokens in the layout of the slow DebertaV2Tokenizer.

    Special tokens written in the text ([CLS], [MASK] ...) become their own ids, as in the original.
    Texts longer than `max_length` tokens are cut (the original never cuts; DeBERTa's relative
    positions accept any length, but memory does not).
    """

    def __init__(
        self,
        spm_path: Path,
        special_tokens: dict[str, int],
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        do_lower_case: bool = False,
        max_length: int = _DEFAULT_MAX_LENGTH,
    ) -> None:
        self._sp = _load_sentencepiece(spm_path)
        self.special_tokens = dict(special_tokens)
        for name in (cls_token, sep_token, pad_token):
            if name not in self.special_tokens:
                raise ModelLoadError(f"tokenizer {spm_path}: special token {name!r} has no id")
        self.cls_id = self.special_tokens[cls_token]
        self.sep_id = self.special_tokens[sep_token]
        self.pad_id = self.special_tokens[pad_token]
        self.do_lower_case = do_lower_case
        self.max_length = max(3, max_length)
        longest_first = sorted(self.special_tokens, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(t) for t in longest_first) + ")")

    @classmethod
    def from_dir(cls, model_dir: Path) -> VleTokenizer:
        """Read spm.model, tokenizer_config.json, special_tokens_map.json and added_tokens.json.

        Raises:
            ModelLoadError: unreadable files or a special token without an id.
        """
        model_dir = Path(model_dir)
        config = _read_json(model_dir / "tokenizer_config.json")
        names = {**config, **_read_json(model_dir / "special_tokens_map.json")}
        sp = _load_sentencepiece(model_dir / "spm.model")
        special: dict[str, int] = {}
        for key, default in (
            ("pad_token", "[PAD]"),
            ("cls_token", "[CLS]"),
            ("sep_token", "[SEP]"),
            ("unk_token", "[UNK]"),
        ):
            text = _token_text(names.get(key), default)
            piece_id = sp.piece_to_id(text)
            if sp.id_to_piece(piece_id) == text:
                special[text] = piece_id
        for token_id, token in (config.get("added_tokens_decoder") or {}).items():
            if isinstance(token, dict) and token.get("special", False):
                special[str(token["content"])] = int(token_id)
        special.update({str(k): int(v) for k, v in _read_json(model_dir / "added_tokens.json").items()})
        # the published checkpoints add [MASK] after the sentencepiece vocabulary (id 128000)
        special.setdefault(_token_text(names.get("mask_token"), "[MASK]"), sp.get_piece_size())
        max_length = int(config.get("model_max_length") or _DEFAULT_MAX_LENGTH)
        return cls(
            model_dir / "spm.model",
            special,
            cls_token=_token_text(names.get("cls_token"), "[CLS]"),
            sep_token=_token_text(names.get("sep_token"), "[SEP]"),
            pad_token=_token_text(names.get("pad_token"), "[PAD]"),
            do_lower_case=bool(config.get("do_lower_case", False)),
            max_length=max_length if max_length <= _SANE_MAX_LENGTH else _DEFAULT_MAX_LENGTH,
        )

    def encode(self, text: str) -> list[int]:
        """One text -> [CLS] ids [SEP], cut to `max_length`."""
        ids: list[int] = []
        for chunk in self._split.split(text):
            if chunk in self.special_tokens:
                ids.append(self.special_tokens[chunk])
            elif chunk:
                ids.extend(self._sp.encode(chunk.lower() if self.do_lower_case else chunk))
        return [self.cls_id, *ids[: self.max_length - 2], self.sep_id]

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts -> input_ids, attention_mask and token_type_ids (all 0), int64 [n, longest]."""
        encoded = [self.encode(text) for text in texts]
        width = max((len(ids) for ids in encoded), default=0)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}


def image_transform_from_dir(model_dir: Path) -> ImageTransform:
    """The CLIPImageProcessor recipe of preprocessor_config.json as an ImageTransform.

    Raises:
        ModelLoadError: a recipe ImageTransform cannot express (no crop, or a crop of another size).
    """
    config = _read_json(Path(model_dir) / "preprocessor_config.json")
    size = config.get("size", {"shortest_edge": 224})
    edge = size.get("shortest_edge") if isinstance(size, dict) else size
    crop = config.get("crop_size", edge)
    crop_edge = crop.get("height") if isinstance(crop, dict) else crop
    if isinstance(crop, dict) and crop.get("height") != crop.get("width"):
        raise ModelLoadError(f"{model_dir}: non-square crop_size {crop} is not supported")
    for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
        if config.get(flag) is False:
            raise ModelLoadError(f"{model_dir}: preprocessor_config.json sets {flag} false, which is not supported")
    if edge is None or int(edge) != int(crop_edge):
        raise ModelLoadError(f"{model_dir}: resize to {edge} then crop to {crop_edge} is not supported")
    if int(config.get("resample", 3)) != 3:
        raise ModelLoadError(f"{model_dir}: resample {config.get('resample')} is not bicubic (3)")
    return ImageTransform(
        size=int(edge),
        mean=tuple(float(x) for x in config.get("image_mean", CLIP_MEAN)),
        std=tuple(float(x) for x in config.get("image_std", CLIP_STD)),
    )


@dataclass(frozen=True)
class VleProcessor:
    """Tokenizer plus image transform, together as the original VLEProcessor."""

    tokenizer: VleTokenizer
    transform: ImageTransform

    @classmethod
    def from_dir(cls, model_dir: Path | str) -> VleProcessor:
        """Build from a checkpoint directory (spm.model and the tokenizer/preprocessor JSON files).

        Raises:
            ModelLoadError: unreadable or unsupported files.
        """
        return cls(VleTokenizer.from_dir(Path(model_dir)), image_transform_from_dir(Path(model_dir)))

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> float32 [n, 3, size, size]."""
        if not images:
            size = self.transform.size
            return torch.empty((0, 3, size, size), dtype=torch.float32)
        return torch.from_numpy(np.stack([self.transform(image) for image in images]))

    def __call__(self, texts: Sequence[str], images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """Paired texts and images -> input_ids, attention_mask, token_type_ids, pixel_values."""
        if len(texts) != len(images):
            raise ValueError(f"VLE processor needs as many texts as images, got {len(texts)} and {len(images)}")
        return {**self.tokenizer(texts), "pixel_values": self.pixels(images)}

"""A tiny causal language model (GPT-2 architecture) with the word-level tokenizer of `tokenizer.py`,
saved like a hub checkpoint so `llm:DIR` loads it. Tests use it untrained; `writer_train.py` trains it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixsearch.train.tokenizer import save_tokenizer


@dataclass(frozen=True)
class TinyLmConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    positions: int = 256


def build_tiny_lm(directory: Path, words: Iterable[str], config: TinyLmConfig | None = None, seed: int = 0) -> Any:
    """Write the tokenizer into `directory` and return (model, tokenizer); the model has random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = config or TinyLmConfig()
    tokenizer = save_tokenizer(directory, words)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=config.hidden,
            n_layer=config.layers,
            n_head=config.heads,
            n_positions=config.positions,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return model, tokenizer


def save_tiny_lm(directory: Path, words: Iterable[str], config: TinyLmConfig | None = None, seed: int = 0) -> Path:
    """A random tiny causal LM and its tokenizer in `directory`; load it as `llm:DIRECTORY`."""
    model, _ = build_tiny_lm(directory, words, config, seed)
    model.save_pretrained(directory)
    return Path(directory)

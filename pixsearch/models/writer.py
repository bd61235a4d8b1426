"""`llm:` a transformers causal language model that completes prompts (the `Writer` role).

The source is a local directory or a hub id (e.g. a small instruct model). A tokenizer with a chat
template gets the prompt as one user message; one without (a base model, or one pixsearch trained)
gets the prompt as it is. Both lengths are bounded: the prompt keeps its last `max_prompt_tokens`
tokens (the question and the "Answer:" cue sit at its end), generation stops at `max_new_tokens`
or after `timeout_s` seconds (transformers' `max_time`), whichever comes first.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch

from pixsearch.errors import ModelLoadError
from pixsearch.models.hub import resolve_source
from pixsearch.models.runtime import resolve_device, resolve_dtype
from pixsearch.models.spec import ModelOptions, ModelSpec

log = logging.getLogger(__name__)

MAX_PROMPT_TOKENS = 1024


class CausalLmWriter:
    """Greedy completion with `AutoModelForCausalLM.generate`."""

    def __init__(self, spec: ModelSpec, options: ModelOptions, max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> None:
        self.spec = spec
        self.options = options
        self.max_prompt_tokens = max_prompt_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = resolve_source(self.spec, ("config.json",))
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(self.options))
            except (OSError, ValueError, KeyError) as error:
                raise ModelLoadError(f"model {self.spec}: {path} is not a causal language model ({error})") from error
            model.to(resolve_device(self.options)).eval()
            self._tokenizer, self._model = tokenizer, model

    def close(self) -> None:
        with self._lock:
            self._model = self._tokenizer = None

    @property
    def uses_chat_template(self) -> bool:
        return bool(getattr(self._tokenizer, "chat_template", None))

    def encode(self, prompt: str, max_new_tokens: int) -> list[int]:
        """The token ids fed to the model: chat-templated if the tokenizer has a template, left-truncated."""
        self.load()
        tokenizer = self._tokenizer
        if self.uses_chat_template:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
            )
            ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        else:
            ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
            if ids and ids[-1] == tokenizer.sep_token_id:  # a BERT-style [SEP] would end the text before the answer
                ids = ids[:-1]
        room = self.max_prompt_tokens
        positions = getattr(self._model.config, "max_position_embeddings", None) or getattr(
            self._model.config, "n_positions", None
        )
        if positions:
            room = min(room, positions - max_new_tokens)
        if room < 1:
            raise ModelLoadError(
                f"model {self.spec}: {positions} positions leave no room for a prompt and {max_new_tokens} new tokens"
            )
        if len(ids) > room:
            log.info("prompt of %d tokens cut to its last %d", len(ids), room)
            ids = ids[-room:]
        return ids

    def write(self, prompt: str, max_new_tokens: int = 32, timeout_s: float = 30.0) -> str:
        ids = self.encode(prompt, max_new_tokens)
        model, tokenizer = self._model, self._tokenizer
        input_ids = torch.tensor([ids], device=model.device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = [t for t in (tokenizer.eos_token_id, tokenizer.sep_token_id) if t is not None]
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                max_time=timeout_s,
                pad_token_id=pad,
                eos_token_id=eos or None,
            )
        return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True).strip()

"""OFA visual entailment training: (image, statement) -> yes / no / maybe, as ModelScope fine-tunes it.

The decoder reads the prompt and the answer (`prev_output` prompt type: the encoder's source
without `</s>`; `none`: `<s>`), and learns the answer's tokens and `</s>` under the answer trie's
constraint, as OFA's criterion masks the logits to the tokens the trie allows. The loss of a row is
the answer's negative log-probability in exactly the form the `traverse` mode scores answers, so
training raises the probability `ofa-ve` reports. The native model has no dropout (it was written
for inference), so no step draws torch randomness.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from pixsearch.errors import ModelLoadError
from pixsearch.models.ofa.config import OfaConfig, OfaTaskConfig
from pixsearch.models.ofa.generation import AnswerTrie
from pixsearch.models.ofa.loading import find_checkpoint, load_state
from pixsearch.models.ofa.modeling import OfaModel
from pixsearch.models.ofa.processor import OfaProcessor
from pixsearch.models.ofa.tokenizer import OfaTokenizer
from pixsearch.models.preprocess import ImageTransform
from pixsearch.train.data import TrainData
from pixsearch.train.tasks import batch_indices


def ofa_processor(directory: Path) -> OfaProcessor:
    """The processor the `ofa-ve` backend builds for this folder."""
    return OfaProcessor(OfaTokenizer.from_dir(Path(directory)), OfaTaskConfig.from_dir(Path(directory)))


def ofa_transform(directory: Path) -> ImageTransform:
    """The pixel transform `ofa-ve` applies for this folder (training uses the same)."""
    return ofa_processor(directory).transform


def _pad(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [pad] * (width - len(row)) for row in rows])


class OfaVeTask:
    """Visual entailment on an OFA folder in ModelScope's layout; `data.qa` holds (statement, answer)."""

    backend = "ofa-ve"

    def __init__(self, directory: Path, data: TrainData, batch_size: int, seed: int) -> None:
        self.directory = Path(directory)
        self.data, self.seed = data, seed
        self.batch_size = min(batch_size, len(data))
        self.items_per_step = self.batch_size
        self.processor = ofa_processor(self.directory)
        tokenizer = self.processor.tokenizer
        self.answers = self.processor.task.answers
        self.answer_tokens = {answer: tokenizer.encode(" " + answer) for answer in self.answers}
        self.trie = AnswerTrie(list(self.answer_tokens.values()), tokenizer.bos_token_id, tokenizer.eos_token_id)
        unknown = sorted({answer for pairs in data.qa for _, answer in pairs} - set(self.answers))
        if unknown:
            raise ModelLoadError(f"{self.directory}: answers {unknown} are not the model's {self.answers}")
        self.model = OfaModel(OfaConfig.from_file(self.directory / "config.json"))
        self.model.float()
        self.pixels = torch.from_numpy(data.pixels)
        self._allowed = self._allowed_masks()

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Load a checkpoint's state dict (OFA names, as `loading.read_state_dict` gives) strictly."""
        load_state(self.model, state)

    def _allowed_masks(self) -> dict[str, torch.Tensor]:
        """Per answer: [tokens + 1, vocab] bool, the tokens the trie allows at each answer position."""
        vocab = self.model.config.vocab_size
        masks = {}
        for answer, tokens in self.answer_tokens.items():
            mask = torch.zeros(len(tokens) + 1, vocab, dtype=torch.bool)
            for offset in range(len(tokens) + 1):
                mask[offset, self.trie.next_tokens([self.trie.bos, *tokens[:offset]])] = True
            masks[answer] = mask
        return masks

    def indices(self, step: int):
        return batch_indices(len(self.data), self.batch_size, self.seed, step)

    def rng(self, step: int):
        import numpy as np

        return np.random.default_rng([self.seed, step, 1])

    def loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        picked = [self.data.qa[i][rng.integers(len(self.data.qa[i]))] for i in rows]
        texts = [self.processor.text(statement) for statement, _ in picked]
        pad = self.processor.tokenizer.pad_token_id
        encoder_out = self.model.encoder(
            _pad([t.input_ids for t in texts], pad), self.pixels[rows], torch.ones(len(rows), dtype=torch.bool)
        )
        decoder_rows = [[*t.decoder_prompt, *self.answer_tokens[a]] for t, (_, a) in zip(texts, picked, strict=True)]
        logits = self.model.decoder(_pad(decoder_rows, pad), encoder_out)
        total = logits.new_zeros(())
        for row, (text, (_, answer)) in enumerate(zip(texts, picked, strict=True)):
            targets = torch.tensor([*self.answer_tokens[answer], self.trie.eos])
            start = len(text.decoder_prompt) - 1  # the logits here predict the answer's first token
            step_logits = logits[row, start : start + len(targets)].float()
            step_logits = step_logits.masked_fill(~self._allowed[answer], -math.inf)
            total = total + F.cross_entropy(step_logits, targets, reduction="sum")
        return total / len(rows)

    @property
    def checkpoint(self) -> Path:
        return find_checkpoint(self.directory)

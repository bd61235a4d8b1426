"""OFA visual entailment training: (image, statement) -> yes / no / maybe, as ModelScope fine-tunes it.

The decoder reads the prompt and the answer (`prev_output` prompt type: the encoder's source
without `</s>`; `none`: `<s>`), and learns the answer's tokens and `</s>` under the answer trie's
constraint, as OFA's criterion masks the logits to the tokens the trie allows. The loss of a row is
the answer's negative log-probability in exactly the form the `traverse` mode scores answers, so
training raises the probability `ofa-ve` reports. The native model has no dropout (it was written
for inference), so no step draws torch randomness; the ResNet's BatchNorm layers keep their running
statistics (frozen, as is usual when fine-tuning with small batches).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from pixsearch.errors import ConfigError
from pixsearch.models.ofa.backends import REQUIRED_FILES
from pixsearch.models.ofa.config import OfaTaskConfig
from pixsearch.models.ofa.generation import AnswerTrie
from pixsearch.models.ofa.loading import find_checkpoint, load_model
from pixsearch.models.ofa.processor import OfaProcessor
from pixsearch.models.ofa.tokenizer import OfaTokenizer
from pixsearch.models.preprocess import ImageTransform
from pixsearch.train.data import load_statements
from pixsearch.train.native import NativeBackend, NativeSetup, NativeTask, read_state_dict


def ofa_processor(directory: Path) -> OfaProcessor:
    """The processor the `ofa-ve` backend builds for this folder."""
    return OfaProcessor(OfaTokenizer.from_dir(Path(directory)), OfaTaskConfig.from_dir(Path(directory)))


def ofa_transform(directory: Path) -> ImageTransform:
    """The pixel transform `ofa-ve` applies for this folder (training uses the same)."""
    return ofa_processor(directory).transform


def _pad(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [pad] * (width - len(row)) for row in rows])


class OfaVeTask(NativeTask):
    """Visual entailment on an OFA folder in ModelScope's layout; `data.qa` holds (statement, answer)."""

    def __init__(self, setup: NativeSetup) -> None:
        super().__init__(setup)
        self.weights_file = find_checkpoint(self.directory).name
        self.processor = ofa_processor(self.directory)
        tokenizer = self.processor.tokenizer
        self.answers = self.processor.task.answers
        self.answer_tokens = {answer: tokenizer.encode(" " + answer) for answer in self.answers}
        self.trie = AnswerTrie(list(self.answer_tokens.values()), tokenizer.bos_token_id, tokenizer.eos_token_id)
        unknown = sorted({answer for pairs in self.data.qa for _, answer in pairs} - set(self.answers))
        if unknown:
            raise ConfigError(f"{self.directory}: answers {unknown} are not the model's ({', '.join(self.answers)})")
        self.model = load_model(self.directory, dtype=torch.float32)
        self.model.requires_grad_(True).train()
        # the stored name of each weight: ModelScope's files may put 'model.' before every key
        stored = read_state_dict(self.directory / self.weights_file)
        prefix = "model." if stored and all(key.startswith("model.") for key in stored) else ""
        self.stored = {name: prefix + name for name in self.model.state_dict() if prefix + name in stored}
        self._allowed = self._allowed_masks()

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

    def loss(self, step: int) -> torch.Tensor:
        # the ResNet's BatchNorm keeps its running statistics, as served: a batch of a few images gives
        # noisy ones (its scale and shift still train)
        for module in self.model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        rng, rows = self.rng(step), self.indices(step)
        picked = [self.data.qa[i][rng.integers(len(self.data.qa[i]))] for i in rows]
        texts = [self.processor.text(statement) for statement, _ in picked]
        pad = self.processor.tokenizer.pad_token_id
        encoder_out = self.model.encoder(
            _pad([t.input_ids for t in texts], pad), self.pixels[rows], torch.ones(len(rows), dtype=torch.bool)
        )
        decoder_rows = [[*t.decoder_prompt, *self.answer_tokens[a]] for t, (_, a) in zip(texts, picked, strict=True)]
        # right-padded: attention is causal, so no scored position sees a pad
        logits = self.model.decoder(_pad(decoder_rows, pad), encoder_out)
        total = logits.new_zeros(())
        for row, (text, (_, answer)) in enumerate(zip(texts, picked, strict=True)):
            targets = torch.tensor([*self.answer_tokens[answer], self.trie.eos])
            start = len(text.decoder_prompt) - 1  # the logits here predict the answer's first token
            step_logits = logits[row, start : start + len(targets)].float()
            step_logits = step_logits.masked_fill(~self._allowed[answer], -math.inf)
            total = total + F.cross_entropy(step_logits, targets, reduction="sum")
        return total / len(rows)

    def trained_weights(self) -> dict[str, torch.Tensor]:
        """Every weight under its stored name; tied names (the shared embedding) each get the tensor."""
        state = self.model.state_dict()
        return {stored: state[name] for name, stored in self.stored.items()}

    def read_weights(self, directory: Path) -> dict[str, torch.Tensor]:
        return load_model(Path(directory)).state_dict()


VE_BACKEND = NativeBackend(REQUIRED_FILES, "pytorch_model.bin", ofa_transform, load_statements, OfaVeTask)

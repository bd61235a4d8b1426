"""One loaded OFA visual-entailment model with its processor and answer trie, running ModelScope's
`traverse` and `generation` modes on one (image, hypothesis) pair at a time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from pixsearch.models.ofa.config import OfaTaskConfig
from pixsearch.models.ofa.generation import AnswerTrie, BeamSearch, GenerationResult, TraverseResult, traverse
from pixsearch.models.ofa.loading import load_model
from pixsearch.models.ofa.modeling import OfaEncoderOutput, OfaModel
from pixsearch.models.ofa.processor import OfaProcessor, OfaTextInputs
from pixsearch.models.ofa.tokenizer import OfaTokenizer

log = logging.getLogger(__name__)


@dataclass
class EntailmentResult:
    """Both modes for one pair: `traverse` always, `generation` when asked for."""

    traverse: TraverseResult
    generation: GenerationResult | None
    traverse_label: str
    generation_label: str | None


def _repeat(encoder_out: OfaEncoderOutput, n: int) -> OfaEncoderOutput:
    return OfaEncoderOutput(
        encoder_out.last_hidden_state.expand(n, -1, -1),
        encoder_out.padding_mask.expand(n, -1),
        encoder_out.position_embedding.expand(n, -1, -1),
    )


class OfaVisualEntailment:
    """Model, processor and answers of one OFA visual-entailment directory. Build with `from_dir`."""

    def __init__(self, model: OfaModel, processor: OfaProcessor, task: OfaTaskConfig) -> None:
        self.model = model
        self.processor = processor
        self.task = task
        tok = processor.tokenizer
        # ModelScope tokenises ' ' + answer without special tokens and without truncation.
        self.answers = task.answers
        self.answer_tokens = [tok.encode(" " + answer) for answer in self.answers]
        self._answer_by_tokens = {
            tuple(ids): answer for ids, answer in zip(self.answer_tokens, self.answers, strict=True)
        }
        self.trie = AnswerTrie(self.answer_tokens, tok.bos_token_id, tok.eos_token_id)
        self.search = BeamSearch(task.beam, self.trie, tok.pad_token_id, tok.unk_token_id, max_beam=len(self.answers))

    @classmethod
    def from_dir(
        cls, model_dir: Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> OfaVisualEntailment:
        """Load config, configuration, tokenizer and weights from an original OFA model directory.

        Raises:
            ModelLoadError: unsupported settings or a checkpoint that does not fit (keys named).
            ModelNotFoundError: no checkpoint file in the directory.
        """
        task = OfaTaskConfig.from_dir(model_dir)
        tokenizer = OfaTokenizer.from_dir(model_dir)
        model = load_model(model_dir, dtype=dtype, device=device)
        if len(tokenizer) > model.config.vocab_size:
            log.warning("tokenizer has %d tokens but vocab_size is %d", len(tokenizer), model.config.vocab_size)
        return cls(model, OfaProcessor(tokenizer, task), task)

    @property
    def device(self) -> torch.device:
        return self.model.encoder.image_proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.encoder.image_proj.weight.dtype

    def encode(self, pixels: npt.NDArray[np.float32] | torch.Tensor, text: OfaTextInputs) -> OfaEncoderOutput:
        """Encoder pass for one pair: pixels [3, H, W] and the prompt ids."""
        images = torch.as_tensor(pixels).to(self.device, self.dtype).unsqueeze(0)
        input_ids = torch.tensor([text.input_ids], device=self.device)
        return self.model.encoder(input_ids, images, torch.ones(1, dtype=torch.bool, device=self.device))

    def _decode_fn(self, encoder_out: OfaEncoderOutput):
        def decode(ids: torch.Tensor) -> torch.Tensor:
            return self.model.decoder(ids.to(self.device), _repeat(encoder_out, ids.shape[0]))

        return decode

    def traverse(self, encoder_out: OfaEncoderOutput, text: OfaTextInputs) -> TraverseResult:
        pad = self.processor.tokenizer.pad_token_id
        return traverse(self._decode_fn(encoder_out), text.decoder_prompt, self.answer_tokens, self.trie, pad)

    def generate(self, encoder_out: OfaEncoderOutput, text: OfaTextInputs) -> GenerationResult:
        return self.search.run(self._decode_fn(encoder_out), text.prefix_tokens, len(text.input_ids))

    def hypothesis_answer(self, tokens: list[int], text: OfaTextInputs) -> str | None:
        """The answer a finished hypothesis spells after its prefix, or None if it spells none
        (only trie paths get finite scores, so a finished hypothesis always spells one)."""
        return self._answer_by_tokens.get(tuple(tokens[len(text.prefix_tokens) : -1]))

    def run(self, image: Image.Image, hypothesis: str, generation: bool = True) -> EntailmentResult:
        """Preprocess, encode once, and score the answers in traverse (and generation) mode."""
        text = self.processor.text(hypothesis)
        with torch.inference_mode():
            encoder_out = self.encode(self.processor.image(image), text)
            scored = self.traverse(encoder_out, text)
            generated = self.generate(encoder_out, text) if generation else None
        traverse_label = self.answers[scored.best]
        generation_label = None
        if generated is not None:
            labels = [self.hypothesis_answer(h.tokens, text) for h in generated.hypotheses]
            generation_label = next((label for label in labels if label is not None), None)
            if generation_label is None:
                # Every beam was blocked (an n-gram repeat at the prompt's end); ModelScope fails an
                # assertion here. Answer with the traverse label instead of failing.
                log.warning("OFA beam search finished no answer for %r; using the traverse answer", hypothesis)
                generation_label = traverse_label
        return EntailmentResult(scored, generated, traverse_label, generation_label)

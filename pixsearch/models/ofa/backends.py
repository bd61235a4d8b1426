"""The `ofa-ve` backend: native OFA visual entailment (ModelScope's
`damo/ofa_visual-entailment_snli-ve_*` checkpoints) behind the `Entailer` role."""

from __future__ import annotations

import logging
from typing import Any

from PIL import Image

from pixsearch.errors import ConfigError
from pixsearch.models.hub import resolve_source
from pixsearch.models.ofa.config import ANSWER_RELATION
from pixsearch.models.ofa.pipeline import EntailmentResult, OfaVisualEntailment
from pixsearch.models.runtime import resolve_device, resolve_dtype
from pixsearch.models.spec import ModelOptions, ModelSpec

log = logging.getLogger(__name__)

REQUIRED_FILES = ("config.json", "vocab.json", "merges.txt")
GEN_TYPES = ("generation", "traverse")


def modelscope_output(result: EntailmentResult, gen_type: str) -> dict[str, Any]:
    """What ModelScope's `pipeline('visual-entailment')` returns for one pair.

    traverse: {'labels': answer, 'scores': its probability}. generation: {'labels': [answer],
    'scores': [1.0]} (lists of one; ModelScope gives generated labels a constant score).
    """
    if gen_type == "traverse":
        best = result.traverse.best
        return {"labels": result.traverse_label, "scores": float(result.traverse.probs[best])}
    return {"labels": [result.generation_label], "scores": [1.0]}


class OfaEntailer:
    """Judges whether an image entails, contradicts or is neutral to a statement.

    `judge` reports the traverse-mode probabilities: traverse scores each answer's complete
    log-probability under the answer-restricted softmax, so a softmax over the three answers is a
    real distribution (and it is the score ModelScope itself reports in that mode). Generation mode
    yields a single beam-search label with a constant score of 1.0, and its hypothesis scores are
    length-normalised over the whole forced prompt, so they are not answer probabilities.
    `pipeline_label` / `pipeline_output` give ModelScope's answer in either mode, by default the
    `gen_type` of the model's configuration.json, as ModelScope's pipeline would.
    """

    def __init__(self, spec: ModelSpec, options: ModelOptions) -> None:
        self.spec = spec
        self.options = options
        self._engine: OfaVisualEntailment | None = None

    def load(self) -> None:
        """Load tokenizer, configuration and weights once.

        Raises:
            ModelNotFoundError: the spec names no usable directory or checkpoint.
            ModelLoadError: unsupported settings, or checkpoint keys that do not fit (named).
        """
        if self._engine is not None:
            return
        model_dir = resolve_source(self.spec, required=REQUIRED_FILES)
        dtype, device = resolve_dtype(self.options), resolve_device(self.options)
        self._engine = OfaVisualEntailment.from_dir(model_dir, dtype=dtype, device=device)
        log.info("loaded OFA visual entailment %s (%s, %s)", self.spec, dtype, device)

    def close(self) -> None:
        self._engine = None

    @property
    def engine(self) -> OfaVisualEntailment:
        """The loaded model, processor and answer trie (loads on first use)."""
        self.load()
        assert self._engine is not None
        return self._engine

    @property
    def default_gen_type(self) -> str:
        """configuration.json's `model.gen_type` ('generation' unless it says otherwise)."""
        return self.engine.task.gen_type

    def judge(self, image: Image.Image, statement: str) -> dict[str, float]:
        """Probabilities of entailment (answer 'yes'), neutral ('maybe') and contradiction ('no').

        Returns:
            {'entailment': p, 'neutral': p, 'contradiction': p}, summing to 1.
        """
        engine = self.engine
        result = engine.run(image, statement, generation=False)
        probs = result.traverse.probs.double()
        probs = probs / probs.sum()
        return {ANSWER_RELATION[answer]: float(p) for answer, p in zip(engine.answers, probs, strict=True)}

    def analyze(self, image: Image.Image, statement: str) -> EntailmentResult:
        """Both modes' full results (scores, hypotheses, labels) for one pair."""
        return self.engine.run(image, statement, generation=True)

    def pipeline_output(self, image: Image.Image, statement: str, gen_type: str | None = None) -> dict[str, Any]:
        """ModelScope's pipeline output for one pair in `gen_type` mode (default: the configured one).

        Raises:
            ConfigError: `gen_type` is not 'generation' or 'traverse'.
        """
        gen_type = gen_type or self.default_gen_type
        if gen_type not in GEN_TYPES:
            raise ConfigError(f"gen_type {gen_type!r} is not one of {', '.join(GEN_TYPES)}")
        result = self.engine.run(image, statement, generation=gen_type == "generation")
        return modelscope_output(result, gen_type)

    def pipeline_label(self, image: Image.Image, statement: str, gen_type: str | None = None) -> str:
        """ModelScope's answer ('yes', 'no' or 'maybe') for one pair in `gen_type` mode (default: the configured one)."""
        labels = self.pipeline_output(image, statement, gen_type)["labels"]
        return labels if isinstance(labels, str) else labels[0]

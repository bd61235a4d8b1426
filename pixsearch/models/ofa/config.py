"""The two OFA configurations: the network (`config.json`) and the task (`configuration.json`).

Field names and defaults follow ModelScope's `OFAConfig` and `OfaForAllTasks`, so an original
model directory reads the same way here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixsearch.errors import ModelLoadError

log = logging.getLogger(__name__)

# Bottleneck counts of the three ResNet stages, per `resnet_type` (ModelScope builds resnet34 and
# resnet50 alike; every type uses Bottlenecks and the same hard-coded widths).
RESNET_LAYERS: dict[str, tuple[int, int, int]] = {
    "resnet18": (2, 2, 2),
    "resnet34": (3, 4, 6),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}

# The SNLI-VE answers and the entailment relation each one names.
DEFAULT_ANSWER2LABEL: dict[str, int] = {"no": 0, "yes": 1, "maybe": 2}
ANSWER_RELATION: dict[str, str] = {"yes": "entailment", "maybe": "neutral", "no": "contradiction"}
DEFAULT_PROMPT = ' does the image describe " {} "?'


@dataclass(frozen=True)
class OfaConfig:
    """The network shape, read from `config.json` (unknown keys are ignored)."""

    vocab_size: int = 59457
    max_position_embeddings: int = 1024
    d_model: int = 512
    encoder_layers: int = 4
    encoder_ffn_dim: int = 2048
    encoder_attention_heads: int = 8
    decoder_layers: int = 4
    decoder_ffn_dim: int = 2048
    decoder_attention_heads: int = 8
    activation_function: str = "gelu"
    scale_embedding: bool = False
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    encoder_normalize_before: bool = True
    decoder_normalize_before: bool = True
    normformer: bool = True
    layernorm_embedding: bool = True
    patch_layernorm_embedding: bool = True
    resnet_type: str = "resnet101"
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    add_type_embedding: bool = True
    share_decoder_input_output_embed: bool = True
    attn_scale_factor: float = 2.0
    code_layernorm_embedding: bool = True
    code_image_size: int = 128
    entangle_position_embedding: bool = False
    disable_entangle: bool = False
    interpolate_position: bool = False
    orig_patch_image_size: int = 224
    share_attn_bias: bool = False
    use_image_feature: bool = True
    use_ofasys: bool = False
    use_gamma_feature: bool = False
    gamma: float = 1.0
    exclude_mlp: bool = True
    mlp_dim: int = 512
    temperature_init_value: float | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> OfaConfig:
        """Build from config.json's values; raises ModelLoadError for variants this port does not run."""
        names = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in names})
        config.check()
        return config

    @classmethod
    def from_file(cls, path: Path) -> OfaConfig:
        """Read `config.json`; raises ModelLoadError when it is unreadable or describes an unsupported variant."""
        return cls.from_dict(_read_json(path))

    def check(self) -> None:
        problems = []
        if self.use_ofasys:
            problems.append("use_ofasys=True (the OFA-Sys ViT variant) is not supported, only the ResNet one")
        if not self.use_image_feature:
            problems.append("use_image_feature=False leaves no image input, which visual entailment needs")
        if self.resnet_type not in RESNET_LAYERS:
            problems.append(f"resnet_type {self.resnet_type!r} is not one of {sorted(RESNET_LAYERS)}")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                problems.append(f"d_model {self.d_model} is not divisible by {side}_attention_heads {heads}")
        if problems:
            raise ModelLoadError("unsupported OFA config: " + "; ".join(problems))


@dataclass(frozen=True)
class BeamSettings:
    """The sequence generator's settings (`model.beam_search` plus ModelScope's defaults)."""

    beam_size: int = 5
    max_len_a: float = 0.0
    max_len_b: int = 16
    min_len: int = 1
    no_repeat_ngram_size: int = 3
    normalize_scores: bool = True
    len_penalty: float = 1.0
    unk_penalty: float = 0.0
    temperature: float = 1.0


@dataclass(frozen=True)
class OfaTaskConfig:
    """What `configuration.json` says about the task: prompt, preprocessing, decoding mode and answers."""

    task: str = "visual-entailment"
    gen_type: str = "generation"
    prompt_type: str = "none"
    prompt: str = DEFAULT_PROMPT
    max_src_length: int = 256
    patch_image_size: int = 480
    imagenet_default_mean_and_std: bool = False
    language: str = "en"
    answer2label: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_ANSWER2LABEL))
    beam: BeamSettings = field(default_factory=BeamSettings)

    @classmethod
    def from_dir(cls, model_dir: Path) -> OfaTaskConfig:
        """Read `configuration.json` (and the answer file it names) from a model directory.

        A directory without `configuration.json` gets ModelScope's defaults and the SNLI-VE answers.

        Raises:
            ModelLoadError: unreadable files, or settings this port does not implement.
        """
        path = model_dir / "configuration.json"
        if not path.exists():
            log.info("%s has no configuration.json; using ModelScope's OFA defaults", model_dir)
            return cls()
        raw = _read_json(path)
        model = raw.get("model", {})
        answers = dict(DEFAULT_ANSWER2LABEL)
        if model.get("answer2label"):
            answers = _read_json(model_dir / model["answer2label"])
        beam_names = {f.name for f in dataclasses.fields(BeamSettings)}
        beam = BeamSettings(**{k: v for k, v in model.get("beam_search", {}).items() if k in beam_names})
        config = cls(
            task=raw.get("task", "visual-entailment"),
            gen_type=model.get("gen_type", "generation"),
            prompt_type=model.get("prompt_type", "none"),
            prompt=model.get("prompt", DEFAULT_PROMPT),
            max_src_length=int(model.get("max_src_length", 256)),
            patch_image_size=int(model.get("patch_image_size", 480)),
            imagenet_default_mean_and_std=bool(model.get("imagenet_default_mean_and_std", False)),
            language=model.get("language", "en"),
            answer2label=answers,
            beam=beam,
        )
        config.check()
        return config

    def check(self) -> None:
        problems = []
        if self.gen_type not in {"generation", "traverse"}:
            problems.append(f"model.gen_type {self.gen_type!r} is not 'generation' or 'traverse'")
        if self.prompt_type not in {"none", "prev_output"}:
            problems.append(f"model.prompt_type {self.prompt_type!r} is not 'none' or 'prev_output'")
        if self.language != "en":
            problems.append(f"model.language {self.language!r}: only the English (BPE) OFA models are supported")
        if set(self.answer2label) != set(ANSWER_RELATION):
            problems.append(
                f"answers {sorted(self.answer2label)} are not the entailment answers {sorted(ANSWER_RELATION)}"
            )
        if self.task != "visual-entailment":
            log.warning("configuration.json names task %r; treating it as visual-entailment", self.task)
        if problems:
            raise ModelLoadError("unsupported OFA configuration.json: " + "; ".join(problems))

    @property
    def answers(self) -> list[str]:
        """The answers in `answer2label.json` key order, which is the order ModelScope scores them in."""
        return list(self.answer2label)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from error
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object")
    return value

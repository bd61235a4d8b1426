"""A tiny VLE built from a config with random weights, saved in the publisher's layout, for training
from scratch (the synthetic world).

The folder is what hfl/vle-* folders hold: config.json (VLEConfig.to_dict's keys), pytorch_model.bin
(a head model: backbone under `vle.`), a sentencepiece `spm.model` with DeBERTa-v3's special-token
layout, trained on the training texts, and the tokenizer and CLIP image processor JSON files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from pixsearch.models.vle.config import VleConfig
from pixsearch.models.vle.heads import HEAD_MODELS, Head
from pixsearch.train.tiny import TinyConfig, clip_image_processor

SPECIALS = {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]"}
MASK = "[MASK]"


def train_sentencepiece(directory: Path, texts: Iterable[str], vocab_size: int = 256) -> int:
    """Train a unigram `spm.model` on `texts` ([PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3); returns its size."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        hard_vocab_limit=False,  # a small corpus has fewer pieces than asked for
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece=SPECIALS["pad"],
        bos_piece=SPECIALS["cls"],
        eos_piece=SPECIALS["sep"],
        unk_piece=SPECIALS["unk"],
        minloglevel=2,
    )
    (Path(directory) / "spm.model").write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_file=str(Path(directory) / "spm.model")).get_piece_size()


def vle_config(vocab_size: int, config: TinyConfig, labels: list[str]) -> dict[str, Any]:
    """config.json of a tiny VLE: DeBERTa-v2 text tower, CLIP vision tower and co-attention, all `config` sized."""
    tower = dict(
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=4 * config.hidden,
    )
    text = dict(
        tower, model_type="deberta-v2", vocab_size=vocab_size, max_position_embeddings=64, relative_attention=True,
        position_buckets=16, pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm",
        type_vocab_size=0, position_biased_input=False, layer_norm_eps=1e-7, pad_token_id=0,
    )  # fmt: skip
    vision = dict(
        tower, model_type="clip_vision_model", image_size=config.image_size, patch_size=config.patch_size,
        hidden_act="quick_gelu",
    )  # fmt: skip
    return dict(
        tower,
        model_type="vle",
        architectures=["VLEForVQA"],
        text_config=text,
        vision_config=vision,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        num_token_types=2,
        id2label={str(i): label for i, label in enumerate(labels)},
        label2id={label: i for i, label in enumerate(labels)},
    )


def _processor_files(directory: Path, mask_id: int, image_size: int) -> None:
    tokenizer = {
        "do_lower_case": False,
        "model_max_length": 64,
        "split_by_punct": False,
        "tokenizer_class": "DebertaV2Tokenizer",
        "processor_class": "VLEProcessor",
        "bos_token": SPECIALS["cls"],
        "cls_token": SPECIALS["cls"],
        "eos_token": SPECIALS["sep"],
        "sep_token": SPECIALS["sep"],
        "pad_token": SPECIALS["pad"],
        "unk_token": SPECIALS["unk"],
        "mask_token": MASK,
    }
    specials = {key: tokenizer[key] for key in tokenizer if key.endswith("_token")}
    # the VLE processor reads it as CLIPImageProcessor does (shortest edge, centre crop)
    image = {**clip_image_processor(image_size), "processor_class": "VLEProcessor", "do_convert_rgb": True}
    for name, data in (
        ("tokenizer_config.json", tokenizer),
        ("special_tokens_map.json", specials),
        ("added_tokens.json", {MASK: mask_id}),
        ("preprocessor_config.json", image),
    ):
        (directory / name).write_text(json.dumps(data, indent=2) + "\n")


def build_tiny_vle(
    directory: Path,
    head: Head,
    texts: Iterable[str],
    config: TinyConfig | None = None,
    seed: int = 0,
    labels: list[str] | None = None,
) -> Path:
    """Build a randomly initialised VLE head model (`Head.VQA` over `labels`, or `Head.ITM`) and save it.

    The tokenizer is trained on `texts` (sentences or single words). A VQA model gets the labels
    yes and no unless told others: training adds every answer of its data (see `VleVqaTask`).

    Raises:
        ConfigError: an inconsistent size config.
    """
    config = config or TinyConfig()
    config.check()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pieces = train_sentencepiece(directory, texts)
    # the published tokenizers add [MASK] right after the sentencepiece vocabulary
    raw = vle_config(pieces + 1, config, labels or ["yes", "no"])
    if head is Head.ITM:
        raw["architectures"] = ["VLEForITM"]
        raw.pop("id2label"), raw.pop("label2id")
    torch.manual_seed(seed)
    model = HEAD_MODELS[head](VleConfig.from_dict(json.loads(json.dumps(raw))))
    (directory / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    _processor_files(directory, pieces, config.image_size)
    return directory

"""Tiny random models built from configs and saved like published checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def clip_tokenizer(directory: Path):
    """A CLIP BPE tokenizer with byte-level pieces only (no merges): every text tokenises."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])
    tokenizer.save_pretrained(directory)
    return tokenizer


TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def _save_dual(directory: Path, kind: str, seed: int, image_size: int) -> Path:
    """A tiny CLIP ('clip') or SigLIP ('siglip') with the byte-level tokenizer, saved like a hub checkpoint."""
    import transformers

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(directory)
    text = dict(TINY_TOWER, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    vision = dict(TINY_TOWER, image_size=image_size, patch_size=8)
    if kind == "clip":
        text |= dict(
            max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
        )
        config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        processor = {
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
            "do_center_crop": True,
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
        }
        model = transformers.CLIPModel(config)
    else:
        config = transformers.SiglipConfig(text_config=dict(text, max_position_embeddings=64), vision_config=vision)
        processor = {
            "size": {"height": image_size, "width": image_size},
            "image_mean": [0.5] * 3,
            "image_std": [0.5] * 3,
        }
        model = transformers.SiglipModel(config)
    model.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(dict(processor, resample=3)))
    return directory


def save_tiny_clip(directory: Path, seed: int = 0, image_size: int = 32) -> Path:
    return _save_dual(directory, "clip", seed, image_size)


def save_tiny_siglip(directory: Path, seed: int = 0, image_size: int = 32) -> Path:
    return _save_dual(directory, "siglip", seed, image_size)


BLIP_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] [DEC] a the red blue green circle square triangle on white background "
    "what color is how many shapes are in picture ? of and yes no 1 2 3 small big photo there"
).split()


def redraw(model: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter so no bias is zero and activations stay around 1 (HF init is near-degenerate)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim >= 2:
                param.copy_(noise / param[0].numel() ** 0.5)
            elif "LayerNorm" in name or "layer_norm" in name:
                param.copy_(1 + 0.2 * noise)
            else:
                param.copy_(0.1 * noise)


def tiny_blip_config(image_size: int = 32):
    from transformers import BlipConfig

    text = dict(
        vocab_size=len(BLIP_VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        pad_token_id=BLIP_VOCAB.index("[PAD]"),
        bos_token_id=BLIP_VOCAB.index("[DEC]"),
        sep_token_id=BLIP_VOCAB.index("[SEP]"),
        eos_token_id=BLIP_VOCAB.index("[SEP]"),
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
    )
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16)


def save_tiny_blip(directory: Path, kind: str, seed: int = 0, image_size: int = 32) -> Path:
    """kind: 'itm', 'caption' or 'vqa'; saved with its tokenizer and image processor like a hub checkpoint."""
    import transformers
    from transformers import BertTokenizer
    from transformers.models.blip import BlipImageProcessorPil

    classes = {
        "itm": "BlipForImageTextRetrieval",
        "caption": "BlipForConditionalGeneration",
        "vqa": "BlipForQuestionAnswering",
    }
    torch.manual_seed(seed)
    model = getattr(transformers, classes[kind])(tiny_blip_config(image_size))
    redraw(model, seed)
    model.save_pretrained(directory)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(BLIP_VOCAB) + "\n")
    BertTokenizer(vocab=str(vocab_file), bos_token="[DEC]").save_pretrained(directory)
    BlipImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory


def save_tiny_chinese_clip(directory: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A Chinese-CLIP with a BERT WordPiece vocabulary of single Chinese characters and a few words."""
    from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPModel

    torch.manual_seed(seed)
    words = (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("一只狗在海滩上红色的圆形蓝正方猫") + ["a", "dog", "cat"]
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    config = ChineseCLIPConfig(
        text_config=dict(
            vocab_size=len(words),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=8,
        ),
        projection_dim=16,
    )
    ChineseCLIPModel(config).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"height": image_size, "width": image_size},
                "do_center_crop": False,
                "resample": 3,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }
        )
    )
    return directory


def save_tiny_sentence_transformer(directory: Path, out_dim: int = 16, seed: int = 0) -> Path:
    """A sentence-transformers folder: a tiny multilingual-ish BERT, mean pooling, a Dense layer to `out_dim`."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ] + "a dog on the beach un chien sur la plage 一只狗在海滩上".split()
    words += list("一只狗在海滩上")
    (directory / "vocab.txt").write_text("\n".join(dict.fromkeys(words)) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(dict.fromkeys(words)),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(directory)
    (directory / "sentence_bert_config.json").write_text('{"max_seq_length": 32, "do_lower_case": false}')
    (directory / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
            ]
        )
    )
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    (directory / "2_Dense").mkdir(exist_ok=True)
    (directory / "2_Dense" / "config.json").write_text(
        json.dumps(
            {
                "in_features": 32,
                "out_features": out_dim,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            }
        )
    )
    torch.save({"linear.weight": torch.randn(out_dim, 32) / 32**0.5}, directory / "2_Dense" / "pytorch_model.bin")
    return directory


OFA_CORPUS = [
    "a red circle on a white background",
    "a blue square next to a green triangle",
    "there are two birds in the sky",
    "the dog is not sleeping",
    ' does the image describe " a photo of a cat "?',
]


def save_tiny_ofa(directory: Path, seed: int = 0) -> Path:
    """A tiny random OFA visual-entailment directory in ModelScope's layout (BPE vocab, configs, weights)."""
    from tokenizers import ByteLevelBPETokenizer

    from pixsearch.models.ofa.config import OfaConfig
    from pixsearch.models.ofa.modeling import OfaModel
    from pixsearch.models.ofa.tokenizer import NUM_BINS, NUM_CODES

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        OFA_CORPUS * 3, vocab_size=300, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        show_progress=False,
    )  # fmt: skip
    bpe.save_model(str(directory))
    vocab = json.loads((directory / "vocab.json").read_text())
    vocab["<mask>"] = len(vocab)  # BART keeps <mask> last
    (directory / "vocab.json").write_text(json.dumps(vocab))
    config = {
        "vocab_size": len(vocab) + NUM_CODES + NUM_BINS,
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 48,
        "resnet_type": "resnet18",
        "token_bucket_size": 8,
        "image_bucket_size": 4,
        "max_position_embeddings": 64,
        "code_image_size": 32,
    }
    (directory / "config.json").write_text(json.dumps(config))
    task = {
        "task": "visual-entailment",
        "model": {
            "type": "ofa",
            "beam_search": {"beam_size": 3, "max_len_b": 16, "min_len": 1, "no_repeat_ngram_size": 3},
            "max_src_length": 24,
            "prompt_type": "prev_output",
            "gen_type": "traverse",
            "patch_image_size": 32,
            "answer2label": "answer2label.json",
        },
    }
    (directory / "configuration.json").write_text(json.dumps(task))
    (directory / "answer2label.json").write_text(json.dumps({"no": 0, "yes": 1, "maybe": 2}))
    torch.manual_seed(seed)
    torch.save(OfaModel(OfaConfig.from_dict(config)).state_dict(), directory / "pytorch_model.bin")
    return directory


MPLUG_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "dog", "circle", "?", "狗", "在", "跑"]
MPLUG_BERT = {
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 48,
    "num_hidden_layers": 3,
    "text_encoder_layers": 1,
    "fusion_layers": 2,
    "text_decode_layers": 2,
    "stride_layer": 1,
    "encoder_width": 32,
    "max_position_embeddings": 32,
    "vocab_size": len(MPLUG_VOCAB),
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "type_vocab_size": 2,
    "pad_token_id": 0,
}
MPLUG_YAML = {
    "bert_config": "config_bert.json",
    "image_res": 32,
    "clip_name": "ViT-B-16",
    "vision_width": 64,
    "clip_vision_width": 64,
    "clip_vision_layers": 1,
    "clip_vision_patch_size": 16,
    "embed_dim": 8,
    "beam_size": 3,
    "min_length": 1,
    "max_length": 5,
}


def save_tiny_mplug(directory: Path, task: str, seed: int, **bert: int) -> Path:
    """A random mPLUG directory in ModelScope's layout, with a few unused keys as real checkpoints have;
    `bert` overrides config_bert.json settings (e.g. fusion_layers, stride_layer)."""
    import yaml

    from pixsearch.models.mplug.config import read_config
    from pixsearch.models.mplug.modeling import TASK_PARTS, MplugModel

    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump({"task": task, **MPLUG_YAML}))
    (directory / "config_bert.json").write_text(json.dumps({**MPLUG_BERT, **bert}))
    (directory / "configuration.json").write_text(json.dumps({"framework": "pytorch", "task": task}))
    (directory / "vocab.txt").write_text("\n".join(MPLUG_VOCAB) + "\n", encoding="utf-8")
    torch.manual_seed(seed)
    model = MplugModel(read_config(directory), TASK_PARTS[task])
    for name, param in model.named_parameters():
        if "LayerNorm" in name or "ln_" in name or "layer_norm" in name:
            torch.nn.init.normal_(param, 1.0 if name.endswith("weight") else 0.0, 0.1)
        else:
            torch.nn.init.normal_(param, 0.0, 0.3 if param.ndim > 1 else 0.1)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["model.temp"] = torch.tensor(0.07)
    state["model.visual_encoder.visual.proj"] = torch.zeros(64, 8)
    state["model.fusion_encoder.encoder.layer.0.output.dense.bias"] = torch.zeros(32)  # built, never run
    torch.save(state, directory / "pytorch_model.bin")
    return directory

"""Shared bits of the benchmarks: real-sized models with random weights, timing helpers."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def save_vit_b32_clip(directory: Path) -> Path:
    """A CLIP ViT-B/32 with the real config (transformers' defaults are ViT-B/32) and random weights."""
    import torch
    from tiny_models import clip_tokenizer
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    tokenizer = clip_tokenizer(directory)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        projection_dim=512,
    )
    CLIPModel(config).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        '{"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": true,'
        ' "resample": 3, "image_mean": [0.48145466, 0.4578275, 0.40821073],'
        ' "image_std": [0.26862954, 0.26130258, 0.27577711]}'
    )
    return directory


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.start


__all__ = ["Timer", "percentile", "save_vit_b32_clip", "statistics"]

"""Published-size rerankers with random weights, FLOP counting and matmul probes for bench/query_latency.py.

Sizes (random weights, so only speed, memory and agreement between code paths mean anything):
- BLIP-base ITM: transformers' BlipConfig defaults, ViT-B/16 at 384 px (577 image tokens), BERT-base
  text with cross-attention in all 12 layers. Weights redrawn as the tests' tiny models are (activations
  around 1; transformers' init gives ITM logits that barely depend on the image).
- mPLUG-ITM: ModelScope's retrieval model `mplug_image-text-retrieval_flickr30k_large_en`: ViT-L/14 at
  384 px (730 image tokens after visn_fc, width 768), BERT-base parts, 6 text + 6 fusion layers;
  stride_layer 3 (assumed: fusion layers 0-2 cross-attend, 3 attends jointly, 4-5 cross-attend).
- VLE-ITM: hfl/vle-base: CLIP ViT-B/16 (384 px assumed: 577 tokens), DeBERTa-v3-base text, 6 co-attention
  layers of width 768 per side.
The native models (mPLUG, VLE) start from vision features: their vision towers are not run.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from int8_layers import Int8Linear
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

QUERY_TOKENS = 16
# the machine's matmul limit: the best of linear layers at these row counts (a top-32 text side has 512
# rows; 4096 is where a GEMM on this kind of CPU stops getting faster)
LIMIT_ROWS = (512, 4096)


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """torch counts SDPA only on CUDA; on CPU it is the same two batched matmuls."""
    *batch, length, size = query
    return 4 * functools.reduce(lambda a, b: a * b, batch, 1) * length * key[-2] * size


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()
    return counter.get_total_flops()


def per_candidate_flops(run: Callable[[int], object]) -> int:
    """FLOPs one more candidate adds: run(2) - run(1) (the query's own work cancels out)."""
    return flops(lambda: run(2)) - flops(lambda: run(1))


class Clock:
    """What the benchmark times with: wall time (what a person waits), or this process's CPU time (with
    one thread, the compute alone: on a busy machine it leaves out the time other processes hold the
    core). One per run, chosen by --clock."""

    now: Callable[[], float] = time.perf_counter

    @classmethod
    def use(cls, name: str) -> None:
        cls.now = {"wall": time.perf_counter, "cpu": time.process_time}[name]


def best_and_median(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Seconds of the fastest and the median of `reps` runs (after one warm-up run)."""
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(reps):
            start = Clock.now()
            fn()
            times.append(Clock.now() - start)
    return min(times), statistics.median(times)


def linear_gflops(dtype: str, rows: int, out: int, width: int = 768, window: float = 0.5) -> float:
    """Sustained GFLOP/s of a linear layer [rows, width] -> [rows, out] at 'float32', 'bfloat16',
    'float16' or 'int8': as many runs as fill `window` seconds, the best of three windows (a window as
    long as a path's own runs meets the same interference from other processes)."""
    x, layer = torch.randn(rows, width), torch.nn.Linear(width, out)
    if dtype == "int8":
        fn: Callable[[], object] = functools.partial(Int8Linear(layer), x)
    else:
        fn = functools.partial(layer.to(getattr(torch, dtype)), x.to(getattr(torch, dtype)))
    best = 0.0
    with torch.inference_mode():
        fn()
        for _ in range(3):
            start, runs = Clock.now(), 0
            while runs == 0 or Clock.now() - start < window:
                fn()
                runs += 1
            best = max(best, 2 * rows * width * out * runs / (Clock.now() - start) / 1e9)
    return best


def matmul_gflops(dtype: str, rows: tuple[int, ...]) -> float:
    """The machine's matmul throughput at `dtype`: the best of linear layers 768->768 and 768->3072 over `rows`."""
    return max(linear_gflops(dtype, r, out) for r in rows for out in (768, 3072))


def save_blip_base_itm(directory: Path, words: list[str]) -> Path:
    from tiny_models import redraw
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval
    from transformers.models.blip import BlipImageProcessorPil

    torch.manual_seed(0)
    config = BlipConfig()  # the defaults are BLIP base: ViT-B/16 at 384 px, BERT-base text with cross-attention
    model = BlipForImageTextRetrieval(config)
    redraw(model, 0)
    model.save_pretrained(directory)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + sorted(set(words))
    vocab += [f"[unused{i}]" for i in range(config.text_config.vocab_size - len(vocab))]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab=str(directory / "vocab.txt"), bos_token="[DEC]").save_pretrained(directory)
    BlipImageProcessorPil(size={"height": 384, "width": 384}).save_pretrained(directory)
    return directory


def mplug_large_itm():
    """(model with text encoder, fusion and ITM head, image tokens) at the retrieval model's size."""
    from pixsearch.models.mplug.config import RETRIEVAL, BertSettings, MplugConfig
    from pixsearch.models.mplug.modeling import FUSION, ITM, TEXT, MplugModel

    bert = BertSettings(
        vocab_size=30522, hidden_size=768, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
        layer_norm_eps=1e-12, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0, encoder_width=768,
        num_hidden_layers=12, text_encoder_layers=6, fusion_layers=6, text_decode_layers=12, stride_layer=3,
    )  # fmt: skip
    config = MplugConfig(
        task=RETRIEVAL, image_res=384, clip_name="ViT-L-14", vision_width=1024, clip_vision_width=1024,
        clip_vision_layers=24, clip_vision_patch_size=14, embed_dim=256, beam_size=5, min_length=1, max_length=10,
        bert=bert,
    )  # fmt: skip
    torch.manual_seed(0)
    return MplugModel(config, {TEXT, FUSION, ITM}).eval(), (384 // 14) ** 2 + 1


def vle_base_itm():
    """(VleForItm, image tokens) at VLE-base's size; its vision tower is built one layer deep (never run)."""
    from pixsearch.models.vle import VleConfig
    from pixsearch.models.vle.heads import VleForItm

    text = dict(
        model_type="deberta-v2", vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512, relative_attention=True, position_buckets=256,
        pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm", type_vocab_size=0,
        position_biased_input=False, layer_norm_eps=1e-7, pad_token_id=0,
    )  # fmt: skip
    vision = dict(
        model_type="clip_vision_model", hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
        intermediate_size=3072, image_size=384, patch_size=16, hidden_act="quick_gelu",
    )  # fmt: skip
    raw = dict(model_type="vle", text_config=text, vision_config=vision, hidden_size=768, num_hidden_layers=6)
    torch.manual_seed(0)
    return VleForItm(VleConfig.from_dict(raw)).eval(), (384 // 16) ** 2 + 1

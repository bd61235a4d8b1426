"""The mPLUG-ITM and VLE-ITM part of bench/query_latency.py: published sizes, random weights, from vision features."""

from __future__ import annotations

import numpy as np
import torch
from rerank_models import (
    LIMIT_ROWS,
    QUERY_TOKENS,
    best_and_median,
    matmul_gflops,
    mplug_large_itm,
    per_candidate_flops,
    vle_base_itm,
)

from pixsearch.models.image_state import score_items
from pixsearch.rerank.cache import feature_bytes


def _mplug(k: int):
    from pixsearch.models.mplug.itm import MplugImageState, MplugItmPass

    model, tokens = mplug_large_itm()
    # ModelScope pads every text to 25 tokens
    mask = torch.zeros(1, 25, dtype=torch.long)
    mask[:, :QUERY_TOKENS] = 1
    ids = torch.randint(1000, 30000, (1, 25)) * mask
    with torch.inference_mode():
        text = model.text_hidden(ids, mask)
    itm = MplugItmPass(model)

    def reference(features: torch.Tensor) -> torch.Tensor:
        n = features.shape[0]
        return model.itm_logits(features, text.expand(n, -1, -1), mask.expand(n, -1))[:, 1]

    return "mPLUG-ITM (large retrieval, 730 image tokens)", tokens, itm, MplugImageState, reference, (text, mask)


def _vle(k: int):
    from pixsearch.models.vle.itm import VleImageState, VleItmPass

    model, tokens = vle_base_itm()
    ids = torch.randint(5, 128000, (1, QUERY_TOKENS))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        text = model.vle.get_text_features(ids, mask)
    itm = VleItmPass(model)

    def reference(features: torch.Tensor) -> torch.Tensor:
        n = features.shape[0]
        return model.head_logits(model.vle.fuse(text.expand(n, -1, -1), mask.expand(n, -1), features))[:, 1]

    return "VLE-ITM (base, 577 image tokens)", tokens, itm, VleImageState, reference, (text, mask)


def native_section(name: str, k: int, reps: int) -> None:
    label, tokens, itm, state_type, reference, (text, mask) = {"mplug": _mplug, "vle": _vle}[name](k)
    torch.manual_seed(1)
    features = [torch.randn(tokens, 768) for _ in range(k)]  # post-LayerNorm features: about unit variance

    def run(items: list, keep: bool = False):
        return score_items(
            items,
            state_type,
            lambda f, own: itm.states(torch.stack(f), own),
            lambda s: itm.logits(text, mask, s)[:, 1],
            64,
            keep,
        )

    with torch.inference_mode():
        expected = reference(torch.stack(features)).numpy()
        from_features, states = run(features, keep=True)
        from_states = run(states)[0]
    print(f"{label}, top {k}, fastest of {reps}:")
    for path, items, scores in (
        ("vision cached", features, from_features),
        ("vision + image states cached", states, from_states),
    ):
        seconds, _ = best_and_median(lambda items=items: run(items), reps)
        flop = per_candidate_flops(lambda n, items=items: run(items[:n]))
        gflops = matmul_gflops("float32", LIMIT_ROWS)
        limit = flop / (gflops * 1e9)
        print(
            f"  {path:<30} {seconds / k * 1e3:8.1f} ms/candidate  {flop / 1e9:6.2f} GFLOP  limit {limit * 1e3:7.1f} ms  "
            f"ratio {seconds / k / limit:.2f}; max score difference from the reference forward "
            f"{np.abs(scores - expected).max():.2e}"
        )
    print(
        f"  memory per image: vision features {feature_bytes(features[0]) / 1e6:.2f} MB, image state "
        f"{states[0].nbytes / 1e6:.1f} MB (float32)"
    )

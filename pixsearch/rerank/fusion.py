"""How a reranker's score and the first-stage similarity combine."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from pixsearch.errors import ConfigError


class Fusion(StrEnum):
    ITM_PLUS_SIMILARITY = "itm+sim"  # BLIP / LAVIS: ITM match logit + ITC cosine
    ITM = "itm"  # mPLUG: the ITM logit alone

    @classmethod
    def parse(cls, text: str) -> Fusion:
        try:
            return cls(text)
        except ValueError:
            raise ConfigError(f"fusion {text!r} is not one of {', '.join(m.value for m in cls)}") from None


def fuse(
    itm: npt.NDArray[np.float32],
    similarity: npt.NDArray[np.float32],
    fusion: Fusion,
    similarity_weight: float = 1.0,
) -> npt.NDArray[np.float32]:
    """The final scores: the ITM logit, plus (for itm+sim) the first-stage similarity times its weight.

    LAVIS adds BLIP's raw ITC cosine (weight 1). A reranker weaker than its dual encoder at telling
    unrelated images apart does better with the dual encoder's own logit scale as the weight (CLIP's
    learned temperature): both terms are then logits, and the reranker decides where the dual
    encoder cannot (near-identical similarities) without overruling it where it is sure.
    """
    if itm.shape != similarity.shape:
        raise ValueError(f"reranker scores {itm.shape} and similarities {similarity.shape} differ in shape")
    if fusion is Fusion.ITM:
        return itm.astype(np.float32)
    return (itm + similarity_weight * similarity).astype(np.float32)


LOGIT_SCALE = "logit-scale"
AUTO = "auto"


def similarity_weight(setting: str | float, encoder: Any = None) -> float:
    """The itm+sim weight a setting names.

    Args:
        setting: a number >= 0; 'logit-scale', the dual encoder's learned inverse temperature (its
            similarity times this is its own logit, on the scale of an ITM logit); or 'auto': the
            logit scale where the dual encoder has one (CLIP), else 1 (LAVIS's weight for BLIP's ITC).
        encoder: the dual encoder whose similarities are fused.

    Raises:
        ConfigError: none of these, or 'logit-scale' with a dual encoder that has no logit scale.
    """
    text = str(setting).strip().lower()
    if text in (LOGIT_SCALE, AUTO):
        if encoder is not None and hasattr(type(encoder), "logit_scale"):
            return float(encoder.logit_scale)
        if text == AUTO:
            return 1.0
        raise ConfigError(f"similarity weight {LOGIT_SCALE!r} needs a dual encoder with a logit scale (CLIP)")
    try:
        weight = float(text)
    except ValueError:
        raise ConfigError(
            f"similarity weight must be a number >= 0, {LOGIT_SCALE!r} or {AUTO!r}, got {setting!r}"
        ) from None
    if not 0 <= weight < float("inf"):
        raise ConfigError(f"similarity weight must be finite and >= 0, got {setting!r}")
    return weight

"""How a reranker's score and the first-stage similarity combine."""

from __future__ import annotations

from enum import StrEnum

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

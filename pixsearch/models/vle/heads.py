"""Task heads on the VLE backbone: image-text matching, VQA and patch-box classification.

As in the original, a head model keeps the backbone under `vle.` and its head under its own name
(`itm_score.fc`, `vqa_classifier.{0,1,3}`, `pbc_classifier.{0,1,3}`).
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import nn

from pixsearch.errors import ModelLoadError
from pixsearch.models.vle.config import VleConfig
from pixsearch.models.vle.modeling import VleModel, VleModelOutput


class Head(StrEnum):
    BASE = "base"
    ITM = "itm"
    VQA = "vqa"
    PBC = "pbc"


# top-level state-dict names of every head the original code defines; a checkpoint may carry the
# heads of other tasks (the pre-trained hfl/vle-base is loaded for both ITM and PBC)
KNOWN_HEAD_PREFIXES = ("itm_score", "vqa_classifier", "pbc_classifier", "mlm_score", "vcr_q2a_logit", "vcr_qa2r_logit")


def _classifier(width: int, out: int) -> nn.Sequential:
    # indices 0, 1, 3 carry weights: Linear, LayerNorm (torch's default eps, as in the original), GELU, Linear
    return nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(), nn.Linear(width, out))


class _ItmScore(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


class _HeadModel(nn.Module):
    """A backbone under `vle` plus one head; `head_logits` maps fused outputs to the head's logits."""

    head_name: str = ""

    def __init__(self, config: VleConfig) -> None:
        super().__init__()
        self.config = config
        self.vle = VleModel(config)

    def head_logits(self, fused: VleModelOutput) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The same inputs as `VleModel`; returns the head's logits."""
        fused = self.vle(input_ids, pixel_values, attention_mask, token_type_ids, position_ids)
        return self.head_logits(fused)


class VleForItm(_HeadModel):
    """Image-text matching: logits [batch, 2], index 1 = match."""

    head_name = "itm_score"

    def __init__(self, config: VleConfig) -> None:
        super().__init__(config)
        self.itm_score = _ItmScore(config.hidden_size * 2)

    def head_logits(self, fused: VleModelOutput) -> torch.Tensor:
        return self.itm_score(fused.pooler_output)


class VleForVqa(_HeadModel):
    """Visual question answering: logits [batch, len(config.id2label)] over the answer vocabulary."""

    head_name = "vqa_classifier"

    def __init__(self, config: VleConfig) -> None:
        super().__init__(config)
        if not config.id2label:
            raise ModelLoadError("VLE VQA model: config.json has no id2label (the answer vocabulary)")
        self.vqa_classifier = _classifier(config.hidden_size * 2, len(config.id2label))

    def head_logits(self, fused: VleModelOutput) -> torch.Tensor:
        return self.vqa_classifier(fused.pooler_output)


class VleForPbc(_HeadModel):
    """Patch-box classification: logits [batch, patches, 2] per image patch (CLS dropped), index 1 = match."""

    head_name = "pbc_classifier"

    def __init__(self, config: VleConfig) -> None:
        super().__init__(config)
        self.pbc_classifier = _classifier(config.hidden_size, 2)

    def head_logits(self, fused: VleModelOutput) -> torch.Tensor:
        return self.pbc_classifier(fused.image_embeds[:, 1:, :])


HEAD_MODELS: dict[Head, type[nn.Module]] = {
    Head.BASE: VleModel,
    Head.ITM: VleForItm,
    Head.VQA: VleForVqa,
    Head.PBC: VleForPbc,
}

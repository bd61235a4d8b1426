"""The mPLUG model: the parts ModelScope's task classes hold, built only as far as a caller needs them.

Parameter names are those of the checkpoints (after ModelScope's `model.` prefix is stripped):
`visual_encoder.visual.*`, `visn_fc`, `visn_layer_norm`, `text_encoder`, `fusion_encoder`,
`vision_proj`, `text_proj`, `itm_head` (retrieval) and `text_decoder` (VQA, captioning).

Computation, as in `modeling_mplug.py` at inference:
- image embeddings: `visual(px, skip_last_layer=True)`, then `visn_layer_norm(visn_fc(.))` where the
  text width differs from the vision width;
- ITC: normalised `vision_proj(image CLS)` and `text_proj(text CLS)`;
- ITM: `itm_head` on the fused text CLS; index 1 means "match";
- VQA: the decoder attends to cat(fused image tokens, fused question tokens);
- captioning: the decoder attends to the image embeddings alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pixsearch.models.mplug.bert import KeyValue, TextDecoder, TextEncoder, memory_mask
from pixsearch.models.mplug.config import CAPTION, RETRIEVAL, VQA, MplugConfig
from pixsearch.models.mplug.fusion import FusionEncoder
from pixsearch.models.mplug.vision import ClipVisionTower

VISION, VISION_PROJ, TEXT, TEXT_PROJ, FUSION, ITM, DECODER = (
    "vision",
    "vision_proj",
    "text",
    "text_proj",
    "fusion",
    "itm_head",
    "decoder",
)

# the parts ModelScope's class for each task holds (its captioning class also builds text_encoder
# and fusion_encoder, which captioning never runs)
TASK_PARTS: dict[str, frozenset[str]] = {
    RETRIEVAL: frozenset({VISION, VISION_PROJ, TEXT, TEXT_PROJ, FUSION, ITM}),
    VQA: frozenset({VISION, TEXT, FUSION, DECODER}),
    CAPTION: frozenset({VISION, TEXT, FUSION, DECODER}),
}

# what each backend needs to run
RUN_PARTS: dict[str, frozenset[str]] = {
    "itc": frozenset({VISION, VISION_PROJ, TEXT, TEXT_PROJ}),
    "itc-text": frozenset({TEXT, TEXT_PROJ}),
    "itc-image": frozenset({VISION, VISION_PROJ}),
    "itm": frozenset({VISION, TEXT, FUSION, ITM}),
    RETRIEVAL: TASK_PARTS[RETRIEVAL],
    VQA: TASK_PARTS[VQA],
    CAPTION: frozenset({VISION, DECODER}),
}

PART_PREFIXES: dict[str, tuple[str, ...]] = {
    VISION: ("visual_encoder.", "visn_fc.", "visn_layer_norm."),
    VISION_PROJ: ("vision_proj.",),
    TEXT: ("text_encoder.",),
    TEXT_PROJ: ("text_proj.",),
    FUSION: ("fusion_encoder.",),
    ITM: ("itm_head.",),
    DECODER: ("text_decoder.",),
}


class VisualEncoder(nn.Module):
    """Holds the tower under `visual` so names read `visual_encoder.visual.*`."""

    def __init__(self, config: MplugConfig) -> None:
        super().__init__()
        self.visual = ClipVisionTower(config)


class MplugModel(nn.Module):
    """The parts of one mPLUG checkpoint named in `parts` (see RUN_PARTS)."""

    def __init__(self, config: MplugConfig, parts: Iterable[str]) -> None:
        super().__init__()
        self.config = config
        self.parts = frozenset(parts)
        hidden = config.bert.hidden_size
        if VISION in self.parts:
            self.visual_encoder = VisualEncoder(config)
            if config.has_visn_fc:
                self.visn_fc = nn.Linear(config.vision_width, hidden)
                self.visn_layer_norm = nn.LayerNorm(hidden, eps=1e-12)
        if TEXT in self.parts:
            self.text_encoder = TextEncoder(config.bert)
        if FUSION in self.parts:
            self.fusion_encoder = FusionEncoder(config.bert)
        if VISION_PROJ in self.parts:
            self.vision_proj = nn.Linear(hidden, config.embed_dim)
        if TEXT_PROJ in self.parts:
            self.text_proj = nn.Linear(hidden, config.embed_dim)
        if ITM in self.parts:
            self.itm_head = nn.Linear(hidden, 2)
        if DECODER in self.parts:
            self.text_decoder = TextDecoder(config.bert)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP tokens after ln_post: [n, 3, R, R] -> [n, 1 + patches, vision width]."""
        return self.visual_encoder.visual(pixels.to(self.device, self.dtype))

    def project_vision(self, tokens: torch.Tensor) -> torch.Tensor:
        """visn_layer_norm(visn_fc(tokens)), or the tokens unchanged when the widths agree."""
        if self.config.has_visn_fc:
            return self.visn_layer_norm(self.visn_fc(tokens))
        return tokens

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        """[n, 3, R, R] -> [n, 1 + patches, hidden]: what the fusion layers and the decoder read."""
        return self.project_vision(self.vision_tokens(pixels))

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids.to(self.device), attention_mask.to(self.device))

    def itc_image(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Unnormalised ITC image vectors [n, embed_dim] from the image CLS."""
        return self.vision_proj(image_embeds[:, 0])

    def itc_text(self, text_hidden: torch.Tensor) -> torch.Tensor:
        """Unnormalised ITC text vectors [n, embed_dim] from the text CLS."""
        return self.text_proj(text_hidden[:, 0])

    def fuse(
        self, image_embeds: torch.Tensor, text_hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused image states, fused text states) for row-aligned images and texts."""
        return self.fusion_encoder(text_hidden, attention_mask.to(self.device), image_embeds)

    def itm_logits(
        self, image_embeds: torch.Tensor, text_hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """[n, 2] logits of (no match, match) for row-aligned pairs."""
        _, text = self.fuse(image_embeds, text_hidden, attention_mask)
        return self.itm_head(text[:, 0])

    def answer_memory(
        self, image_embeds: torch.Tensor, text_hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """VQA decoder memory [n, M + L, hidden] and its 0/1 mask [n, M + L]."""
        image, text = self.fuse(image_embeds, text_hidden, attention_mask)
        image_mask = torch.ones(image.shape[:2], dtype=torch.long, device=image.device)
        return torch.cat([image, text], dim=1), torch.cat([image_mask, attention_mask.to(image.device)], dim=1)

    def caption_memory(self, image_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Captioning decoder memory: the image embeddings and an all-ones mask."""
        return image_embeds, torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)

    def decoder_inputs(self, memory: torch.Tensor, mask: torch.Tensor) -> tuple[list[KeyValue], torch.Tensor]:
        """Cross-attention keys/values per decoder layer and the additive memory mask, computed once."""
        return self.text_decoder.memory_kv(memory), memory_mask(mask, memory.dtype)

"""`st-text:` — a sentence-transformers text model that maps text into a dual encoder's image space
(e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1, taught to match CLIP ViT-B/32's text
tower in 50+ languages). A library indexed with that CLIP can carry it as its query model.

The sentence-transformers folder layout is read directly: modules.json lists a Transformer (a
transformers model in the folder itself), a Pooling module and optional Dense layers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pixsearch.errors import ModelLoadError
from pixsearch.models import hub
from pixsearch.models.embedding import to_embedding
from pixsearch.models.roles import Embedding
from pixsearch.models.runtime import resolve_device, resolve_dtype
from pixsearch.models.spec import ModelOptions, ModelSpec

log = logging.getLogger(__name__)

_ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": torch.nn.Identity,
    "torch.nn.modules.activation.Tanh": torch.nn.Tanh,
    "torch.nn.modules.activation.ReLU": torch.nn.ReLU,
}


def _read_json(path: Path, spec: ModelSpec) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model {spec}: cannot read {path}: {error}") from error


def _dense(folder: Path, spec: ModelSpec) -> torch.nn.Sequential:
    config = _read_json(folder / "config.json", spec)
    activation = _ACTIVATIONS.get(config.get("activation_function", "torch.nn.modules.linear.Identity"))
    if activation is None:
        raise ModelLoadError(f"model {spec}: Dense activation {config['activation_function']!r} is not supported")
    linear = torch.nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
    weights = folder / "model.safetensors"
    if weights.exists():
        from safetensors.torch import load_file

        state = load_file(weights)
    else:
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    state = {key.removeprefix("linear."): value for key, value in state.items()}
    missing, unexpected = linear.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"model {spec}: Dense layer in {folder}: missing {missing}, unexpected {unexpected}")
    return torch.nn.Sequential(linear, activation())


class SentenceTransformerTextEncoder:
    """Text only: `encode_texts` -> unit float32[n, dim] in the space of the image model it was trained for."""

    def __init__(self, spec: ModelSpec, options: ModelOptions) -> None:
        self.spec = spec
        self.options = options
        self._model: Any = None
        self._tokenizer: Any = None
        self._pooling: dict[str, Any] = {}
        self._dense: torch.nn.Module | None = None
        self._max_length = 128

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        directory = hub.resolve_source(self.spec, required=("modules.json",))
        modules = _read_json(directory / "modules.json", self.spec)
        kinds = {m["type"].rsplit(".", 1)[-1]: directory / m.get("path", "") for m in modules}
        if "Transformer" not in kinds or "Pooling" not in kinds:
            raise ModelLoadError(f"model {self.spec}: modules.json needs a Transformer and a Pooling module")
        settings = kinds["Transformer"] / "sentence_bert_config.json"
        if settings.exists():
            self._max_length = int(_read_json(settings, self.spec).get("max_seq_length", 128))
        self._pooling = _read_json(kinds["Pooling"] / "config.json", self.spec)
        dense = [_dense(directory / m["path"], self.spec) for m in modules if m["type"].endswith("Dense")]
        dtype, device = resolve_dtype(self.options), resolve_device(self.options)
        self._tokenizer = AutoTokenizer.from_pretrained(kinds["Transformer"])
        self._model = AutoModel.from_pretrained(kinds["Transformer"]).to(device=device, dtype=dtype).eval()
        self._dense = torch.nn.Sequential(*dense).to(device=device, dtype=dtype).eval()

    def close(self) -> None:
        self._model = self._tokenizer = self._dense = None

    @property
    def dim(self) -> int:
        self.load()
        linears = [m for m in self._dense.modules() if isinstance(m, torch.nn.Linear)]
        return linears[-1].out_features if linears else int(self._pooling["word_embedding_dimension"])

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        if self._pooling.get("pooling_mode_cls_token"):
            return hidden[:, 0]
        if self._pooling.get("pooling_mode_max_tokens"):
            return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        summed, count = (hidden * mask).sum(dim=1), mask.sum(dim=1).clamp(min=1e-9)
        if self._pooling.get("pooling_mode_mean_sqrt_len_tokens"):
            return summed / count.sqrt()
        return summed / count

    def encode_texts(self, texts: Sequence[str]) -> Embedding:
        self.load()
        inputs = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        device = next(self._model.parameters()).device
        inputs = {key: value.to(device) for key, value in inputs.items() if key in {"input_ids", "attention_mask"}}
        with torch.inference_mode():
            hidden = self._model(**inputs).last_hidden_state
            vectors = self._dense(self._pool(hidden, inputs["attention_mask"]))
        return to_embedding(vectors, source=f"{self.spec} text model")

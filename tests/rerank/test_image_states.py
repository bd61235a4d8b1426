"""Image states (cross-attention keys/values kept per image) score as the plain path does, in one batch."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from images import draw
from tiny_models import save_tiny_mplug

from pixsearch.errors import ConfigError
from pixsearch.models import Role, create
from pixsearch.models.image_state import ImageState
from pixsearch.models.mplug.config import RETRIEVAL
from pixsearch.models.vle import VleConfig
from pixsearch.models.vle.heads import VleForItm

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster
QUERY = "a red circle on a white background"
FIXTURES = Path(
    os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[2].parent / "shared" / "fixtures")
)


def _check(reranker, query: str, reference: np.ndarray, features: list) -> None:
    """States, features, a mix of both and one at a time all give the reference scores."""
    states = reranker.image_states(features)
    assert all(state.nbytes > 0 for state in states)
    from_states, kept = reranker.score_items(query, states)
    np.testing.assert_allclose(from_states, reference, rtol=0, atol=1e-4)
    assert all(a is b for a, b in zip(kept, states, strict=True))
    mixed = [states[i] if i % 2 else features[i] for i in range(len(features))]
    scores, kept = reranker.score_items(query, mixed, keep=True)
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-4)
    assert all(isinstance(state, ImageState) for state in kept)  # the features' states come back too
    np.testing.assert_allclose(reranker.score_items(query, kept)[0], reference, rtol=0, atol=1e-4)
    alone = np.concatenate([reranker.score_items(query, [f])[0] for f in features])
    np.testing.assert_allclose(alone, reference, rtol=0, atol=1e-5)


def test_blip_states_score_as_the_transformers_forward(tiny_blip_dirs) -> None:
    reranker = create(f"blip-itm:{tiny_blip_dirs['itm']}", Role.RERANKER)
    features = reranker.image_features([draw(i) for i in range(5)])
    model = reranker._blip.model
    input_ids, attention_mask = reranker._tokens([QUERY])
    with torch.inference_mode():
        reference = torch.cat(
            [
                model.itm_head(
                    model.text_encoder(
                        input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=f[None]
                    ).last_hidden_state[:, 0]
                )[:, 1]
                for f in features
            ]
        ).numpy()
    _check(reranker, QUERY, reference, features)
    # image -> text: one state against several texts equals each text alone
    state = reranker.image_states(features[:1])[0]
    texts = ["a red circle", "blue", "a green triangle on a white background"]
    alone = [reranker.score_features(text, features[:1])[0] for text in texts]
    batched = [reranker.score_items(text, [state])[0][0] for text in texts]
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-4)


def test_a_state_of_another_model_is_refused(tiny_blip_dirs) -> None:
    class Foreign(ImageState):
        pass

    reranker = create(f"blip-itm:{tiny_blip_dirs['itm']}", Role.RERANKER)
    with pytest.raises(ConfigError, match="Foreign"):
        reranker.score_items(QUERY, [Foreign((torch.zeros(2, 2),))])


@pytest.mark.parametrize(
    "layout",
    [
        dict(fusion_layers=2, stride_layer=1, num_hidden_layers=3),  # cross, joint (last)
        dict(fusion_layers=4, stride_layer=2, num_hidden_layers=5),  # cross, cross, joint, cross
        dict(fusion_layers=3, stride_layer=1, num_hidden_layers=4),  # cross, joint, joint
        dict(fusion_layers=2, stride_layer=100, num_hidden_layers=3),  # cross only
    ],
)
def test_mplug_states_score_as_the_reference_fusion(tmp_path: Path, layout: dict) -> None:
    directory = save_tiny_mplug(tmp_path / "mplug", RETRIEVAL, 3, **layout)
    reranker = create(f"mplug-itm:{directory}", Role.RERANKER)
    features = reranker.image_features([draw(i) for i in range(4)])
    _check(reranker, "a red dog", reranker.pair_logits("a red dog", features)[:, 1], features)


@pytest.mark.parametrize("layers", [1, 3])
def test_vle_states_score_as_the_reference_fusion(tmp_path: Path, layers: int) -> None:
    fixture = FIXTURES / "vle" / "vle-itm"
    if not fixture.is_dir():
        pytest.skip(f"conformance fixtures folder absent: {fixture}")
    directory = Path(shutil.copytree(fixture, tmp_path / "vle"))
    raw = json.loads((directory / "config.json").read_text())
    raw["num_hidden_layers"] = layers
    (directory / "config.json").write_text(json.dumps(raw))
    torch.manual_seed(layers)
    torch.save(VleForItm(VleConfig.from_dict(raw)).state_dict(), directory / "pytorch_model.bin")
    reranker = create(f"vle-itm:{directory}", Role.RERANKER)
    images = [draw(i) for i in range(4)]
    features = reranker.image_features(images)
    model = reranker.model
    tokens = reranker.processor.tokenizer([QUERY])
    with torch.inference_mode():
        text = model.vle.get_text_features(tokens["input_ids"], tokens["attention_mask"])
        reference = torch.cat(
            [model.head_logits(model.vle.fuse(text, tokens["attention_mask"], f[None]))[:, 1] for f in features]
        ).numpy()
    _check(reranker, QUERY, reference, features)

"""The native rerankers (VLE, mPLUG) behind the rerank service, on the conformance checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixsearch.models import Role, create
from pixsearch.rerank import Fusion, RerankOptions, RerankService
from pixsearch.search.results import ImageHit

FIXTURES = Path(
    os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[2].parent / "shared" / "fixtures")
)
CASES = {"vle-itm": "vle/vle-itm", "mplug-itm": "mplug/image-text-retrieval"}


@pytest.mark.parametrize("backend", sorted(CASES))
def test_native_reranker_through_the_service(backend: str, tmp_path: Path) -> None:
    directory = FIXTURES / CASES[backend]
    if not directory.is_dir():
        pytest.skip(f"conformance fixtures folder absent: {directory}")
    images = sorted((FIXTURES / "images").glob("*.png"))
    hits = [ImageHit(i, str(p), 0.5 - 0.1 * i, 1, 1, content_hash=f"h{i}") for i, p in enumerate(images)]
    spec = f"{backend}:{directory}"
    reranker = create(spec, Role.RERANKER)
    service = RerankService(reranker, spec, tmp_path, RerankOptions(k=3, fusion=Fusion.ITM))
    reranked = service.rerank_images("a blue square", hits)
    direct = reranker.score("a blue square", [Image.open(p).convert("RGB") for p in images])
    by_id = {h.image_id: h.rerank_score for h in reranked}
    np.testing.assert_allclose([by_id[i] for i in range(3)], direct, atol=1e-4)
    assert [h.image_id for h in reranked] == list(np.argsort(-direct, kind="stable"))

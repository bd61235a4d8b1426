from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from images import write_folder
from tiny_models import save_tiny_sentence_transformer

from pixsearch.errors import LibraryError
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import Role, create
from pixsearch.search import SearchService
from pixsearch.storage import Library


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sentence_transformer(tmp_path_factory.mktemp("st"))


def test_mean_pooling_then_dense(st_dir: Path) -> None:
    from transformers import BertModel, BertTokenizer

    encoder = create(f"st-text:{st_dir}", Role.TEXT_ENCODER)
    got = encoder.encode_texts(["un chien sur la plage", "一只狗在海滩上"])
    assert got.shape == (2, 16) and encoder.dim == 16
    tokenizer, model = BertTokenizer.from_pretrained(st_dir), BertModel.from_pretrained(st_dir).eval()
    weight = torch.load(st_dir / "2_Dense" / "pytorch_model.bin")["linear.weight"]
    inputs = tokenizer(["un chien sur la plage"], return_tensors="pt")
    with torch.no_grad():
        pooled = model(**inputs).last_hidden_state.mean(dim=1)
    expected = (pooled @ weight.T)[0].numpy()
    np.testing.assert_allclose(got[0], expected / np.linalg.norm(expected), atol=1e-5)


def test_library_answers_queries_with_its_query_model(tmp_path: Path, clip_spec: str, st_dir: Path) -> None:
    write_folder(tmp_path / "photos", 6)
    library = Library.open(tmp_path / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0)).run([tmp_path / "photos"])
    with library.session() as session:
        library.set_query_model(session, f"st-text:{st_dir}")
    query = create(f"st-text:{st_dir}", Role.TEXT_ENCODER).encode_texts(["un chien sur la plage"])[0]
    service = SearchService(library)
    hits = service.text_to_image("un chien sur la plage", k=6)
    images = {
        h.path: v for h, v in zip(hits, create(clip_spec).encode_images([_open(h.path) for h in hits]), strict=True)
    }
    np.testing.assert_allclose([h.score for h in hits], [float(images[h.path] @ query) for h in hits], atol=1e-5)


def test_query_model_of_another_width_is_refused(tmp_path: Path, clip_spec: str) -> None:
    wide = save_tiny_sentence_transformer(tmp_path / "wide", out_dim=24)
    write_folder(tmp_path / "photos", 2)
    library = Library.open(tmp_path / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0)).run([tmp_path / "photos"])
    with library.session() as session:
        library.set_query_model(session, f"st-text:{wide}")
    with pytest.raises(LibraryError, match="24-d"):
        SearchService(library).text_to_image("dog")


def _open(path: str):
    from PIL import Image

    return Image.open(path).convert("RGB")

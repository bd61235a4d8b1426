"""A library photo sent back as a query (upload, /knn-service base64) is decoded exactly as the indexer
decoded it (JPEG draft scale), so it finds itself first with a similarity of 1."""

from __future__ import annotations

import base64

import pytest


def test_an_uploaded_library_jpeg_finds_itself_with_similarity_one(client, photos, image_ids) -> None:
    data = (photos / "camera.jpg").read_bytes()
    response = client.post("/api/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"k": "1"})
    assert response.status_code == 200, response.text
    hit = response.json()["hits"][0]
    assert hit["id"] == image_ids["camera.jpg"] and hit["score"] == pytest.approx(1.0, abs=1e-6)


def test_knn_service_decodes_a_library_jpeg_as_the_indexer_did(client, photos) -> None:
    data = base64.b64encode((photos / "camera.jpg").read_bytes()).decode()
    response = client.post("/knn-service", json={"image": data, "num_images": 1, "indice_name": "pixsearch"})
    assert response.status_code == 200, response.text
    assert response.json()[0]["similarity"] == pytest.approx(1.0, abs=1e-6)

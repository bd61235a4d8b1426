"""`pixsearch index --ray` on a real local Ray cluster (2 CPUs) that this module starts once.

Each Ray job pays for starting its model actor (a fresh process importing torch), so the module
runs three jobs in all: a whole folder (compared with a local run), and a job interrupted after its
first batch followed by a rerun after files were moved, deleted, changed and added.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_consistent, rows
from images import draw, write_folder
from sqlalchemy import select
from test_bad_files import make_bad_files
from test_formats import _exif_jpeg

from pixsearch.cli import main
from pixsearch.indexer import Indexer, IndexOptions, Progress, shards
from pixsearch.indexer.ray_job import RayOptions
from pixsearch.models import ModelOptions, create
from pixsearch.storage import Library
from pixsearch.storage.schema import Embedding, ImageRow, SkippedFile

ray = pytest.importorskip("ray")

MAX_PIXELS = 5_000_000  # bomb.png (6 Mpx) is refused by the readers, as by a local run
# both runs embed on the same device: float32 on a CPU; float16 on a GPU, where batches differ in make-up
TOLERANCE = 5e-3 if torch.cuda.is_available() else 1e-5


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, object_store_memory=200 * 2**20)
    yield
    ray.shutdown()


def snapshot(library: Library) -> tuple[dict[str, tuple], dict[str, np.ndarray], dict[str, str]]:
    """Per path: the image row's facts and its vector; and the skipped files with their reasons."""
    with library.session() as session:
        query = select(ImageRow, Embedding.vector).join(Embedding, Embedding.image_id == ImageRow.id)
        facts, vectors = {}, {}
        for row, blob in session.execute(query):
            facts[row.path] = (row.content_hash, row.size, row.mtime, row.width, row.height, row.taken_at, row.camera)
            vectors[row.path] = np.frombuffer(blob, dtype=np.float32)
        skipped = {path: reason for path, reason in session.execute(select(SkippedFile.path, SkippedFile.reason))}
    return facts, vectors, skipped


def assert_same_library(library: Library, expected: Library, tolerance: float = TOLERANCE) -> None:
    facts, vectors, skipped = snapshot(library)
    expected_facts, expected_vectors, expected_skipped = snapshot(expected)
    assert facts == expected_facts
    assert skipped == expected_skipped
    for path, vector in expected_vectors.items():
        np.testing.assert_allclose(vectors[path], vector, atol=tolerance, err_msg=path)
    assert_consistent(library)
    assert shards.pending(shards.folder_of(library.root)) == []


def local_library(root: Path, encoder, folder: Path) -> Library:
    library = Library.open(root)  # the encoder runs where ModelOptions() says: auto, as the Ray actors
    Indexer(library, encoder, IndexOptions(workers=0, batch_size=4, max_pixels=MAX_PIXELS)).run([folder])
    return library


def test_ray_run_makes_the_library_a_local_run_makes(cluster, encoder, clip_spec, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    write_folder(folder / "sub", 5)
    write_folder(folder, 4, start=10, fmt="jpg")
    _exif_jpeg(folder / "dated.jpg", orientation=6)
    bad = make_bad_files(folder / "bad")  # the readers on Ray refuse them as a local run does
    command = ["index", str(folder), "--library", str(tmp_path / "ray"), "--model", clip_spec, "--ray", "auto"]
    code = main([*command, "--batch-size", "4", "--workers", "0", "--max-pixels", str(MAX_PIXELS)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 embedded" in out and f"{len(bad)} skipped" in out
    assert_same_library(Library.open(tmp_path / "ray"), local_library(tmp_path / "local", encoder, folder))


class Interrupted(Exception):
    pass


def test_interrupted_ray_job_then_rerun_with_moves_and_deletions(cluster, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_folder(folder, 12)
    library = Library.open(tmp_path / "ray")
    options = IndexOptions(workers=0, batch_size=3, ray=RayOptions("auto"))

    def stop_after_first_batch(event: Progress) -> None:
        if event.phase == "embed" and 0 < event.done < event.total:
            raise Interrupted  # as a kill would, between the merge of a shard and its deletion

    with pytest.raises(Interrupted):
        Indexer(library, encoder, options).run([folder], stop_after_first_batch)
    merged = sorted(rows(library))
    assert 2 <= len(merged) < len(paths)
    assert len(shards.pending(shards.folder_of(library.root))) == 1  # merged, not yet deleted
    done = [Path(path) for path in merged]
    never = [path for path in paths if str(path) not in merged]
    (folder / "sub").mkdir()
    shutil.move(done[0], folder / "sub" / "moved.png")
    done[1].unlink()
    draw(99).save(never[0])  # changed before it was ever embedded
    os.utime(never[0], (2_000_000, 2_000_000))
    draw(100).save(folder / "new.png")

    report = Indexer(library, encoder, options).run([folder])
    assert (report.recovered, report.moved, report.removed) == (0, 1, 1)
    assert report.embedded == len(paths) - len(merged) + 1
    assert_same_library(library, local_library(tmp_path / "local", encoder, folder))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
def test_ray_actors_embed_on_the_gpu(cluster, clip_spec, tmp_path: Path, caplog) -> None:
    assert ray.cluster_resources().get("GPU", 0) >= 1  # ray.init found the GPU
    folder = tmp_path / "photos"
    write_folder(folder, 8)
    library = Library.open(tmp_path / "ray")
    with caplog.at_level(logging.INFO, logger="pixsearch.indexer.ray_job"):
        report = Indexer(library, create(clip_spec), IndexOptions(workers=0, ray=RayOptions("auto"))).run([folder])
    assert report.embedded == 8
    assert "gpus_per_actor=1.0" in caplog.text
    cpu = create(clip_spec, options=ModelOptions(device="cpu", dtype="float32"))
    assert_same_library(library, local_library(tmp_path / "cpu", cpu, folder), tolerance=1e-2)  # fp16 vs fp32

"""Device and dtype choice: 'auto' is a CUDA GPU in float16 for the dual encoders when torch sees one,
else the CPU (bf16 only where measured faster). The GPU tests run only with `-m gpu` on a CUDA machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from images import write_folder
from sqlalchemy import select

from pixsearch.errors import ConfigError
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import ModelOptions, create
from pixsearch.models.runtime import CPU_BF16, bf16_is_fast, resolve_device, resolve_dtype
from pixsearch.storage import Library
from pixsearch.storage.schema import Embedding, ImageRow

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choice on a machine without CUDA")
def test_auto_is_the_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPU_BF16)  # the suite pins float32 (conftest.py): measure, as a user's process does
    options = ModelOptions()
    assert (options.device, options.dtype) == ("auto", "auto")
    assert resolve_device(options) == torch.device("cpu")
    cpu_dtype = torch.bfloat16 if bf16_is_fast("cpu") else torch.float32
    assert resolve_dtype(options, on_gpu=torch.float16) == cpu_dtype  # float16 is for GPUs only
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device(ModelOptions(device="cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's choice")
def test_the_cpu_choice_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_BF16, "1")
    assert resolve_dtype(ModelOptions()) == torch.bfloat16
    monkeypatch.setenv(CPU_BF16, "0")
    assert resolve_dtype(ModelOptions()) == torch.float32
    assert resolve_dtype(ModelOptions(dtype="bfloat16")) == torch.bfloat16  # a named dtype wins
    monkeypatch.setenv(CPU_BF16, "yes")
    with pytest.raises(ConfigError, match=r"\$PIXSEARCH_CPU_BF16='yes' is not auto \(measure\), 1"):
        resolve_dtype(ModelOptions())


def test_a_device_that_is_not_one_is_named() -> None:
    with pytest.raises(ConfigError, match="'gpu0' is not auto or a torch device"):
        resolve_device(ModelOptions(device="gpu0"))
    with pytest.raises(ConfigError, match="dtype 'half'"):
        resolve_dtype(ModelOptions(dtype="half"))
    assert resolve_dtype(ModelOptions(dtype="float16")) == torch.float16


@pytest.mark.gpu
@no_cuda
def test_dual_encoder_embeds_in_float16_on_the_gpu(clip_spec: str) -> None:
    gpu = create(clip_spec)  # auto, auto
    gpu.load()
    assert resolve_device(gpu.options).type == "cuda"
    assert next(gpu._vision.parameters()).dtype == torch.float16
    cpu = create(clip_spec, options=ModelOptions(device="cpu", dtype="float32"))
    pixels = np.random.default_rng(0).standard_normal((4, 3, *[gpu.transform.size] * 2)).astype(np.float32)
    on_gpu, on_cpu = gpu.encode_pixels(pixels), cpu.encode_pixels(pixels)
    assert on_gpu.dtype == np.float32  # embeddings stay float32 whatever the weights
    assert (on_gpu * on_cpu).sum(axis=1).min() > 0.99
    texts = gpu.encode_texts(["a red square", "a blue circle"])
    assert (texts * cpu.encode_texts(["a red square", "a blue circle"])).sum(axis=1).min() > 0.99


@pytest.mark.gpu
@no_cuda
def test_index_run_on_the_gpu_matches_the_cpu(clip_spec: str, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_folder(folder, 6)
    libraries = {}
    for device, dtype in (("auto", "auto"), ("cpu", "float32")):
        library = Library.open(tmp_path / device)
        encoder = create(clip_spec, options=ModelOptions(device=device, dtype=dtype))
        report = Indexer(library, encoder, IndexOptions(workers=0, batch_size=4)).run([folder])
        assert report.embedded == 6
        libraries[device] = library
    gpu, cpu = (_vectors(libraries[name]) for name in ("auto", "cpu"))
    assert gpu.keys() == cpu.keys()
    for path, vector in cpu.items():
        np.testing.assert_allclose(gpu[path], vector, atol=1e-2, err_msg=path)


def _vectors(library: Library) -> dict[str, np.ndarray]:
    with library.session() as session:
        query = select(ImageRow.path, Embedding.vector).join(Embedding, Embedding.image_id == ImageRow.id)
        return {path: np.frombuffer(blob, dtype=np.float32) for path, blob in session.execute(query)}

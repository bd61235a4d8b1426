from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Models asked for in 'auto' dtype run in float32 on the CPU in tests, on every machine (the processes
# tests start too): the tests compare with float32 references at 1e-5, which bfloat16 (chosen on CPUs
# with AMX or AVX-512 BF16) does not meet. The bfloat16 paths are tested by name (tests/rerank/test_bf16.py),
# and `PIXSEARCH_CPU_BF16=auto pytest` runs the suite as such a machine's users get it.
os.environ.setdefault("PIXSEARCH_CPU_BF16", "0")
# The same float32 kernels on every x86 machine (set before torch loads; the processes tests start
# inherit them): tests that train a tiny model and check what it learned were measured with AVX2
# kernels, and AVX-512 kernels round differently. A 400-step world CLIP trained with them came out
# with 0.55 false tags per photo against the 0.16 it has with AVX2 kernels (limit 0.3):
# the margins of those tests are thinner than the spread between machines.
for name, value in (
    ("ATEN_CPU_CAPABILITY", "avx2"),
    ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
    ("ONEDNN_MAX_CPU_ISA", "AVX2"),
):
    os.environ.setdefault(name, value)

from tiny_models import save_tiny_clip, save_tiny_siglip  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture(scope="session")
def clip_spec(tiny_clip_dir: Path) -> str:
    return f"clip:{tiny_clip_dir}"


@pytest.fixture(scope="session")
def tiny_blip_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tiny_models import save_tiny_blip

    root = tmp_path_factory.mktemp("tiny-blip")
    return {kind: save_tiny_blip(root / kind, kind, seed) for seed, kind in enumerate(("itm", "caption", "vqa"))}


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread while a module's tests run (for tiny models more threads only add synchronisation);
    use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Device and dtype choice for torch backends."""

from __future__ import annotations

import functools
import logging
import os
import time

import torch

from pixsearch.errors import ConfigError
from pixsearch.models.spec import ModelOptions

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# what 'auto' means on a CPU: 'auto' (measure, `bf16_is_fast`), '1' (bfloat16) or '0' (float32)
CPU_BF16 = "PIXSEARCH_CPU_BF16"


def cpu_bf16() -> bool:
    """Whether 'auto' runs models in bfloat16 on the CPU: as $PIXSEARCH_CPU_BF16 says, else as measured.

    Raises:
        ConfigError: the variable is set to something else than auto, 1 or 0.
    """
    setting = os.environ.get(CPU_BF16, "auto").strip().lower()
    if setting in ("", "auto"):
        return bf16_is_fast("cpu")
    if setting not in ("0", "1"):
        raise ConfigError(f"${CPU_BF16}={setting!r} is not auto (measure), 1 (bfloat16) or 0 (float32)")
    return setting == "1"


@functools.cache
def bf16_is_fast(device: str = "cpu") -> bool:
    """Measure whether bfloat16 matmuls beat float32 on this device by a clear margin.

    CPUs with AMX or AVX-512 BF16 run bf16 several times faster; CPUs without them emulate it (on an
    AVX2 EPYC 6x to 100x slower than fp32, by shape). CPU flags do not tell how well a given torch build
    uses them, so the choice is measured, not assumed: a few matmuls shaped like a transformer's linear
    layer (256 tokens x 768 -> 768), once per process (one bf16 round settles an emulated bf16, ~0.2 s).
    Square 256x256 matmuls were too small for AMX to show: they measured bf16 1.0-1.6x faster (the bar is
    1.5x) on a machine where it runs such layers 3-4x faster, so processes chose differently.
    """
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device != "cpu":
        return False
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(256, 768, dtype=dtype)
        b = torch.randn(768, 768, dtype=dtype)
        a @ b  # warm-up
        rounds: list[float] = []
        # the fastest round (other processes only ever slow a round down); a 10x slower bf16 round is enough
        while len(rounds) < 5 and not (dtype == torch.bfloat16 and rounds and rounds[0] > 10 * timings[torch.float32]):
            start = time.perf_counter()
            a @ b
            rounds.append(time.perf_counter() - start)
        timings[dtype] = min(rounds)
    fast = timings[torch.bfloat16] * 1.5 < timings[torch.float32]
    log.info(
        "bf16 probe on cpu (amx %s, avx512-bf16 %s): fp32 %.4fs, bf16 %.4fs -> %s",
        _cpu_flag("_is_amx_tile_supported"),
        _cpu_flag("_is_avx512_bf16_supported"),
        timings[torch.float32],
        timings[torch.bfloat16],
        fast,
    )
    return fast


def _cpu_flag(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe else False
    except RuntimeError:
        return False


def resolve_dtype(options: ModelOptions, on_gpu: torch.dtype | None = None) -> torch.dtype:
    """The torch dtype for the weights: the one asked for, or for 'auto':
    on a GPU `on_gpu` where the caller names one (the dual encoders embed in float16: half the memory
    traffic, tensor cores on every CUDA GPU), else bfloat16 where the GPU has it, else float32;
    on a CPU bfloat16 when a probe measures it faster (or $PIXSEARCH_CPU_BF16 says so), else float32."""
    if options.dtype == "auto":
        device = resolve_device(options)
        if device.type == "cuda" and on_gpu is not None:
            return on_gpu
        fast = cpu_bf16() if device.type == "cpu" else bf16_is_fast(device.type)
        return torch.bfloat16 if fast else torch.float32
    if options.dtype not in _DTYPES:
        raise ConfigError(f"dtype {options.dtype!r} is not one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[options.dtype]


def resolve_device(options: ModelOptions) -> torch.device:
    """The torch device: 'auto' is cuda when torch sees a CUDA device, else cpu.

    Raises:
        ConfigError: a CUDA device was asked for and torch sees none, or the name is not a device.
    """
    if options.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {options.device!r} asked for, but torch sees no CUDA device")
    try:
        return torch.device(options.device)
    except RuntimeError as error:
        raise ConfigError(f"device {options.device!r} is not auto or a torch device (cpu, cuda, cuda:1 ...)") from error

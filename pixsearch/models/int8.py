"""Dynamic int8 linear layers for CPU inference, and the probe that says whether they pay here.

A CPU without bf16 instructions (AVX2 only) runs bf16 and fp16 matmuls ~10x *slower* than fp32, but
its int8 dot products (fbgemm's VPMADDUBSW kernels) run about twice as fast. `Int8Linear` keeps a
linear layer's weights as int8 with one scale per output channel and quantizes each input on the fly
(per tensor, 7-bit range as fbgemm needs on AVX2); outputs stay float32.

The kernels are torch's `quantized::linear_dynamic`, the same ones `torch.ao.quantization.quantize_dynamic`
uses. torch marks the quantized tensor type they take as deprecated; until it goes, `int8_available`
says whether they still load, and callers fall back to float32 when not.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

_DEPRECATION = ".*quantized tensor creation functions.*deprecated.*"


def _pack(weight: torch.Tensor, bias: torch.Tensor | None) -> object:
    scale = weight.detach().abs().amax(dim=1).clamp(min=1e-12).double() / 127
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # the quantized-tensor deprecation (see the module docstring): nothing a caller can act on
        warnings.filterwarnings("ignore", message=_DEPRECATION)
        quantized = torch.quantize_per_channel(weight.detach().float(), scale, zero, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach().float())


class Int8Linear(nn.Module):
    """A float32 `nn.Linear` with int8 weights (per output channel) and dynamically quantized inputs."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._packed = _pack(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float().contiguous(), self._packed, True)
        return out.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_linears(module: nn.Module, keep: Callable[[str, nn.Linear], bool] | None = None) -> int:
    """Swap every `nn.Linear` under `module` for an Int8Linear, except those `keep(name, layer)` spares.

    Returns:
        how many layers were swapped.
    """
    swaps = [
        (name, child)
        for name, child in module.named_modules()
        if isinstance(child, nn.Linear) and not (keep and keep(name, child))
    ]
    for name, child in swaps:
        parent_name, _, attribute = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attribute, Int8Linear(child))
    return len(swaps)


@functools.cache
def int8_available() -> bool:
    """Whether torch still ships the x86 dynamic int8 linear kernels."""
    try:
        layer = Int8Linear(nn.Linear(8, 8))
        layer(torch.zeros(2, 8))
    except (RuntimeError, AttributeError) as error:
        log.info("int8 linear layers unavailable: %s", error)
        return False
    return torch.backends.quantized.engine in ("x86", "fbgemm")


def _best_of(fn: Callable[[], object], rounds: int = 5) -> float:
    fn()  # warm-up: packing, first-touch
    times = []
    for _ in range(rounds):  # the fastest round: other processes only ever slow a round down
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def linear_throughput(dtype: str, rows: int = 512, width: int = 768, out: int = 768) -> float:
    """GFLOP/s of one linear layer [rows, width] -> [rows, out] at 'float32', 'bfloat16', 'float16' or 'int8'."""
    x = torch.randn(rows, width)
    layer = nn.Linear(width, out)
    if dtype == "int8":
        fn: Callable[[], object] = functools.partial(Int8Linear(layer), x)
    else:
        kind = getattr(torch, dtype)
        fn = functools.partial(layer.to(kind), x.to(kind))
    with torch.inference_mode():
        seconds = _best_of(fn)
    return 2 * rows * width * out / seconds / 1e9


@functools.cache
def int8_is_fast(device: str = "cpu") -> bool:
    """Measure whether int8 linear layers beat float32 here by a clear margin (1.3x) at a BERT-base shape."""
    if device != "cpu" or not int8_available():
        return False
    fp32, int8 = linear_throughput("float32"), linear_throughput("int8")
    log.info("int8 probe on cpu: fp32 %.1f GFLOP/s, int8 %.1f GFLOP/s", fp32, int8)
    return int8 > 1.3 * fp32

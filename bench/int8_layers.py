"""Dynamic int8 linear layers for CPU inference, for bench/query_latency.py's int8 verdict.

A CPU without bf16 instructions (AVX2 only) runs bf16 and fp16 matmuls ~10x *slower* than fp32, but
its int8 dot products (fbgemm's VPMADDUBSW kernels) run about twice as fast. `Int8Linear` keeps a
linear layer's weights as int8 with one scale per output channel and quantizes each input on the fly
(per tensor, 7-bit range as fbgemm needs on AVX2); outputs stay float32.

The kernels are torch's `quantized::linear_dynamic`, the same ones `torch.ao.quantization.quantize_dynamic`
uses. torch marks the quantized tensor type they take as deprecated; until it goes, `int8_available`
says whether they still load. On random published-size BLIP weights they agreed with float32 too little
(Kendall tau well below 0.95 over a top 16), so pixsearch itself keeps float32 and only the benchmark
uses this, to measure that verdict again.
"""

from __future__ import annotations

import functools
import logging
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

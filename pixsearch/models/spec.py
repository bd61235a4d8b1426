"""Model specs (`backend:source`) and the options every backend accepts."""

from __future__ import annotations

from dataclasses import dataclass

from pixsearch.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """A parsed `backend:source` spec; source is a hub id or a local directory."""

    backend: str
    source: str

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Split `backend:source`; raises ConfigError when either side is empty."""
        backend, sep, source = text.partition(":")
        if not sep or not backend.strip() or not source.strip():
            raise ConfigError(
                f"model spec {text!r} is not of the form 'backend:source' "
                "(e.g. 'clip:openai/clip-vit-base-patch32' or 'clip:/models/clip-b32')"
            )
        return cls(backend.strip(), source.strip())

    def __str__(self) -> str:
        return f"{self.backend}:{self.source}"


@dataclass(frozen=True)
class ModelOptions:
    """How a model runs: `device` is 'auto' or a torch device string; `dtype` is 'auto', 'float32',
    'bfloat16' or 'float16'.

    device 'auto' is the first CUDA device when torch sees one, else the CPU. dtype 'auto' is float16
    on a GPU, and on a CPU bfloat16 only where a quick probe shows it faster than float32.
    """

    device: str = "auto"
    dtype: str = "auto"

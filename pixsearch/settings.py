"""One Settings object, read from the environment (prefix PIXSEARCH_) at the entry point and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pixsearch.errors import ConfigError

DEFAULT_MODEL = "clip:openai/clip-vit-base-patch32"


def default_library() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("pixsearch")) / "library"


@dataclass(frozen=True)
class Settings:
    library: Path
    db_url: str | None = None  # default: SQLite inside the library folder
    model: str = DEFAULT_MODEL
    device: str = "auto"  # a CUDA GPU when torch sees one, else the CPU
    dtype: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    max_pixels: int = 100_000_000
    reranker: str | None = None  # e.g. blip-itm:Salesforce/blip-itm-base-coco; None: no reranking
    rerank_k: int = 16
    fusion: str = "itm+sim"
    sim_weight: str = "auto"  # itm+sim: a number, 'logit-scale' or 'auto' (see rerank.fusion.similarity_weight)
    rerank_disk_cache: bool = False
    rerank_cache_max: str | None = None  # bound of the reranker's disk cache, e.g. 2G (see rerank.cache.parse_size)
    index_type: str | None = None  # auto, flat or ivfpq[:name=value,...] (see pixsearch.storage.ann); None: keep

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read PIXSEARCH_<FIELD> variables; `overrides` that are not None win over them.

        Raises:
            ConfigError: a variable does not parse (names the variable and its value).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"library": default_library()}
        for field in fields(cls):
            raw = env.get(f"PIXSEARCH_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, raw)
        values.update({key: value for key, value in overrides.items() if value is not None})
        values["library"] = Path(values["library"]).expanduser()
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be 0 or more, got {self.workers}")
        if not 1 <= self.rerank_k <= 256:
            raise ConfigError(f"rerank k must be between 1 and 256, got {self.rerank_k}")
        if self.fusion not in {"itm+sim", "itm"}:
            raise ConfigError(f"fusion must be 'itm+sim' (BLIP) or 'itm' (mPLUG), got {self.fusion!r}")
        if self.sim_weight.strip().lower() not in {"auto", "logit-scale"}:
            from pixsearch.rerank.fusion import similarity_weight

            similarity_weight(self.sim_weight)  # a number >= 0, or a clear ConfigError
        if self.rerank_cache_max is not None:
            from pixsearch.rerank.cache import parse_size

            parse_size(self.rerank_cache_max)  # a size, or a clear ConfigError
        if self.max_pixels < 1:
            raise ConfigError(f"max pixels must be positive, got {self.max_pixels}")
        if self.index_type is not None:
            from pixsearch.storage.ann import IndexChoice

            IndexChoice.parse(self.index_type)  # a clear ConfigError naming the bad part

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


_INTS = {"batch_size", "workers", "max_pixels", "rerank_k"}
_BOOLS = {"rerank_disk_cache"}


def _parse(name: str, raw: str) -> Any:
    if name in _INTS:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"PIXSEARCH_{name.upper()}={raw!r} is not an integer") from None
    if name in _BOOLS:
        if raw.lower() not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            raise ConfigError(f"PIXSEARCH_{name.upper()}={raw!r} is not a yes/no value")
        return raw.lower() in {"1", "true", "yes", "on"}
    return raw

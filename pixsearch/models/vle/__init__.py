"""Native VLE (HFL's Visual-Language Encoder, iflytek/VLE) on transformers 5.

`load_vle(dir, head)` loads a published checkpoint (hfl/vle-*) as the backbone or a head model;
`VleProcessor.from_dir(dir)` builds its inputs. The pixsearch backends live in `backends`.
"""

from __future__ import annotations

from pixsearch.models.vle.config import VleConfig, load_config
from pixsearch.models.vle.heads import Head, VleForItm, VleForPbc, VleForVqa
from pixsearch.models.vle.modeling import VleModel, VleModelOutput
from pixsearch.models.vle.processor import VleProcessor, VleTokenizer
from pixsearch.models.vle.weights import LoadReport, load_vle, read_state_dict

__all__ = [
    "Head",
    "LoadReport",
    "VleConfig",
    "VleForItm",
    "VleForPbc",
    "VleForVqa",
    "VleModel",
    "VleModelOutput",
    "VleProcessor",
    "VleTokenizer",
    "load_config",
    "load_vle",
    "read_state_dict",
]

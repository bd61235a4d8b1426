"""Turn a spec's source (a local directory or a hub id) into a local directory, or fail at once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pixsearch.errors import ModelNotFoundError, UnknownBackendError
from pixsearch.models.registry import find_backend
from pixsearch.models.roles import Role
from pixsearch.models.spec import ModelSpec

log = logging.getLogger(__name__)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


# Published on ModelScope, not the Hugging Face hub: pixsearch reads their folders, it does not fetch them.
MODELSCOPE_BACKENDS = frozenset({"mplug", "mplug-itm", "mplug-vqa", "mplug-caption", "ofa-ve"})


# where each role's spec is given on the command line (the role's environment variable works too)
_OPTION = {
    Role.DUAL_ENCODER: "--model",
    Role.RERANKER: "--rerank",
    Role.CAPTIONER: "--captioner",
    Role.ANSWERER: "--answerer",
    Role.ENTAILER: "--entailer",
    Role.TEXT_ENCODER: "--query-model",
    Role.WRITER: "--llm",
}
TRY_OFFLINE = "to see pixsearch work with no network at all, run `pixsearch demo` (packaged demo models)"


def how_to_supply(spec: ModelSpec) -> str:
    """How to give pixsearch this model without the hub: fetch it elsewhere, pass the folder; or try the demo."""
    try:
        option = _OPTION.get(find_backend(spec.backend).role)
    except UnknownBackendError:
        option = None
    target = f"{option} {spec.backend}:DIR" if option else f"{spec.backend}:DIR"
    if spec.backend in MODELSCOPE_BACKENDS:
        fetch = (
            "download the ModelScope model on a machine with network (`modelscope download --model ID --local_dir DIR`)"
        )
    else:
        fetch = "download it on a machine with network (`hf download HUB_ID --local-dir DIR`)"
    return f"{fetch}, copy DIR here and pass `{target}`; {TRY_OFFLINE}"


def resolve_source(spec: ModelSpec, required: tuple[str, ...] = ()) -> Path:
    """Return a local directory holding the model's files.

    A source that is an existing directory is used as it is. Otherwise it is taken as a hub id:
    the local cache is tried first, then (unless HF_HUB_OFFLINE is set) the hub.

    Args:
        spec: the model spec.
        required: file names that must be present in the directory.

    Raises:
        ModelNotFoundError: naming the spec and how to supply a local directory.
    """
    path = Path(spec.source).expanduser()
    if path.is_dir():
        missing = [name for name in required if not (path / name).exists()]
        if missing:
            raise ModelNotFoundError(
                f"model {spec}: directory {path} lacks {', '.join(missing)}; it is not a {spec.backend} model directory"
            )
        return path
    # hub ids are "name" or "org/name"; anything else can only have meant a directory
    if spec.source.startswith(("/", ".", "~")) or spec.source.count("/") > 1:
        raise ModelNotFoundError(f"model {spec}: no directory at {path}; {how_to_supply(spec)}")
    if spec.backend in MODELSCOPE_BACKENDS:
        raise ModelNotFoundError(f"model {spec}: {spec.source} is a ModelScope id, not a folder; {how_to_supply(spec)}")
    return _from_hub(spec)


def _from_hub(spec: ModelSpec) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec.source, local_files_only=True))
    except Exception as cached_error:  # noqa: BLE001 - any cache miss means: try the hub
        if _offline():
            raise ModelNotFoundError(
                f"model {spec}: not in the local cache and HF_HUB_OFFLINE is set; "
                f"{how_to_supply(spec).replace('HUB_ID', spec.source)}"
            ) from cached_error
    try:
        log.info("fetching %s from the hub", spec.source)
        return Path(snapshot_download(spec.source, etag_timeout=5))
    except Exception as error:  # noqa: BLE001 - network, auth and 404 all end the same way
        raise ModelNotFoundError(
            f"model {spec}: could not be fetched from the hub ({type(error).__name__}); "
            f"{how_to_supply(spec).replace('HUB_ID', spec.source)}"
        ) from error

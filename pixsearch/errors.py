"""The error hierarchy. Only the CLI maps these to exit codes, only the web layer to HTTP codes."""

from __future__ import annotations


class PixsearchError(Exception):
    """Base class of every error pixsearch raises on purpose."""


class ConfigError(PixsearchError):
    """A setting or an argument is invalid."""


class UnknownBackendError(ConfigError):
    """A model spec names a backend that is not registered."""


class ModelNotFoundError(PixsearchError):
    """The weights a model spec points to cannot be found locally or fetched."""


class ModelLoadError(PixsearchError):
    """The weights were found but do not fit the model (missing or unexpected keys, bad config)."""


class PathError(PixsearchError):
    """Something is wrong with one file: `path` names it, `reason` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class BadImageError(PathError):
    """A file could not be used as an image."""


class LibraryError(PixsearchError):
    """The library folder, database or index is unusable or inconsistent."""


class ModelMismatchError(LibraryError):
    """The library was built with another model than the one asked for."""


class NotFoundError(PixsearchError):
    """An image id, text id or other stored object does not exist."""


class EmptyIndexError(LibraryError):
    """A search was asked of an index that holds nothing yet."""


class FileAccessError(PathError):
    """A library file may not be opened: missing, a link, not a regular file, or outside the roots."""


class LibraryBusyError(LibraryError):
    """Another process is writing to the library."""


class XmpError(PixsearchError):
    """An XMP sidecar cannot be read or merged safely; it was left as it was."""


class ClusterError(PixsearchError):
    """A Ray cluster cannot be reached, or a job on it failed."""

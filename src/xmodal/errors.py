"""Typed exceptions: library code raises these with the bad value and the reason; the CLI prints them."""

from __future__ import annotations

from pathlib import Path


class XmodalError(Exception):
    """Base class of every error xmodal raises on purpose."""


class InvalidArgumentError(XmodalError, ValueError):
    """A parameter value is not one of the valid choices."""

    def __init__(self, name: str, value: object, valid: str | list[str] | tuple[str, ...]):
        options = valid if isinstance(valid, str) else ", ".join(map(str, valid))
        super().__init__(f"invalid {name} {value!r}; expected {options}")
        self.name = name
        self.value = value


class FileProblemError(XmodalError):
    """A file is the problem: the message is "path: reason" (or "path:line: reason")."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


class ModelNotFoundError(XmodalError):
    """A model name or folder could not be resolved to files on disk."""


class ModelFormatError(FileProblemError):
    """A model folder exists but a file in it is missing, unreadable or malformed."""


class PrecisionTooLowError(FileProblemError):
    """A reduced-precision copy of a model graph is too far from fp32 on this CPU to be used."""

    def __init__(self, path: str | Path, tower: str, precision: str, cosine: float, threshold: float, cpu: str):
        super().__init__(
            path,
            f"{precision} {tower} reaches cosine {cosine:.4f} vs fp32 on probe inputs on this CPU ({cpu}), below the "
            f"{threshold} required; use fp32 instead (--precision fp32)",
        )
        self.tower = tower
        self.precision = precision
        self.cosine = cosine
        self.threshold = threshold
        self.cpu = cpu


class MediaError(XmodalError):
    """A media item (image or video) could not be decoded; names the item and the reason."""

    def __init__(self, item: object, reason: str):
        super().__init__(f"{describe_item(item)}: {reason}")
        self.item = item
        self.reason = reason

    def __reduce__(self) -> tuple:
        # Rebuilt from (item, reason), so the error survives a trip to another process (pickle).
        return (type(self), (self.item, self.reason))


class ImageTooLargeError(MediaError):
    """An image declares more pixels than the configured limit (decompression-bomb guard)."""


class DatasetFormatError(FileProblemError):
    """A dataset file is malformed; names file, line (when known) and reason."""


class LibraryError(XmodalError):
    """A library folder, catalog or index cannot be used as asked."""


class LibraryNotFoundError(LibraryError):
    """No library at the folder given (only indexing creates one)."""

    def __init__(self, folder: str | Path):
        super().__init__(f"no library at {folder} (create one with: xmodal index PATH --library {folder})")
        self.folder = str(folder)


class LibraryBusyError(LibraryError):
    """Another process (or thread) is writing the library: one writer at a time."""

    def __init__(self, folder: str | Path, holder: str):
        super().__init__(f"library {folder} is being indexed by {holder}; wait for it to finish, or pass --wait")
        self.folder = str(folder)
        self.holder = holder


class DiskFullError(FileProblemError, LibraryError):
    """A write failed because the disk is full; what was committed before is kept."""


def describe_item(item: object) -> str:
    """A short human name for a media item: its path, or its type and shape for in-memory data."""
    if isinstance(item, (str, Path)):
        return str(item)
    shape = getattr(item, "shape", None)
    if shape is not None:
        return f"<array {tuple(shape)}>"
    size = getattr(item, "size", None)
    mode = getattr(item, "mode", None)
    if mode is not None:
        return f"<image {mode} {size}>"
    if isinstance(item, (bytes, bytearray)):
        return f"<{len(item)} bytes>"
    return f"<{type(item).__name__}>"


class IndexFileError(FileProblemError, LibraryError):
    """A saved vector index cannot be served; the library rebuilds it from the catalog."""


class IndexCorruptError(IndexFileError):
    """The index file is truncated, fails its checksums or cannot be parsed."""


class StaleIndexError(IndexFileError):
    """The index file is intact but holds other item ids than the catalog."""


class MeasurementError(XmodalError):
    """A cost measurement could not be taken (e.g. the fresh process measuring a model failed)."""

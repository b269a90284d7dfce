"""The sharded embeddings folder `embed-dataset` writes and `index --from-embeddings` and the large
index read.

    DIR/manifest.json                 model, source, settings, counts, every shard's files and checksums
    DIR/shards/000012.image.npy       float16 (ok images, D): image embeddings, in the shard's item order
    DIR/shards/000012.text.npy        float16 (captions, D): caption embeddings, in item then caption order
    DIR/shards/000012.parquet         one row per item: id, path, size, hash, captions, error...
    DIR/shards/000012.done.json       written last: the shard is finished (sizes + SHA-256 of the three)

Every file is written to a unique temporary name, fsynced and renamed into place, and the `.done`
marker only after the other three: a shard whose worker died leaves no marker (and at most
temporary files, removed by the next run), so it is embedded again, never read half-written.
Item ids are `shard << 32 | position`: stable across resumes, unique, and they name where an
item's metadata is (shard file, row) without any lookup table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.errors import FileProblemError

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
ID_SHIFT = 32
ROW_GROUP = 4096  # Parquet row group: a metadata lookup reads this many rows, not the whole shard
FILE_KINDS = ("image.npy", "text.npy", "parquet")


class EmbeddingsFolderError(FileProblemError):
    """An embeddings folder (or one of its files) cannot be used: names the file and the reason."""


def item_id(shard: int, position: int) -> int:
    return (int(shard) << ID_SHIFT) | int(position)


def split_id(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard, position) of each item id."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids >> ID_SHIFT, ids & ((1 << ID_SHIFT) - 1)


def shard_name(index: int, kind: str) -> str:
    return f"{index:06d}.{kind}"


def write_atomic(path: Path, write: Callable[[Any], None]) -> dict[str, Any]:
    """Write a file through `write(fileobj)` to a unique temp name, fsync, rename; returns its
    size and SHA-256 (read back from disk, so the marker vouches for what is really there)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp makes it private; the folder's files are as readable as the folder
    try:
        with open(fd, "wb") as fp:
            write(fp)
            fp.flush()
            os.fsync(fp.fileno())
        info = file_info(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return info


def write_json_atomic(path: Path, data: dict) -> None:
    write_atomic(path, lambda fp: fp.write(json.dumps(data, indent=1, sort_keys=True).encode()))
    fsync_dir(path.parent)


def file_info(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(1 << 22):
            sha.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ShardContent:
    """What one finished shard holds, ready to be written."""

    index: int
    fingerprint: str
    image: np.ndarray  # float16 (n_ok, D)
    text: np.ndarray  # float16 (n_captions, D)
    table: Any  # pyarrow.Table, one row per item
    summary: dict[str, int]  # items, ok, failed, pending, captions


def write_shard(folder: Path, content: ShardContent, model_key: str) -> dict[str, Any]:
    """Write the shard's three files, then its marker; returns the marker."""
    import pyarrow.parquet as pq

    shards = folder / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    files = {
        shard_name(content.index, "image.npy"): lambda fp: np.save(fp, content.image, allow_pickle=False),
        shard_name(content.index, "text.npy"): lambda fp: np.save(fp, content.text, allow_pickle=False),
        shard_name(content.index, "parquet"): lambda fp: pq.write_table(content.table, fp, row_group_size=ROW_GROUP),
    }
    written = {name: write_atomic(shards / name, write) for name, write in files.items()}
    fsync_dir(shards)
    marker = {
        "format": FORMAT,
        "shard": content.index,
        "fingerprint": content.fingerprint,
        "model_key": model_key,
        "dim": int(content.image.shape[1]) if content.image.ndim == 2 else 0,
        "files": written,
        "finished_at": time.time(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        **content.summary,
    }
    write_json_atomic(shards / shard_name(content.index, "done.json"), marker)
    return marker


def read_marker(folder: Path, index: int, *, verify: bool = False) -> dict[str, Any] | None:
    """The marker of a finished shard, None when the shard is not finished (no marker, or a file
    missing or of another size than the marker says; `verify` also compares checksums)."""
    shards = folder / SHARDS
    try:
        marker = json.loads((shards / shard_name(index, "done.json")).read_text())
    except (OSError, ValueError):
        return None
    for name, info in marker.get("files", {}).items():
        path = shards / name
        try:
            if path.stat().st_size != info["bytes"] or (verify and file_info(path)["sha256"] != info["sha256"]):
                log.warning("%s differs from its shard marker: the shard will be embedded again", path)
                return None
        except OSError:
            return None
    return marker


def remove_temporaries(folder: Path) -> int:
    """Delete temporary files a killed writer left (none is ever read); returns how many."""
    shards = folder / SHARDS
    if not shards.is_dir():
        return 0
    stale = [p for p in shards.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a finished embeddings folder; EmbeddingsFolderError naming what is wrong."""
    path = Path(folder).expanduser() / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise EmbeddingsFolderError(
            path, "no manifest: not an embeddings folder, or embed-dataset has not finished"
        ) from None
    except (OSError, ValueError) as exc:
        raise EmbeddingsFolderError(path, f"unreadable manifest: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise EmbeddingsFolderError(path, f"format {manifest.get('format')!r}, this xmodal reads {FORMAT}")
    return manifest


@dataclass(frozen=True)
class ShardFiles:
    """A finished shard's files; vectors are memory-mapped (read as they are used)."""

    folder: Path
    index: int
    marker: dict[str, Any]

    def path(self, kind: str) -> Path:
        return self.folder / SHARDS / shard_name(self.index, kind)

    def image_vectors(self) -> np.ndarray:
        return self._npy("image.npy")

    def text_vectors(self) -> np.ndarray:
        return self._npy("text.npy")

    def table(self, columns: list[str] | None = None):
        import pyarrow.parquet as pq

        return pq.read_table(self.path("parquet"), columns=columns)

    def verify(self) -> None:
        """Compare every file with the checksum in its marker; EmbeddingsFolderError on a mismatch."""
        for name, info in self.marker["files"].items():
            path = self.folder / SHARDS / name
            try:
                found = file_info(path)
            except OSError as exc:
                raise EmbeddingsFolderError(path, f"cannot read: {exc.strerror or exc}") from None
            if found != info:
                raise EmbeddingsFolderError(path, "does not match the checksum its shard recorded (damaged?)")

    def _npy(self, kind: str) -> np.ndarray:
        path = self.path(kind)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EmbeddingsFolderError(path, f"unreadable embeddings: {exc}") from None


def finished_shards(folder: str | os.PathLike) -> Iterator[ShardFiles]:
    """The shards a manifest lists, in order, each checked against its marker's sizes."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    for entry in manifest["shards"]:
        marker = read_marker(folder, entry["shard"])
        if marker is None:
            raise EmbeddingsFolderError(
                folder / SHARDS / shard_name(entry["shard"], "done.json"), "missing or damaged shard"
            )
        yield ShardFiles(folder, entry["shard"], marker)

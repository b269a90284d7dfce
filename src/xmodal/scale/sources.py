"""What `embed-dataset` reads: a source cut into shards, and each shard's items as embed-stage jobs.

Sources: a folder (walked like a library root), a file list (one path per line, relative to the
list's folder), a captioned dataset any xmodal reader takes (generic JSONL/CSV, Karpathy, COCO...;
`FORMAT:PATH` or a guessed path) and webdataset-style `.tar` shards (a folder of them, a glob, or
one file). Path sources are cut into shards of `shard_size` items in a stable order, so a resumed
run cuts the same shards; every `.tar` is one shard of its own. `ShardSpec`s are small and
JSON-serialisable (they travel to Ray workers); `shard_jobs` turns one into `FileJob`s lazily,
reading archive members one group at a time.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xmodal import settings
from xmodal.errors import DatasetFormatError, InvalidArgumentError
from xmodal.media.formats import TEXT_EXTENSIONS, extension, media_type
from xmodal.media.walk import MediaFile, walk_media
from xmodal.store.ingest.plan import FileJob

LIST_SUFFIXES = (".txt", ".lst", ".list")
CAPTION_SUFFIXES = (".txt", ".caption", ".cap")  # webdataset members holding a caption as plain text
ARCHIVE_SEPARATOR = "#"  # "shard-0001.tar#000123.jpg": an archive member's path


@dataclass(frozen=True)
class SourceItem:
    """One item of a path source: the file, and its captions (empty when the source has none)."""

    path: str
    captions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShardSpec:
    """One unit of work: `items` of a path source, or one `archive` (a webdataset .tar)."""

    index: int
    items: tuple[SourceItem, ...] = ()
    archive: str | None = None
    count: int = 0  # items in the shard (members grouped by key, for an archive)

    def fingerprint(self) -> str:
        """A digest of what the shard holds: a resumed run checks finished shards still match it."""
        text = json.dumps([self.archive, [[i.path, list(i.captions)] for i in self.items], self.count])
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> ShardSpec:
        raw = json.loads(text)
        items = tuple(SourceItem(i["path"], tuple(i["captions"])) for i in raw["items"])
        return cls(raw["index"], items, raw["archive"], raw["count"])


@dataclass
class SourcePlan:
    """A source described and cut into shards; `problems` are records the reader skipped."""

    description: str  # e.g. "folder /data/photos", "jsonl /data/captions.jsonl"
    kind: str  # "folder" | "list" | "captions" | "webdataset"
    shards: list[ShardSpec]
    problems: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(s.count for s in self.shards)


def plan_source(source: str | os.PathLike, shard_size: int = 1000) -> SourcePlan:
    """Read `source` far enough to cut it into shards (paths are listed, files are not read)."""
    if not isinstance(shard_size, int) or shard_size < 1:
        raise InvalidArgumentError("--shard-size", shard_size, "a whole number >= 1")
    text = os.fspath(source)
    archives = _archives(text)
    if archives is not None:
        shards = [ShardSpec(n, archive=a, count=_count_members(a)) for n, a in enumerate(archives)]
        return SourcePlan(f"webdataset {text} ({len(archives)} .tar shards)", "webdataset", shards)
    path = Path(text).expanduser()
    if path.is_dir():
        files = [e for e in walk_media([path]) if isinstance(e, MediaFile)]
        items = [SourceItem(f.path) for f in files]
        return SourcePlan(f"folder {path.absolute()}", "folder", _cut(items, shard_size))
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES and not _is_dataset_text(path):
        return SourcePlan(f"file list {path.absolute()}", "list", _cut(_read_list(path), shard_size))
    return _plan_captions(text, shard_size)


def _archives(text: str) -> list[str] | None:
    """The .tar shards a source names (a .tar file, a glob of them, a folder holding them), else None."""
    if any(ch in text for ch in "*?["):
        found = sorted(p for p in glob.glob(os.path.expanduser(text)) if _is_archive(p))
        if not found:
            raise DatasetFormatError(text, "the pattern matches no .tar files")
        return [os.path.abspath(p) for p in found]
    path = Path(text).expanduser()
    if path.is_file() and _is_archive(path.name):
        return [str(path.absolute())]
    if path.is_dir():
        found = sorted(str(p.absolute()) for p in path.iterdir() if p.is_file() and _is_archive(p.name))
        return found or None
    return None


def _is_archive(name: str | os.PathLike) -> bool:
    return os.fspath(name).lower().endswith((".tar", ".tar.gz", ".tgz"))


def _is_dataset_text(path: Path) -> bool:
    """CLIP_benchmark's flickr*_karpathy.txt is a captions file, not a file list."""
    return path.name.lower().startswith("flickr") and path.name.lower().endswith("_karpathy.txt")


def _cut(items: list[SourceItem], size: int) -> list[ShardSpec]:
    return [
        ShardSpec(n, tuple(items[start : start + size]), count=len(items[start : start + size]))
        for n, start in enumerate(range(0, len(items), size))
    ]


def _read_list(path: Path) -> list[SourceItem]:
    """Paths one per line (blank lines and '#' comments skipped), relative to the list's folder; each once."""
    seen: dict[str, None] = {}
    with open(path, "rb") as fp:
        for raw in fp:
            line = os.fsdecode(raw.rstrip(b"\r\n")).strip()
            if line and not line.startswith("#"):
                seen.setdefault(os.path.normpath(os.path.join(path.parent.absolute(), os.path.expanduser(line))))
    return [SourceItem(p) for p in seen]


def _plan_captions(text: str, shard_size: int) -> SourcePlan:
    """Any captioned dataset xmodal reads (every split); files it names but lacks become failed items."""
    from xmodal.eval.datasets import ReadOptions, read_dataset
    from xmodal.eval.datasets.base import RetrievalDataset

    dataset: RetrievalDataset = read_dataset(text, ReadOptions(split=None))
    captions: list[list[str]] = [[] for _ in dataset.items]
    for caption, positives in zip(dataset.texts, dataset.text_positives, strict=True):
        for i in positives:
            captions[i].append(caption)
    items = []
    for source, caps in zip(dataset.items, captions, strict=True):
        if not isinstance(source, Path):
            raise DatasetFormatError(text, f"{dataset.format} keeps its images inside its own files; embed a folder")
        items.append(SourceItem(str(source), tuple(caps)))
    items += [SourceItem(os.path.abspath(missing)) for missing in dataset.missing]
    problems = [str(p) for p in dataset.problems]
    return SourcePlan(f"{dataset.format} {text}", "captions", _cut(items, shard_size), problems)


def shard_jobs(spec: ShardSpec, captions: dict[str, tuple[str, ...]]) -> Iterator[FileJob]:
    """The embed-stage jobs of one shard, in shard order; fills `captions` (job path -> captions)
    as it goes. Archive members are read one group at a time, bounded by the size limits."""
    if spec.archive is not None:
        yield from _archive_jobs(spec.archive, captions)
        return
    for item in spec.items:
        captions[item.path] = item.captions
        yield _file_job(item.path)


def _file_job(path: str) -> FileJob:
    kind = media_type(path) or "image"  # listed explicitly: the decoder says if it is no image
    try:
        st = os.stat(path)
    except OSError:
        return FileJob(path, kind, 0, 0)  # the embed stage's read reports why
    return FileJob(path, kind, st.st_size, st.st_mtime_ns)


@dataclass
class _Group:
    key: str
    media: tuple[tarfile.TarInfo, str] | None = None  # member, type
    captions: list[str] = field(default_factory=list)


def _archive_jobs(archive: str, captions: dict[str, tuple[str, ...]]) -> Iterator[FileJob]:
    """Members grouped by key (the name up to the first dot of its file name), webdataset's rule:
    one media member per group (the first), captions from .txt/.caption members or a .json's
    "caption"/"captions"."""
    limits = settings.current()
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise DatasetFormatError(archive, f"not a readable tar archive: {exc}") from None
    with tar:
        group: _Group | None = None
        for member in tar:
            if not member.isfile():
                continue
            key = _member_key(member.name)
            if group is not None and key != group.key:
                yield from _group_job(archive, tar, group, captions, limits)
                group = None
            group = group or _Group(key)
            _add_member(tar, member, group)
        if group is not None:
            yield from _group_job(archive, tar, group, captions, limits)


def _member_key(name: str) -> str:
    folder, _, base = name.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{folder}/{stem}" if folder else stem


def _add_member(tar: tarfile.TarFile, member: tarfile.TarInfo, group: _Group) -> None:
    ext = extension(member.name)
    kind = media_type(member.name)
    if kind is not None and group.media is None:
        group.media = (member, kind)
    elif ext in CAPTION_SUFFIXES or ext in TEXT_EXTENSIONS:
        group.captions.append(_read_text(tar, member))
    elif ext == ".json":
        try:
            record = json.loads(_read_text(tar, member))
        except ValueError:
            return
        if isinstance(record, dict):
            found = record.get("captions", [record.get("caption")])
            group.captions += [c.strip() for c in found if isinstance(c, str) and c.strip()]


def _read_text(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int = 1 << 20) -> str:
    handle = tar.extractfile(member)
    return handle.read(limit).decode("utf-8", "replace").strip() if handle else ""


def _group_job(
    archive: str, tar: tarfile.TarFile, group: _Group, captions: dict[str, tuple[str, ...]], limits
) -> Iterator[FileJob]:
    if group.media is None:
        return  # captions or metadata without an image: nothing to embed
    member, kind = group.media
    path = f"{archive}{ARCHIVE_SEPARATOR}{member.name}"
    captions[path] = tuple(c for c in group.captions if c)
    limit = limits.max_bytes(kind)
    handle = tar.extractfile(member)
    # one byte past the limit is enough for the embed stage to refuse it, naming the limit; a video
    # is never read (the embed stage records it as pending without its bytes)
    data = handle.read(min(member.size, limit + 1)) if handle and kind == "image" else b""
    yield FileJob(path, kind, member.size, int(member.mtime * 1e9), data=data)


def _count_members(archive: str) -> int:
    """Groups holding a media member (what `_archive_jobs` yields), from the tar headers."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            keys = {_member_key(m.name) for m in tar if m.isfile() and media_type(m.name) is not None}
    except (OSError, tarfile.TarError) as exc:
        raise DatasetFormatError(archive, f"not a readable tar archive: {exc}") from None
    return len(keys)

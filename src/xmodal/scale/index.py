"""A compressed Faiss index over an embeddings folder, built within a memory budget and served
memory-mapped.

Building never holds all vectors: the index (IVF, with PQ/OPQ codes when raw vectors would not fit)
is trained on a sample drawn across the shards, then filled shard by shard from the memory-mapped
float16 files, while an exact top-k over the same shards is kept for held-out queries; the recall
@10 each nprobe reaches against it picks the search setting. The spec is chosen from a memory
budget the way autofaiss's `max_index_memory_usage` does: the best code that fits (float16, then
8-bit scalar codes, then product quantizers of fewer and fewer bytes). An OPQ rotation
("OPQ64,IVF4096,PQ64"), which helps PQ on real embeddings at the cost of a much longer training,
is built when asked for by spec.

This is not the library's per-model index (store/indexes.py): that one is a cache of a catalog,
rebuilt and caught up from it, in the xmodal index file format (ids + payload + checksummed
header, loaded whole). This one is derived from an immutable embeddings folder, so it is never
caught up, only rebuilt; it is a plain Faiss file (Faiss maps only files of its own format) with
its header beside it in index.json, and it is searched through the same FaissIndex code.

    DIR/index/index.faiss   the Faiss index file (ids are the shards' item ids)
    DIR/index/index.json    spec, search params, measured recall per setting, sizes, SHA-256 of
                            index.faiss and of the manifest it was built from

Served with `faiss.IO_FLAG_MMAP` where the index type allows (IVF lists: codes and ids stay in the
file, the page cache holds what is used), ids map to metadata through the shards' Parquet row
groups, so a 100M-vector index answers without its vectors — or even its codes — in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.models.embedder import Embedder, same_model
from xmodal.progress import NullProgress, Progress
from xmodal.scale.shards import (
    MANIFEST,
    EmbeddingsFolderError,
    ShardFiles,
    file_info,
    finished_shards,
    read_manifest,
    split_id,
    write_atomic,
    write_json_atomic,
)
from xmodal.search import (
    Hit,
    MinScore,
    QueryTerm,
    SearchResults,
    check_k,
    floors_for,
    parse_query,
    query_modality,
    query_vector,
)
from xmodal.store.index.faiss_ann import FaissIndex
from xmodal.store.index.tune import held_out_queries, tune_index

log = logging.getLogger(__name__)

INDEX_FOLDER = "index"
INDEX_FILE = "index.faiss"
INFO_FILE = "index.json"
FLAT_MAX = 200_000  # up to this many vectors (and within the budget) an exact scan is the index
HELD_OUT_QUERIES = 1000
CHUNK = 100_000  # vectors converted to float32 and added at a time
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(text: str | int) -> int:
    """'4G' -> 4 GiB in bytes ('512M', '1.5G', '64GB', a plain number of bytes)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise InvalidArgumentError("--max-index-memory", text, "a size such as 512M, 4G or 1.5T")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def estimate_bytes(spec: str, count: int, dim: int) -> int:
    """What an index of `spec` over `count` vectors takes: codes and ids, centroids, rotation,
    the IVF-PQ precomputed distance tables Faiss keeps when they are under 2 GiB."""
    nlist = int(m.group(1)) if (m := re.search(r"IVF(\d+)", spec)) else 0
    pq = int(m.group(1)) if (m := re.search(r",PQ(\d+)", spec)) else 0
    if spec == "Flat":
        code = 4 * dim
    elif "SQfp16" in spec:
        code = 2 * dim
    elif "SQ8" in spec:
        code = dim
    else:
        code = pq
    total = count * (code + 8) + 4 * nlist * dim + 64 * nlist
    if "_HNSW" in spec:
        total += nlist * (32 * 2 * 4 + 16)  # the coarse quantizer's graph
    if spec.startswith("OPQ"):
        total += 4 * dim * dim
    if pq and nlist * pq * 256 * 4 < 2**31:
        total += nlist * pq * 256 * 4
    return total


def candidate_specs(count: int, dim: int) -> list[str]:
    """Specs from the most accurate (largest codes) to the smallest, for `count` vectors."""
    specs = ["Flat"] if count <= FLAT_MAX else []
    nlist = nlist_for(count)
    ivf = f"IVF{nlist}_HNSW32" if nlist >= 4096 else f"IVF{nlist}"
    specs += [f"{ivf},SQfp16", f"{ivf},SQ8"]
    for m in (dim // 2, dim // 4, dim // 8, dim // 16, dim // 32):
        if m >= 4 and dim % m == 0:
            specs.append(f"{ivf},PQ{m}")
    return specs


def nlist_for(count: int) -> int:
    """Inverted lists: a power of two near sqrt(count) (at least 39 training vectors per list,
    the Faiss minimum), between 1 and 65536."""
    if count < 39:
        return 1
    target = 2 ** round(math.log2(math.sqrt(count)))
    return int(max(1, min(target, 65536, 2 ** int(math.log2(count // 39)))))


def choose_spec(count: int, dim: int, budget: int) -> str:
    """The most accurate candidate whose estimate fits `budget` bytes; a clear error if none does."""
    specs = candidate_specs(count, dim)
    for spec in specs:
        if estimate_bytes(spec, count, dim) <= budget:
            return spec
    smallest = min(estimate_bytes(s, count, dim) for s in specs)
    raise InvalidArgumentError(
        "--max-index-memory",
        f"{budget / 2**20:,.0f} MiB",
        f"at least {smallest / 2**20:,.0f} MiB for {count:,} vectors",
    )


def build_sharded_index(
    folder: str | os.PathLike,
    *,
    max_memory: str | int = "4G",
    spec: str | None = None,
    target_recall: float = 0.9,
    queries: int = HELD_OUT_QUERIES,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build, tune and save the index of an embeddings folder's image vectors; returns its info."""
    started = time.perf_counter()
    progress = progress or NullProgress()
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    shards = [s for s in finished_shards(folder) if s.marker["ok"]]
    count, dim = sum(s.marker["ok"] for s in shards), int(manifest["model"]["dim"])
    if count == 0:
        raise EmbeddingsFolderError(folder, "holds no image embeddings to index")
    budget = parse_memory(max_memory)
    spec = spec or choose_spec(count, dim, budget)
    index = FaissIndex.create(spec, dim)
    train_size = max(64 * (index.ivf.nlist if index.ivf is not None else 0), 65_536)
    sample = _sample(shards, min(count, train_size + queries), seed)
    query_vectors = held_out_queries(sample[:queries], queries, seed)
    index.train(sample[queries:] if len(sample) > queries + 1000 else sample)
    progress.start("indexing", count)
    truth, exact_seconds = _fill(index.index, shards, query_vectors, progress)
    served = MappedFaissIndex(index.index, spec, index.params)
    report = tune_index(
        served, target_recall=target_recall, queries=query_vectors, truth=truth, exact_qps=len(truth) / exact_seconds
    )
    out = folder / INDEX_FOLDER
    out.mkdir(exist_ok=True)
    written = write_atomic(
        out / INDEX_FILE, lambda fp: faiss.write_index(index.index, faiss.PyCallbackIOWriter(fp.write))
    )
    best = next(s for s in report.settings if s.params == report.chosen)
    info = {
        "spec": spec,
        "params": report.chosen,
        "count": count,
        "dim": dim,
        "model_key": manifest["model"]["key"],
        "max_index_memory": budget,
        "estimated_bytes": estimate_bytes(spec, count, dim),
        "index_bytes": written["bytes"],
        "index_sha256": written["sha256"],
        "manifest_sha256": file_info(folder / MANIFEST)["sha256"],
        "recall_at_10": best.recall,
        "tune": report.to_dict(),
        "seconds": time.perf_counter() - started,
        "built_at": time.time(),
        "path": str(out / INDEX_FILE),
    }
    write_json_atomic(out / INFO_FILE, info)
    log.info("built %s over %d vectors: recall@10 %.3f at %s", spec, count, best.recall, report.chosen)
    return info


def _sample(shards: list[ShardFiles], size: int, seed: int) -> np.ndarray:
    """`size` rows drawn uniformly across the shards (only those rows are read), float32, shuffled."""
    counts = np.array([s.marker["ok"] for s in shards])
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(counts.sum(), size=size, replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    parts = []
    for n, shard in enumerate(shards):
        rows = chosen[(chosen >= starts[n]) & (chosen < starts[n + 1])] - starts[n]
        if len(rows):
            parts.append(np.asarray(shard.image_vectors()[rows], dtype=np.float32))
    sample = np.concatenate(parts)
    return sample[rng.permutation(len(sample))]


def _fill(index: faiss.Index, shards: list[ShardFiles], queries: np.ndarray, progress: Progress):
    """Add every shard's vectors under their item ids, chunk by chunk, and keep the exact top-10
    of `queries` over the same vectors. Ids are unique by construction (shard << 32 | row), so
    the per-add id checks of VectorIndex.add are skipped: they cost O(total) each time."""
    heap = faiss.ResultHeap(len(queries), 10, keep_max=True)
    exact = 0.0
    for shard in shards:
        vectors = shard.image_vectors()
        ids = shard.table(["id", "image_row"])
        rows = np.asarray(ids["image_row"].to_numpy())
        item_ids = np.asarray(ids["id"].to_numpy())[rows >= 0][np.argsort(rows[rows >= 0])]
        for start in range(0, len(vectors), CHUNK):
            chunk = np.ascontiguousarray(vectors[start : start + CHUNK], dtype=np.float32)
            chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
            chunk_ids = np.ascontiguousarray(item_ids[start : start + CHUNK])
            index.add_with_ids(chunk, chunk_ids)
            began = time.perf_counter()
            scores, found = faiss.knn(queries, chunk, min(10, len(chunk)), metric=faiss.METRIC_INNER_PRODUCT)
            exact += time.perf_counter() - began
            labels = np.where(found >= 0, chunk_ids[np.maximum(found, 0)], -1)
            if found.shape[1] < 10:  # a chunk of fewer than 10 vectors
                pad = 10 - found.shape[1]
                scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
                labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
            heap.add_result(np.ascontiguousarray(scores, dtype=np.float32), np.ascontiguousarray(labels))
            progress.advance(len(chunk))
    heap.finalize()
    return heap.I, max(exact, 1e-9)


class MappedFaissIndex(FaissIndex):
    """A FaissIndex over a Faiss file of its own (built from shards, served memory-mapped): its
    ids live in the index's inverted lists, not in a copy in memory; read-only."""

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise InvalidArgumentError("index", self.spec, "an index of the library (this one is built from shards)")

    _remove = _add  # type: ignore[assignment]


class ShardedIndex:
    """A built index of an embeddings folder, opened for search: `search(vectors, k)` gives
    scores and item ids; `metadata(ids)` their Parquet rows."""

    def __init__(self, folder: str | os.PathLike, *, mmap: bool = True, verify: bool = False):
        self.folder = Path(folder).expanduser()
        self.manifest = read_manifest(self.folder)
        out = self.folder / INDEX_FOLDER
        try:
            self.info = json.loads((out / INFO_FILE).read_text())
        except (OSError, ValueError):
            raise EmbeddingsFolderError(out / INFO_FILE, "no index built (run: xmodal build-index DIR)") from None
        path = out / INDEX_FILE
        _check_index_file(path, self.info, self.folder, verify)
        flags = faiss.IO_FLAG_MMAP if mmap else 0
        try:
            inner = faiss.read_index(str(path), flags)
        except RuntimeError:
            inner = faiss.read_index(str(path))  # an index type that cannot be mapped is read whole
        self.mapped = bool(mmap) and _is_mapped(inner)
        self.index = MappedFaissIndex(inner, self.info["spec"], self.info["params"])
        self._shards = {s.index: s for s in finished_shards(self.folder)}

    def __len__(self) -> int:
        return len(self.index)

    def search(self, queries: np.ndarray, k: int = 10, params: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k, params=params)

    def metadata(
        self, ids: np.ndarray, columns: tuple[str, ...] = ("path_bytes", "captions", "taken_at")
    ) -> list[dict]:
        """The Parquet rows of item ids (reads one row group per hit, never a whole shard)."""
        shards, positions = split_id(ids)
        rows = []
        for shard, position in zip(shards.tolist(), positions.tolist(), strict=True):
            files = self._shards.get(shard)
            if files is None:
                raise EmbeddingsFolderError(self.folder, f"item id of shard {shard}, which the manifest does not list")
            rows.append(_row(str(files.path("parquet")), position, columns))
        return rows


@lru_cache(maxsize=64)
def _parquet(path: str):
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    starts = np.cumsum([0] + [handle.metadata.row_group(g).num_rows for g in range(handle.num_row_groups)])
    return handle, starts


def _row(path: str, position: int, columns: tuple[str, ...]) -> dict:
    handle, starts = _parquet(path)
    group = int(np.searchsorted(starts, position, side="right") - 1)
    table = handle.read_row_group(group, columns=list(columns))
    return table.slice(position - int(starts[group]), 1).to_pylist()[0]


def _check_index_file(path: Path, info: dict, folder: Path, verify: bool) -> None:
    """Refuse an index file that is not the one its info describes, or that was built from
    another manifest (the folder was extended or replaced since)."""
    try:
        size = path.stat().st_size
    except OSError:
        raise EmbeddingsFolderError(path, "missing (run: xmodal build-index DIR)") from None
    if size != info["index_bytes"] or (verify and file_info(path)["sha256"] != info["index_sha256"]):
        raise EmbeddingsFolderError(path, "does not match index.json (damaged or replaced): build it again")
    manifest = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    if manifest != info["manifest_sha256"]:
        raise EmbeddingsFolderError(path, "was built before the embeddings folder last changed: build it again")


def _is_mapped(index: faiss.Index) -> bool:
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)


def query_model(index: ShardedIndex, model: str | None = None) -> Embedder:
    """The model that embeds queries of `index`: `model` (a name or folder), else the one the
    folder was embedded with, at its precision (search_embeddings refuses another model)."""
    from xmodal.models import load_model

    made_with = index.manifest["model"]
    if model is None and not made_with.get("source"):
        raise EmbeddingsFolderError(index.folder / MANIFEST, "names no model to embed queries with: give --model")
    return load_model(model or made_with["source"], precision=made_with["precision"])


def search_embeddings(
    index: ShardedIndex,
    encoder: Embedder,
    text: str | None = None,
    image: str | os.PathLike | bytes | None = None,
    k: int = 10,
    *,
    language: str | None = None,
    min_score: MinScore = None,
    path_terms: bool = True,
) -> SearchResults:
    """Rank an embeddings folder's images against a text and/or example image query (a file, or
    its bytes; terms combine as in library search: "beach + ./ref.jpg - people") above the same
    score floors as `Library.search` (`min_score` overrides them); the same SearchResults, so every
    output format and the HTTP layer serve it alike. `path_terms=False` never reads a text term as
    an image file (for queries from the network)."""
    if not same_model(encoder.model_key, index.manifest["model"]["key"]):
        raise InvalidArgumentError(
            "--model", encoder.name, f"the model the folder was embedded with ({index.manifest['model']['name']})"
        )
    k = check_k(k)
    terms = parse_query(text, path_terms) if text else []
    if isinstance(image, bytes):
        terms.append(QueryTerm("image", image))
    elif image is not None:
        terms.append(QueryTerm("image", str(Path(image).expanduser())))
    if any(t.kind == "item" for t in terms):
        raise InvalidArgumentError("query", text, "text and image terms (item ids belong to libraries)")
    vector = query_vector(terms, encoder, lambda _: np.empty(0), language)
    floors = floors_for(encoder.name, encoder.family, query_modality(terms), min_score)
    scores, ids = index.search(vector[None, :], min(k, len(index)))
    found = ids[0] >= 0
    scores, ids = scores[0][found], ids[0][found]
    best = float(scores[0]) if len(scores) else None
    floor = floors.get("image")
    if floor is not None:
        kept = scores >= floor
        scores, ids = scores[kept], ids[kept]
    hits = []
    for rank, (score, item, row) in enumerate(zip(scores, ids, index.metadata(ids), strict=True), start=1):
        taken = datetime.fromtimestamp(row["taken_at"]) if row.get("taken_at") is not None else None
        path = os.fsdecode(row["path_bytes"])
        hits.append(Hit(rank, int(item), path, "image", float(score), float(score), taken))
    return SearchResults(hits, floor, best, index.manifest["model"]["name"], floors)

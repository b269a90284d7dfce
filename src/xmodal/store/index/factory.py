"""Index specs -> index objects: "auto", "exact", "exact,fp32" or a Faiss index-factory string."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.store.index import file as index_file
from xmodal.store.index.base import VectorIndex, as_ids
from xmodal.store.index.exact import ExactIndex
from xmodal.store.index.faiss_ann import FaissIndex

# "auto" searches exactly up to this many vectors: an exact float16 scan of 1M x 512 takes well under
# 100 ms on two cores (BENCHMARKS.md, "Vector search"), fast enough for interactive search, with no
# build time and no recall loss. Larger collections get an HNSW graph over float16 vectors.
AUTO_EXACT_MAX = 1_000_000
AUTO_ANN_SPEC = "HNSW32,SQfp16"


def choose_spec(count: int) -> str:
    """The spec "auto" stands for at this collection size."""
    return "exact" if count <= AUTO_EXACT_MAX else AUTO_ANN_SPEC


def create_index(spec: str, dim: int) -> VectorIndex:
    """An empty index for `spec` ("auto" is not allowed here: it needs a size); IVF ones still need training."""
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InvalidArgumentError("dim", dim, "a positive integer")
    name, _, storage = spec.partition(",")
    if name == "exact":
        return ExactIndex(int(dim), storage or "fp16")
    return FaissIndex.create(spec, int(dim))


def build_index(ids: np.ndarray, vectors: np.ndarray, spec: str = "auto") -> VectorIndex:
    """An index over `vectors` (float32 (N, D), rows L2-normalized) keyed by int64 `ids`.

    spec: "auto" (exact up to AUTO_EXACT_MAX vectors, else AUTO_ANN_SPEC), "exact" (float16 storage),
    "exact,fp32", or a Faiss factory string such as "Flat", "HNSW32", "IVF1024,Flat", "IVF1024,PQ32"
    (IVF/PQ indexes are trained on `vectors`).
    """
    ids = as_ids(ids)
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise InvalidArgumentError("vectors", f"shape {array.shape}", "(N, D)")
    index = create_index(choose_spec(len(ids)) if spec == "auto" else spec, array.shape[1])
    if isinstance(index, FaissIndex) and len(ids):
        index.train(array)
    index.add(ids, array)
    return index


def index_file_info(path: str | Path) -> dict:
    """The header of a saved index (spec, kind, dim, count, params, meta, sizes, checksums), checked
    but without reading its payload."""
    return index_file.read_header(path)

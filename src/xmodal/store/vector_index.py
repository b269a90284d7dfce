"""The vector index API the library uses (implementation in `xmodal.store.index`).

index = build_index(ids, vectors, spec="auto")       # "exact", "exact,fp32", "Flat", "HNSW32", "IVF1024,PQ32"
scores, ids = index.search(queries, k=10, allowed=None, params=None)
index.add(ids, vectors); index.remove(ids); index.save(path)
index = VectorIndex.load(path, expected_ids=catalog_ids)   # IndexCorruptError / StaleIndexError
report = tune_index(index, vectors, target_recall=0.95)    # picks nprobe / efSearch
"""

from xmodal.errors import IndexCorruptError, IndexFileError, StaleIndexError
from xmodal.store.index.base import PAD_ID, VectorIndex
from xmodal.store.index.exact import ExactIndex
from xmodal.store.index.factory import (
    AUTO_ANN_SPEC,
    AUTO_EXACT_MAX,
    build_index,
    choose_spec,
    create_index,
    index_file_info,
)
from xmodal.store.index.faiss_ann import FaissIndex
from xmodal.store.index.tune import TuneReport, TuneSetting, tune_index

__all__ = [
    "AUTO_ANN_SPEC",
    "AUTO_EXACT_MAX",
    "PAD_ID",
    "ExactIndex",
    "FaissIndex",
    "IndexCorruptError",
    "IndexFileError",
    "StaleIndexError",
    "TuneReport",
    "TuneSetting",
    "VectorIndex",
    "build_index",
    "choose_spec",
    "create_index",
    "index_file_info",
    "tune_index",
]

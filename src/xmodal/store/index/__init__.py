"""Vector indexes: exact float16 scan and Faiss ANN behind one interface, saved with checksums."""

from xmodal.store.index.base import PAD_ID, VectorIndex
from xmodal.store.index.exact import ExactIndex
from xmodal.store.index.factory import (
    AUTO_ANN_SPEC,
    AUTO_EXACT_MAX,
    build_index,
    choose_spec,
    create_index,
    index_file_info,
    load_index,
)
from xmodal.store.index.faiss_ann import FaissIndex
from xmodal.store.index.tune import TuneReport, TuneSetting, tune_index

__all__ = [
    "AUTO_ANN_SPEC",
    "AUTO_EXACT_MAX",
    "PAD_ID",
    "ExactIndex",
    "FaissIndex",
    "TuneReport",
    "TuneSetting",
    "VectorIndex",
    "build_index",
    "choose_spec",
    "create_index",
    "index_file_info",
    "load_index",
    "tune_index",
]

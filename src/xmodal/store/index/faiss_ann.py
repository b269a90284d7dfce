"""Faiss indexes named by index-factory strings ("Flat", "HNSW32", "IVF1024,Flat", "IVF1024,PQ32").

Labels inside Faiss are the caller's int64 ids: IVF indexes take ids natively, the others sit in an
`IndexIDMap2`. HNSW graphs and refined indexes ("IVF1024,PQ64,Refine(SQfp16)": PQ candidates
re-ranked with float16 vectors) cannot delete, so removed ids become tombstones filtered out at
search time, and the index is rebuilt from its own stored vectors once a quarter of it is dead.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.store.index.base import VectorIndex

log = logging.getLogger(__name__)

SUPPORTED = (
    "Flat, HNSW<M>[,Flat|SQfp16|SQ8], [OPQ<m>,]IVF<nlist>[_HNSW32],Flat|SQfp16|SQ8|PQ<m>[,Refine(SQfp16)|,RFlat] "
    "(Faiss index-factory strings)"
)
DEFAULT_EF_SEARCH = 256  # until tune_index measures: recall@10 ~0.98 on 1M structured vectors, ~30x exact QPS
DEFAULT_MIN_NPROBE = 8  # IVF default nprobe: nlist / 16, at least this
DEFAULT_K_FACTOR = 32  # a refined IVF index re-ranks k * this candidates with its float16 copy (cheap: ~1 KiB each)
_TRAIN_PER_LIST = 64  # IVF training sample: this many vectors per list (Faiss asks for at least 39) ...
_TRAIN_MIN = 65_536  # ... and at least this many (PQ codebooks have 256 centroids each)
_DEAD_FRACTION_REBUILD = 0.25
_FILTER_EXACT_SHARE = 0.05  # a filter keeping at most this share of an HNSW index is scored exactly


class FaissIndex(VectorIndex):
    """An approximate (or, for "Flat", exact float32) Faiss index with the VectorIndex surface."""

    kind = "faiss"

    def __init__(self, index: faiss.Index, spec: str, params: str = "", ids: np.ndarray | None = None):
        super().__init__(spec, index.d, params)
        self.index = index
        self._ids = np.empty(0, dtype=np.int64) if ids is None else ids
        self._dead = np.empty(0, dtype=np.int64)  # tombstones (indexes that cannot delete)

    @classmethod
    def create(cls, spec: str, dim: int) -> FaissIndex:
        """An empty (untrained, for IVF) index for `spec` with sensible default search parameters."""
        try:
            inner = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise InvalidArgumentError("index spec", spec, SUPPORTED) from error
        _skip_polysemous_training(inner)
        if isinstance(inner, faiss.IndexIVF):
            return cls(inner, spec, _default_nprobe(inner))
        if isinstance(inner, faiss.IndexPreTransform) and _ivf_under(inner) is not None:  # "OPQ32,IVF1024,PQ32"
            return cls(inner, spec, _default_nprobe(_ivf_under(inner)))
        if isinstance(inner, faiss.IndexRefine) and isinstance(faiss.downcast_index(inner.base_index), faiss.IndexIVF):
            nprobe = _default_nprobe(faiss.downcast_index(inner.base_index))
            return cls(faiss.IndexIDMap2(inner), spec, f"{nprobe},k_factor={DEFAULT_K_FACTOR}")
        if isinstance(inner, faiss.IndexHNSW):
            return cls(faiss.IndexIDMap2(inner), spec, f"efSearch={DEFAULT_EF_SEARCH}")
        if isinstance(inner, faiss.IndexFlat):
            return cls(faiss.IndexIDMap2(inner), spec)
        raise InvalidArgumentError("index spec", spec, SUPPORTED)

    @property
    def inner(self) -> faiss.Index:
        """The index doing the work (inside the id map when there is one)."""
        if isinstance(self.index, faiss.IndexIDMap2):
            return faiss.downcast_index(self.index.index)
        return self.index

    @property
    def ivf(self) -> faiss.IndexIVF | None:
        """The inverted-file part (the index itself, or the base of a refined one), if any."""
        inner = self.inner
        if isinstance(inner, faiss.IndexRefine):
            inner = faiss.downcast_index(inner.base_index)
        if isinstance(inner, faiss.IndexPreTransform):
            return _ivf_under(inner)
        return inner if isinstance(inner, faiss.IndexIVF) else None

    def train(self, vectors: np.ndarray) -> None:
        """Train IVF centroids / PQ codebooks on `vectors` (no-op for indexes without training)."""
        if self.index.is_trained:
            return
        vectors = np.asarray(vectors)
        nlist = self.ivf.nlist if self.ivf is not None else 0
        cap = max(_TRAIN_PER_LIST * nlist, _TRAIN_MIN)
        if len(vectors) > cap:  # k-means cost grows with the sample; this many per centroid is plenty
            vectors = vectors[np.sort(np.random.default_rng(0).choice(len(vectors), size=cap, replace=False))]
        if len(vectors) < nlist:  # say it plainly instead of Faiss's assertion text
            raise InvalidArgumentError(
                "index spec",
                self.spec,
                f"at least {nlist} vectors to train its {nlist} lists ({len(vectors)} given); "
                "use 'exact' or fewer lists (e.g. IVF{n},Flat with n ~ 4*sqrt(vectors))",
            )
        try:
            self.index.train(self._as_vectors(vectors, "vectors"))
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else "training failed"
            raise InvalidArgumentError(
                "index spec", self.spec, f"enough training vectors for it ({len(vectors)} given: {reason})"
            ) from error

    @property
    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def __len__(self) -> int:
        return len(self._ids)

    def search_param_names(self) -> tuple[str, ...]:
        if isinstance(self.inner, faiss.IndexHNSW):
            return ("efSearch",)
        if isinstance(self.inner, faiss.IndexRefine):
            return ("nprobe", "k_factor")
        return ("nprobe",) if self.ivf is not None else ()

    def memory_bytes(self) -> int:
        inner, total = self.inner, 8 * len(self._ids)
        if inner is not self.index:
            total += 24 * self.index.ntotal  # id map and its reverse hash map
        if isinstance(inner, faiss.IndexRefine):
            refine = faiss.downcast_index(inner.refine_index)
            total += refine.code_size * refine.ntotal
            inner = self.ivf
        if isinstance(inner, faiss.IndexPreTransform):
            total += 4 * inner.d * inner.d * inner.chain.size()  # the rotation (OPQ) matrices
            inner = self.ivf
        if isinstance(inner, faiss.IndexHNSW):
            storage = faiss.downcast_index(inner.storage)
            total += storage.code_size * storage.ntotal + 4 * inner.hnsw.neighbors.size() + 12 * inner.ntotal
        elif isinstance(inner, faiss.IndexIVF):
            total += (inner.code_size + 8) * inner.ntotal + 4 * inner.d * inner.nlist
        else:
            total += inner.code_size * inner.ntotal
        return total

    # --- changes ------------------------------------------------------------------------------

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not self.index.is_trained:
            raise InvalidArgumentError("index", self.spec, "a trained index (build it with build_index)")
        if len(self._dead) and np.isin(ids, self._dead).any():
            self._rebuild_without_dead()  # a tombstoned id added again: its old vector must go first
        self.index.add_with_ids(vectors, ids)
        self._ids = np.concatenate([self._ids, ids])

    def _remove(self, ids: np.ndarray) -> int:
        present = ids[np.isin(ids, self._ids)]
        if not len(present):
            return 0
        if isinstance(self.inner, (faiss.IndexHNSW, faiss.IndexRefine)):
            self._dead = np.union1d(self._dead, present)
            if len(self._dead) > _DEAD_FRACTION_REBUILD * self.index.ntotal:
                self._rebuild_without_dead()
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(len(present), faiss.swig_ptr(present)))
        self._ids = self._ids[~np.isin(self._ids, present)]
        return len(present)

    def _rebuild_without_dead(self) -> None:
        """A fresh index from the live stored vectors (HNSW and refined indexes cannot delete in place)."""
        labels = faiss.vector_to_array(self.index.id_map)
        live = ~np.isin(labels, self._dead)
        vectors = self.inner.reconstruct_n(0, self.index.ntotal)[live]
        log.info("rebuilding %s without its %d removed vectors", self.spec, len(self._dead))
        fresh = FaissIndex.create(self.spec, self.dim)
        fresh.train(vectors)
        fresh.index.add_with_ids(vectors, labels[live])
        self.index, self._dead = fresh.index, np.empty(0, dtype=np.int64)

    # --- search -------------------------------------------------------------------------------

    def copy(self) -> FaissIndex:
        twin = FaissIndex(faiss.clone_index(self.index), self.spec, self.params, self._ids.copy())
        twin._dead, twin.meta = self._dead.copy(), dict(self.meta)
        return twin

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        excluded: np.ndarray | None,
        params: dict[str, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keep: list[Any] = []  # Faiss holds raw pointers to these selectors during the search
        selector, widen = None, 1.0
        dead = self._dead if excluded is None else np.union1d(self._dead, excluded)
        if allowed is not None:
            allowed = allowed[np.isin(allowed, self._ids) & ~np.isin(allowed, dead)]
            if not len(allowed):
                empty = np.empty((len(queries), 0))
                return empty.astype(np.float32), empty.astype(np.int64), empty.astype(np.int64)
            share = len(allowed) / len(self)
            if isinstance(self.index, faiss.IndexIDMap2) and share <= _FILTER_EXACT_SHARE:
                # graph walks lose their way on sparse filters: score the few allowed vectors directly
                rows = self.index.reconstruct_batch(allowed) if len(allowed) else np.empty((0, self.dim), np.float32)
                scores = queries @ rows.T
                found = np.broadcast_to(allowed, scores.shape)
                return scores, found, found
            selector, widen = _batch_selector(allowed, keep), 1 / share
        if len(dead):
            not_dead = faiss.IDSelectorNot(_batch_selector(dead, keep))
            keep.append(not_dead)
            selector = not_dead if selector is None else faiss.IDSelectorAnd(selector, not_dead)
        search_params, where = self._search_parameters(params, widen, keep)
        if selector is not None:
            if where is not search_params:  # a refined index filters in its base, which sees positions
                selector = faiss.IDSelectorTranslated(self.index.id_map, selector)
                keep.append(selector)
            where.sel = selector
        scores, ids = self.index.search(queries, k, params=search_params)
        return scores, ids, ids

    def _search_parameters(
        self, values: dict[str, float], widen: float, keep: list[Any]
    ) -> tuple[faiss.SearchParameters, faiss.SearchParameters]:
        """Faiss parameters for one search and the part that takes a selector; `widen` (1 / share of
        ids a filter keeps) scales nprobe and efSearch so a filtered search still meets about as many
        allowed candidates as an open one."""
        inner, ivf = self.inner, self.ivf
        if isinstance(inner, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW()
            params.efSearch = math.ceil(values.get("efSearch", inner.hnsw.efSearch) * widen)
        elif ivf is not None:
            params = faiss.SearchParametersIVF()
            params.nprobe = min(ivf.nlist, math.ceil(values.get("nprobe", ivf.nprobe) * widen))
        else:
            params = faiss.SearchParameters()
        if not isinstance(inner, faiss.IndexRefine):
            return params, params
        refine = faiss.IndexRefineSearchParameters()
        refine.k_factor = float(values.get("k_factor", inner.k_factor))
        refine.base_index_params = params
        keep.append(params)
        return refine, params

    # --- persistence --------------------------------------------------------------------------

    def _write_payload(self, write: Callable[[bytes], Any]) -> dict[str, Any]:
        write(struct.pack("<Q", len(self._dead)))
        write(self._dead.astype("<i8").tobytes())
        faiss.write_index(self.index, faiss.PyCallbackIOWriter(write))
        return {}

    @classmethod
    def _from_payload(cls, header: dict[str, Any], ids: np.ndarray, read: Callable[[int], bytes]) -> FaissIndex:
        (n_dead,) = struct.unpack("<Q", read(8))
        dead = np.frombuffer(read(8 * n_dead), dtype="<i8").astype(np.int64)
        index = faiss.read_index(faiss.PyCallbackIOReader(read))
        if index.d != header["dim"] or index.ntotal != len(ids) + len(dead):
            raise ValueError(f"Faiss index holds {index.ntotal} vectors of dim {index.d}")
        loaded = cls(index, header["spec"], header.get("params", ""), ids)
        loaded._dead = dead
        return loaded


def _skip_polysemous_training(index: faiss.Index) -> None:
    """IVF-PQ trains a polysemous code order by default: only Hamming-filtered search uses it, and
    it costs most of the training (minutes for a 4-byte code on 4,000 vectors on two busy cores)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
        faiss.downcast_index(ivf).do_polysemous_training = False


def _ivf_under(index: faiss.IndexPreTransform) -> faiss.IndexIVF | None:
    """The IVF index a pre-transform (OPQ, PCA) feeds, if that is what it feeds."""
    under = faiss.downcast_index(index.index)
    return under if isinstance(under, faiss.IndexIVF) else None


def _default_nprobe(ivf: faiss.IndexIVF) -> str:
    return f"nprobe={min(ivf.nlist, max(DEFAULT_MIN_NPROBE, ivf.nlist // 16))}"


def _batch_selector(ids: np.ndarray, keep: list[Any]) -> faiss.IDSelector:
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    keep.append(ids)
    selector = faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))
    keep.append(selector)
    return selector

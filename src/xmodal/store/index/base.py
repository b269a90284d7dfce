"""The VectorIndex interface shared by every backend: argument checks, result order, persistence.

Backends (exact scan, Faiss ANN) implement `_add`, `_remove`, `_search`, `_write_payload` and
`_from_payload`, and register themselves by their `kind` when their class is defined; everything
callers see (validation, padding, tie order, the file format) lives here once.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.store.index import file as index_file

log = logging.getLogger(__name__)

PAD_ID = -1  # id of padding results when fewer than k items qualify (their score is -inf)
_BACKENDS: dict[str, type[VectorIndex]] = {}  # kind -> class, filled as backend classes are defined


class VectorIndex(abc.ABC):
    """Inner-product top-k search over unit vectors keyed by int64 ids (higher score = closer)."""

    kind: ClassVar[str]  # the backend's name in saved files

    def __init__(self, spec: str, dim: int, params: str = ""):
        self.spec = spec
        self.dim = int(dim)
        self.params = params  # default search parameters, e.g. "efSearch=128" (set by tune_index)
        self.meta: dict[str, Any] = {}  # what the index was derived from (saved in its header)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if isinstance(kind, str):
            _BACKENDS[kind] = cls

    # --- what backends implement -------------------------------------------------------------

    @property
    @abc.abstractmethod
    def ids(self) -> np.ndarray:
        """int64 ids of the indexed vectors (a copy), in insertion order."""

    @abc.abstractmethod
    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _remove(self, ids: np.ndarray) -> int: ...

    @abc.abstractmethod
    def _search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        excluded: np.ndarray | None,
        params: dict[str, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k candidates: (scores, ids, tie keys), each (Q, k'), unsorted; ids -1 for padding."""

    @abc.abstractmethod
    def copy(self) -> VectorIndex:
        """An independent copy (changing one never changes the other)."""

    @abc.abstractmethod
    def _write_payload(self, write: Callable[[bytes], Any]) -> dict[str, Any]:
        """Stream the backend's data through `write`; returns extra header fields."""

    @classmethod
    @abc.abstractmethod
    def _from_payload(cls, header: dict[str, Any], ids: np.ndarray, read: Callable[[int], bytes]) -> VectorIndex: ...

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Bytes the index holds in memory (vectors, codes, graph, ids)."""

    def search_param_names(self) -> tuple[str, ...]:
        """Names `params` may set for this index (none for exact search)."""
        return ()

    # --- the public surface ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, dim={self.dim}, count={len(self)}, params={self.params!r})"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (rows L2-normalized) under new ids; an id already present is an error."""
        ids = as_ids(ids)
        vectors = self._as_vectors(vectors, "vectors")
        if len(ids) != len(vectors):
            raise InvalidArgumentError("ids", f"{len(ids)} ids", f"one id per vector ({len(vectors)} vectors)")
        if len(np.unique(ids)) != len(ids):
            raise InvalidArgumentError("ids", "repeated ids", "distinct ids")
        present = np.isin(ids, self.ids)
        if present.any():
            raise InvalidArgumentError("ids", ids[present][:5].tolist(), "ids not yet in the index (remove them first)")
        if len(ids):
            self._add(ids, vectors)

    def remove(self, ids: np.ndarray) -> int:
        """Remove the vectors of these ids; ids not in the index are ignored. Returns how many went."""
        ids = np.unique(as_ids(ids))
        return self._remove(ids) if len(ids) else 0

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        params: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (scores float32 (Q, k), ids int64 (Q, k)), best first.

        Ties are broken by insertion position (exact) or id (Faiss), so results are deterministic;
        rows with fewer than k candidates are padded with id -1 and score -inf. `allowed` limits
        results to those ids (filters), `excluded` leaves those out (superseded entries); `params`
        overrides the default search parameters.
        """
        queries = self._as_vectors(queries, "queries")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgumentError("k", k, "an integer >= 1")
        k = int(k)
        values = parse_params(self.params)
        values.update(parse_params(params))
        unknown = sorted(set(values) - set(self.search_param_names()))
        if unknown:
            valid = ", ".join(self.search_param_names()) or "none for this index"
            raise InvalidArgumentError("search parameter", unknown[0], valid)
        if allowed is not None:
            allowed = np.unique(as_ids(allowed))
        if excluded is not None:
            excluded = np.unique(as_ids(excluded)) if len(excluded) else None
        if len(queries) == 0 or len(self) == 0 or (allowed is not None and len(allowed) == 0):
            return padding(len(queries), k)
        scores, ids, ties = self._search(queries, k, allowed, excluded, values)
        return top_k_sorted(scores, ids, ties, k)

    def save(self, path: str | Path) -> None:
        """Write the index atomically (unique temp file, fsync, rename) with its spec, ids, `meta`
        and checksums in one file: what it was derived from can never disagree with its contents."""
        header = {"kind": self.kind, "spec": self.spec, "dim": self.dim, "params": self.params, "meta": self.meta}
        index_file.write(Path(path), header, self.ids, self._write_payload)
        log.info("saved %s index of %d vectors to %s", self.spec, len(self), path)

    @staticmethod
    def load(path: str | Path, *, expected_ids: np.ndarray | None = None) -> VectorIndex:
        """Read a saved index; IndexCorruptError if damaged, StaleIndexError if its ids differ from
        `expected_ids` (compared as sets). Never returns an index it could not verify."""

        def build(header: dict[str, Any], ids: np.ndarray, read: Callable[[int], bytes]) -> VectorIndex:
            backend = _BACKENDS.get(header.get("kind"))
            if backend is None:
                raise ValueError(f"unknown index kind {header.get('kind')!r}")
            index = backend._from_payload(header, ids, read)
            index.meta = dict(header.get("meta") or {})
            return index

        return index_file.read(path, build, expected_ids)

    def _as_vectors(self, vectors: np.ndarray, name: str) -> np.ndarray:
        array = np.asarray(vectors)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise InvalidArgumentError(name, f"shape {np.shape(vectors)}", f"(N, {self.dim})")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise InvalidArgumentError(name, "non-finite values", "finite float32 values")
        return array


def as_ids(ids: np.ndarray) -> np.ndarray:
    """ids as a 1-D int64 array (integers only)."""
    array = np.asarray(ids)
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InvalidArgumentError("ids", f"{array.dtype} array of shape {array.shape}", "a 1-D array of integer ids")
    return array.astype(np.int64, copy=False)


def parse_params(text: str | None) -> dict[str, float]:
    """'efSearch=64,nprobe=16' -> {'efSearch': 64, 'nprobe': 16} (Faiss ParameterSpace syntax)."""
    values: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None:
            raise InvalidArgumentError("search parameters", text, "comma-separated name=number pairs, e.g. 'nprobe=16'")
        values[name.strip()] = int(number) if number.is_integer() else number
    return values


def format_params(values: dict[str, float]) -> str:
    return ",".join(f"{name}={value}" for name, value in values.items())


def padding(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n_queries, k), -np.inf, dtype=np.float32), np.full((n_queries, k), PAD_ID, dtype=np.int64)


def top_k_sorted(scores: np.ndarray, ids: np.ndarray, ties: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the k best of the candidates, best first, equal scores by ascending tie key; padding last."""
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    ties = np.where(ids < 0, np.iinfo(np.int64).max, ties)
    out_scores, out_ids = padding(len(scores), k)
    for row in range(len(scores)):
        order = np.lexsort((ties[row], -scores[row]))[:k]
        out_scores[row, : len(order)] = scores[row, order]
        out_ids[row, : len(order)] = ids[row, order]
    out_ids[~np.isfinite(out_scores)] = PAD_ID
    return out_scores, out_ids

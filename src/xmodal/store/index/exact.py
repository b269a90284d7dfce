"""Exact top-k search: float16 (or float32) vectors in cache-sized blocks, scanned on all cores.

Why this shape: numpy has no fast float16 kernel (a float16 matmul over 1M x 512 takes seconds),
while Faiss's scalar-quantizer scan reads float16 codes with F16C/AVX-512 and accumulates in float32.
The vectors live in blocks of ~1 MiB (one `IndexScalarQuantizer` fp16 or `IndexFlatIP` each), so a
batch of queries reuses each block from L2 cache, the work splits across threads by block ranges
(Faiss releases the GIL), and no float32 copy of the collection ever exists: memory is the stored
vectors plus the ids. Scores are exact inner products of the stored vectors (float16 rounding of a
unit vector moves a score by ~1e-4, far below the gaps between real neighbours).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import faiss
import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.store.index.base import VectorIndex

STORAGES = {"fp16": np.float16, "fp32": np.float32}
_BLOCK_BYTES = 1 << 20  # one block stays in L2 while every query of a batch scans it
_GATHER_MAX = 4096  # an `allowed` set this small is scored row by row instead of scanning blocks
_PARALLEL_MIN_ROWS = 32_768  # below this a scan is too short to be worth other threads


@cache
def _thread_count() -> int:
    """Usable cores (the process's CPU affinity where the platform has one)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@cache
def _workers() -> ThreadPoolExecutor:
    """One pool for every exact index in the process, a thread per usable core."""
    return ThreadPoolExecutor(max_workers=_thread_count(), thread_name_prefix="xmodal-scan")


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: start a new pool there
    os.register_at_fork(after_in_child=_workers.cache_clear)


class ExactIndex(VectorIndex):
    """Brute-force inner-product search over every stored vector; results equal a float32 scan
    of the stored (float16-rounded) vectors."""

    kind = "exact"

    def __init__(self, dim: int, storage: str = "fp16", spec: str | None = None, params: str = ""):
        if storage not in STORAGES:
            raise InvalidArgumentError("exact index storage", storage, tuple(STORAGES))
        super().__init__(spec or ("exact" if storage == "fp16" else f"exact,{storage}"), dim, params)
        self.storage = storage
        self._dtype = np.dtype(STORAGES[storage])
        self._code_size = self.dim * self._dtype.itemsize
        self._block_rows = max(256, _BLOCK_BYTES // self._code_size)
        self._blocks: list[faiss.IndexFlatCodes] = []
        self._starts = np.zeros(1, dtype=np.int64)  # first position of each block, then the total
        self._ids = np.empty(0, dtype=np.int64)
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # (sorted ids, their positions)

    @property
    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def __len__(self) -> int:
        return len(self._ids)

    def memory_bytes(self) -> int:
        return len(self._ids) * (self._code_size + 8)

    def copy(self) -> ExactIndex:
        twin = ExactIndex(self.dim, self.storage, self.spec, self.params)
        twin.meta = dict(self.meta)
        twin.add_stored(self._ids, self.stored_rows())
        return twin

    # --- storage ------------------------------------------------------------------------------

    def stored_rows(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The stored vectors (all, or those at `positions`) in the storage dtype (float16 rows come
        back bit for bit, with no float32 copy of the collection)."""
        if positions is None:
            parts = [self._codes(block) for block in self._blocks]
            return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=self._dtype)
        out = np.empty((len(positions), self.dim), dtype=self._dtype)
        blocks = np.searchsorted(self._starts, positions, side="right") - 1
        for number in np.unique(blocks):
            where = blocks == number
            out[where] = self._codes(self._blocks[number])[positions[where] - self._starts[number]]
        return out

    def live(self, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, stored rows) of every vector whose id is not in `excluded`, in insertion order."""
        keep = ~np.isin(self._ids, excluded) if len(excluded) else np.ones(len(self._ids), dtype=bool)
        return self._ids[keep], self.stored_rows(np.flatnonzero(keep))

    def add_stored(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Append rows already in this index's storage dtype under new ids (no conversion, no checks
        beyond the shapes: for merging indexes of the same storage)."""
        if rows.dtype != self._dtype or rows.shape != (len(ids), self.dim):
            raise InvalidArgumentError("rows", f"{rows.dtype} {rows.shape}", f"{self._dtype} ({len(ids)}, {self.dim})")
        self._append_rows(np.ascontiguousarray(rows))
        self._update_starts()
        self._ids = np.concatenate([self._ids, np.asarray(ids, dtype=np.int64)])
        self._lookup = None

    def _new_block(self) -> faiss.IndexFlatCodes:
        if self.storage == "fp16":
            return faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        return faiss.IndexFlatIP(self.dim)

    def _codes(self, block: faiss.IndexFlatCodes) -> np.ndarray:
        """The block's stored vectors as an (n, dim) array viewing Faiss's memory (no copy)."""
        if block.ntotal == 0:
            return np.empty((0, self.dim), dtype=self._dtype)
        raw = faiss.rev_swig_ptr(block.codes.data(), block.ntotal * self._code_size)
        return raw.view(self._dtype).reshape(block.ntotal, self.dim)

    def _append_rows(self, rows: np.ndarray) -> None:
        """Append vectors already in the storage dtype, filling the last block first."""
        done = 0
        while done < len(rows):
            if not self._blocks or self._blocks[-1].ntotal >= self._block_rows:
                self._blocks.append(self._new_block())
            block = self._blocks[-1]
            take = min(self._block_rows - block.ntotal, len(rows) - done)
            old = block.ntotal
            block.codes.resize((old + take) * self._code_size)
            raw = faiss.rev_swig_ptr(block.codes.data(), (old + take) * self._code_size)
            raw[old * self._code_size :] = rows[done : done + take].view(np.uint8).reshape(-1)
            block.ntotal = old + take
            done += take

    def _update_starts(self) -> None:
        self._starts = np.concatenate([[0], np.cumsum([b.ntotal for b in self._blocks])]).astype(np.int64)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, len(vectors), self._block_rows):
            self._append_rows(vectors[start : start + self._block_rows].astype(self._dtype))
        self._update_starts()
        self._ids = np.concatenate([self._ids, ids])
        self._lookup = None

    def _remove(self, ids: np.ndarray) -> int:
        keep = ~np.isin(self._ids, ids)
        removed = int(len(keep) - keep.sum())
        if removed:
            old, starts = self._blocks, self._starts
            self._blocks = []
            for number, block in enumerate(old):  # repack block by block: memory grows by one block at most
                rows = self._codes(block)[keep[starts[number] : starts[number + 1]]]
                old[number] = None
                self._append_rows(rows)
            self._update_starts()
            self._ids = self._ids[keep]
            self._lookup = None
        return removed

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Sorted positions of those `ids` that are in the index."""
        if self._lookup is None:
            order = np.argsort(self._ids, kind="stable")
            self._lookup = (self._ids[order], order)
        sorted_ids, order = self._lookup
        found = np.searchsorted(sorted_ids, ids)
        found = found[found < len(sorted_ids)]
        hits = found[np.isin(sorted_ids[found], ids)]
        return np.sort(order[hits])

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        """float32 copies of the stored vectors at these positions."""
        return self.stored_rows(positions).astype(np.float32)

    # --- search -------------------------------------------------------------------------------

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        excluded: np.ndarray | None,
        params: dict[str, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mask = None
        dropped = self._positions(excluded) if excluded is not None else None
        if allowed is not None:
            positions = self._positions(allowed)
            if dropped is not None:
                positions = np.setdiff1d(positions, dropped, assume_unique=True)
            if len(positions) <= _GATHER_MAX:
                scores = queries @ self._rows(positions).T
                found = np.broadcast_to(positions, scores.shape)
                return scores, self._ids[found], found
            mask = np.zeros(len(self._ids), dtype=bool)
            mask[positions] = True
        elif dropped is not None and len(dropped):
            mask = np.ones(len(self._ids), dtype=bool)
            mask[dropped] = False
        n_blocks = len(self._blocks)
        if len(self._ids) >= _PARALLEL_MIN_ROWS and _thread_count() > 1:
            ranges = np.array_split(np.arange(n_blocks), min(n_blocks, _thread_count()))
            parts = list(_workers().map(lambda r: self._scan(queries, k, r, mask), ranges))
        else:
            parts = [self._scan(queries, k, np.arange(n_blocks), mask)]
        scores = np.concatenate([p[0] for p in parts], axis=1)
        positions = np.concatenate([p[1] for p in parts], axis=1)
        ids = np.where(positions >= 0, self._ids[np.maximum(positions, 0)], -1)
        return scores, ids, positions

    def _scan(
        self, queries: np.ndarray, k: int, blocks: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, positions) of these blocks, each block scanned once for all queries."""
        # One OpenMP thread for this calling thread: the scan pool is the parallelism. OpenMP teams
        # over ~1 MiB blocks cost more than they bring, and on busy cores a team waits for its
        # descheduled member (a 300-vector search took 40 ms instead of 0.1 ms).
        faiss.omp_set_num_threads(1)
        heap = faiss.ResultHeap(len(queries), k, keep_max=True)
        for number in blocks:
            block, start = self._blocks[number], int(self._starts[number])
            search_params = None
            if mask is not None:
                members = mask[start : start + block.ntotal]
                if not members.any():
                    continue
                bits = np.packbits(members, bitorder="little")
                search_params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(members), faiss.swig_ptr(bits)))
            scores, local = block.search(queries, k, params=search_params)
            heap.add_result(scores, np.where(local >= 0, local + start, -1))
        heap.finalize()
        return heap.D, heap.I

    # --- persistence --------------------------------------------------------------------------

    def _write_payload(self, write: Callable[[bytes], Any]) -> dict[str, Any]:
        for block in self._blocks:
            write(self._codes(block).view(np.uint8).reshape(-1))
        return {"storage": self.storage}

    @classmethod
    def _from_payload(cls, header: dict[str, Any], ids: np.ndarray, read: Callable[[int], bytes]) -> ExactIndex:
        index = cls(header["dim"], header.get("storage", "fp16"), header["spec"], header.get("params", ""))
        for start in range(0, len(ids), index._block_rows):
            n = min(index._block_rows, len(ids) - start)
            data = read(n * index._code_size)
            if len(data) != n * index._code_size:
                raise ValueError("payload shorter than its vectors")
            index._append_rows(np.frombuffer(data, dtype=index._dtype).reshape(n, index.dim))
        index._update_starts()
        index._ids = ids
        return index

"""Exact top-k search: float16 (or float32) vectors in cache-sized blocks, scanned on all cores.

Why this shape: the vectors live in blocks of ~512 KiB, plain numpy arrays that are either owned or
views of a mapped index file (opening a saved index reads nothing; each block is checked against
its checksum the first time a scan reads it). A block is scored by ONNX Runtime (`scan.py`: cast to
float32 in cache, one GEMM, top-k), so no float32 copy of the collection ever exists and no Faiss
is imported for exact search; the work splits across threads by block ranges (ONNX Runtime
releases the GIL). Scores are exact inner products of the stored vectors (float16 rounding of a
unit vector moves a score by ~1e-4, far below the gaps between real neighbours).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.store.index.base import VectorIndex
from xmodal.store.index.file import IndexFile
from xmodal.store.index.scan import scan_block

STORAGES = {"fp16": np.float16, "fp32": np.float32}
_BLOCK_BYTES = 1 << 19  # one block (and its float32 cast) stays in L2 while it is scored
_GATHER_MAX = 4096  # an `allowed` set this small is scored row by row instead of scanning blocks
_PARALLEL_MIN_ROWS = 32_768  # below this a scan is too short to be worth other threads
_MERGE_EVERY = 64  # blocks between reductions of a thread's candidates to the best k


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
        self._blocks: list[np.ndarray] = []  # (rows, dim) arrays of the storage dtype, all full but the last
        self._starts = np.zeros(1, dtype=np.int64)  # first position of each block, then the total
        self._ids = np.empty(0, dtype=np.int64)
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # (sorted ids, their positions)
        self._file: IndexFile | None = None  # the mapped file the first `_mapped` blocks view
        self._mapped = 0

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

    def _block(self, number: int) -> np.ndarray:
        """Block `number`, checked against the file's checksum first when it views a mapped file."""
        if number < self._mapped:
            assert self._file is not None
            self._file.check(
                number * self._block_rows * self._code_size, (number + 1) * self._block_rows * self._code_size
            )
        return self._blocks[number]

    def stored_rows(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The stored vectors (all, or those at `positions`) in the storage dtype (float16 rows come
        back bit for bit, with no float32 copy of the collection)."""
        if positions is None:
            parts = [self._block(n) for n in range(len(self._blocks))]
            return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=self._dtype)
        out = np.empty((len(positions), self.dim), dtype=self._dtype)
        blocks = np.searchsorted(self._starts, positions, side="right") - 1
        for number in np.unique(blocks):
            where = blocks == number
            out[where] = self._block(int(number))[positions[where] - self._starts[number]]
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
        self._append_rows(rows)
        self._update_starts()
        self._ids = np.concatenate([self._ids, np.asarray(ids, dtype=np.int64)])
        self._lookup = None

    def _append_rows(self, rows: np.ndarray) -> None:
        """Append vectors already in the storage dtype, filling the last block first."""
        done = 0
        if self._blocks and len(self._blocks[-1]) < self._block_rows and len(rows):
            last = len(self._blocks) - 1
            take = min(self._block_rows - len(self._blocks[last]), len(rows))
            self._blocks[last] = np.concatenate([self._block(last), rows[:take]])  # a mapped block is copied
            self._mapped = min(self._mapped, last)
            done = take
        while done < len(rows):
            take = min(self._block_rows, len(rows) - done)
            self._blocks.append(np.array(rows[done : done + take], dtype=self._dtype))
            done += take

    def _update_starts(self) -> None:
        self._starts = np.concatenate([[0], np.cumsum([len(b) for b in self._blocks])]).astype(np.int64)

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
            old, starts = [self._block(n) for n in range(len(self._blocks))], self._starts
            self._blocks, self._mapped = [], 0
            for number, block in enumerate(old):  # repack block by block: memory grows by one block at most
                rows = block[keep[starts[number] : starts[number + 1]]]
                old[number] = None  # type: ignore[call-overload]
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
        """The best k (scores, positions) per query of these blocks (positions -1: padding), each
        block verified (when mapped) and scored once for all queries."""
        scores: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        for count, number in enumerate(blocks, start=1):
            start = int(self._starts[number])
            bias = None
            if mask is not None:
                members = mask[start : int(self._starts[number + 1])]
                if not members.any():
                    continue
                bias = np.where(members, np.float32(0), np.float32(-np.inf))
            values, local = scan_block(self._block(int(number)), queries, k, bias)
            scores.append(values)
            positions.append(np.where(np.isfinite(values), local + start, -1))
            if count % _MERGE_EVERY == 0:
                best_scores, best_positions = _best(scores, positions, k)
                scores, positions = [best_scores], [best_positions]
        if not scores:
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        return _best(scores, positions, k)

    # --- persistence --------------------------------------------------------------------------

    def _payload_block_bytes(self) -> int:
        return self._block_rows * self._code_size  # one checksum per scan block

    def _write_payload(self, write: Callable[[bytes], Any]) -> dict[str, Any]:
        for number in range(len(self._blocks)):
            write(np.ascontiguousarray(self._block(number)).view(np.uint8).reshape(-1))
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

    @classmethod
    def _from_file(cls, file: IndexFile) -> ExactIndex:
        """Blocks that view the mapped file (nothing read until searched; each block is checked
        against its checksum on first read)."""
        header = file.header
        index = cls(header["dim"], header.get("storage", "fp16"), header["spec"], header.get("params", ""))
        count = len(file.ids)
        if file.block_bytes != index._block_rows * index._code_size or len(file.payload) != count * index._code_size:
            return super()._from_file(file)  # written with another layout: read and verify it whole
        rows = file.payload.view(index._dtype).reshape(count, index.dim)
        index._blocks = [rows[start : start + index._block_rows] for start in range(0, count, index._block_rows)]
        index._file, index._mapped = file, len(index._blocks)
        index._update_starts()
        index._ids = file.ids.astype(np.int64)
        return index


def _best(scores: list[np.ndarray], positions: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query the k best candidates: highest score first, equal scores by position (padding last)."""
    all_scores, all_positions = np.concatenate(scores, axis=1), np.concatenate(positions, axis=1)
    if all_scores.shape[1] <= k:
        return all_scores, all_positions
    keys = np.where(all_positions < 0, np.iinfo(np.int64).max, all_positions)
    out_scores = np.empty((len(all_scores), k), np.float32)
    out_positions = np.empty((len(all_scores), k), np.int64)
    for row in range(len(all_scores)):
        order = np.lexsort((keys[row], -all_scores[row]))[:k]
        out_scores[row], out_positions[row] = all_scores[row, order], all_positions[row, order]
    return out_scores, out_positions

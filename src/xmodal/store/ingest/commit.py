"""Ingest, stage 3: write embed results into the catalog, rows together with their vectors.

Each batch of results is one transaction (rows, embeddings, segments), so killing the process at
any moment leaves a consistent catalog whose committed work the next run skips. A new file whose
content matches a row gone from the walked folders is that file moved: the row gets the new path
and keeps its id and added date. What is still gone when the run ends is deleted then.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from xmodal.progress import Progress
from xmodal.store.catalog import Catalog, ItemRecord
from xmodal.store.ingest.embed import EmbedResult
from xmodal.store.ingest.plan import IngestPlan
from xmodal.store.ingest.report import IndexReport


class Committer:
    """Commits the results of one index run for one model and counts them in its report."""

    def __init__(self, catalog: Catalog, model_key: str, plan: IngestPlan, report: IndexReport, progress: Progress):
        self.catalog, self.model_key, self.plan, self.report, self.progress = catalog, model_key, plan, report, progress
        self._gone_by_hash: dict[str, list[ItemRecord]] = defaultdict(list)
        for row in plan.gone.values():
            if row.content_hash and row.status == "ok":
                self._gone_by_hash[row.content_hash].append(row)

    def begin(self) -> None:
        """Record the roots' states and the rows the walk produced (what it could not read)."""
        with self.catalog.transaction() as revision:
            for root in self.plan.roots:
                reason = self.plan.offline.get(root)
                self.catalog.set_root(root, "offline" if reason else "online", reason)
            if self.plan.rows:
                self.catalog.upsert_items(self.plan.rows, revision)
        self.report.failed += self.plan.failed
        self.report.unchanged += self.plan.unchanged
        self.report.offline = dict(self.plan.offline)

    def add(self, results: list[EmbedResult]) -> None:
        """Commit one batch of results in one transaction."""
        if not results:
            return
        moves: dict[str, ItemRecord] = {}  # new path -> the gone row it takes over
        with self.catalog.transaction() as revision:
            self._inherit_details(results)
            fresh = []
            for result in results:
                twin = self._moved_from(result)
                if twin is not None:
                    self.catalog.move_item(twin.id, result.row, revision)
                    moves[result.job.path] = twin
                else:
                    fresh.append(result.row)
            self.catalog.upsert_items(fresh, revision)
            encoded = {r.row.content_hash: r for r in results if r.encoded}
            self.catalog.embeddings.put_many(self.model_key, ((h, r.vector) for h, r in encoded.items()))
            for digest, result in encoded.items():
                if result.segments is not None:
                    self.catalog.put_segments(self.model_key, digest, result.segments)
            self.catalog.touch_hashes(encoded, revision)
        for twin in moves.values():
            del self.plan.gone[twin.path]
        for result in results:
            self._count(result, moved=result.job.path in moves)
        self.progress.advance(len(results))

    def finish(self) -> None:
        """Delete the rows of files still gone (moves have taken theirs); forget gone file roots."""
        gone = [row.id for row in self.plan.gone.values()]
        if not gone:
            return
        with self.catalog.transaction() as revision:
            self.report.removed += self.catalog.delete_items(gone, revision)
            for root in self.plan.roots:
                if root in self.plan.gone:  # a single file given as a root, deleted since
                    self.catalog.forget_root(root)
        self.plan.gone = {}

    def _inherit_details(self, results: list[EmbedResult]) -> None:
        """A video whose content was decoded before (a copy, a touched file) was only probed: it
        keeps what that decoding learnt (frame times, notes) from the row that has it."""
        bare = [
            r
            for r in results
            if r.row.type == "video" and r.row.status == "ok" and not r.encoded and r.row.content_hash
            if "frame_times" not in (r.row.details or {})
        ]
        if not bare:
            return
        known = self.catalog.details_by_hash([r.row.content_hash or "" for r in bare], "video")
        for result in bare:
            details = known.get(result.row.content_hash or "")
            if details is not None:
                result.row = replace(result.row, details=details | (result.row.details or {}))

    def _moved_from(self, result: EmbedResult) -> ItemRecord | None:
        """The gone row this new file is a move of (same content), if any."""
        row = result.row
        if row.status != "ok" or result.job.path in self.plan.existing or not row.content_hash:
            return None
        twins = self._gone_by_hash.get(row.content_hash)
        return twins.pop() if twins else None

    def _count(self, result: EmbedResult, *, moved: bool) -> None:
        report, row, job = self.report, result.row, result.job
        if row.status == "failed":
            report.failed.append((row.path, row.error or ""))
        elif row.status == "pending":
            report.pending += 1
        elif moved:
            report.moved += 1
        elif job.path not in self.plan.existing:
            report.added += 1
        elif job.known_hash is not None:
            report.unchanged += 1
        else:
            report.updated += 1
        if row.status == "ok":
            if result.encoded:
                report.encoded += 1
            else:
                report.reused += 1

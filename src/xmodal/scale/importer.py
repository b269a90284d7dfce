"""Import an embeddings folder into a library catalog through the ingest commit stage.

Each Parquet row becomes the item row the embed stage would have made, with the shard's vector
(float16 on disk, unit float32 in the catalog); a batch of rows and vectors is one transaction,
as in an index run, so an import killed at any moment leaves a consistent catalog and running it
again completes it. Rows already in the catalog with the same content, size and mtime, and an
embedding of this model, are left alone. Nothing is deleted: an import only adds and updates.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from xmodal.progress import NullProgress, Progress
from xmodal.scale.shards import finished_shards, read_manifest
from xmodal.store.catalog import Catalog, ItemUpdate
from xmodal.store.ingest.commit import Committer
from xmodal.store.ingest.embed import EmbedResult
from xmodal.store.ingest.plan import FileJob, IngestPlan
from xmodal.store.ingest.report import IndexReport

log = logging.getLogger(__name__)

BATCH = 1000  # rows per transaction, as the index run commits


def import_shards(
    catalog: Catalog, model_key: str, folder: str | os.PathLike, progress: Progress | None = None
) -> IndexReport:
    """Commit every shard of `folder` into `catalog` (a writer connection) for `model_key`."""
    progress = progress or NullProgress()
    started = time.perf_counter()
    manifest = read_manifest(folder)
    report = IndexReport(model=model_key)
    progress.start("importing", manifest["counts"]["items"])
    plan = IngestPlan(roots=[])
    committer = Committer(catalog, model_key, plan, report, progress)
    with catalog.read():
        embedded = catalog.embedded_hashes(model_key)
    for shard in finished_shards(folder):
        shard.verify()
        table = shard.table().to_pylist()
        vectors = shard.image_vectors()
        for start in range(0, len(table), BATCH):
            results = _results(table[start : start + BATCH], vectors)
            fresh = _not_unchanged(catalog, plan, results, embedded, report)
            progress.advance(len(results) - len(fresh))
            committer.add(fresh)
            embedded.update(r.row.content_hash for r in fresh if r.encoded)
    report.reused, report.encoded = report.reused + report.encoded, 0  # vectors came with the folder: no model work
    report.seconds = time.perf_counter() - started
    log.info("imported %s: %s", Path(folder), report.summary())
    return report


def _results(rows: list[dict], vectors: np.ndarray) -> list[EmbedResult]:
    results = []
    for row in rows:
        path = os.fsdecode(row["path_bytes"])
        update = ItemUpdate(
            path,
            row["type"],
            row["status"],
            row["size"],
            row["mtime_ns"],
            error=row["error"],
            content_hash=row["content_hash"],
            width=row["width"],
            height=row["height"],
            taken_at=row["taken_at"],
            taken_at_source=row["taken_at_source"],
        )
        vector = None
        if row["image_row"] >= 0:
            vector = np.asarray(vectors[row["image_row"]], dtype=np.float32)
            vector /= np.linalg.norm(vector)  # float16 rounding leaves a norm of 1 +- 1e-3
        job = FileJob(path, row["type"], row["size"], row["mtime_ns"])
        results.append(EmbedResult(job, update, vector))
    return results


def _not_unchanged(
    catalog: Catalog, plan: IngestPlan, results: list[EmbedResult], embedded: set[str], report: IndexReport
) -> list[EmbedResult]:
    """The results that change the catalog; the rows they replace are put in `plan.existing` (so
    the committer counts them as updated, not added)."""
    fresh = []
    with catalog.read():
        for result in results:
            old = catalog.item_by_path(result.row.path)
            row = result.row
            same = old is not None and (old.status, old.size, old.mtime_ns, old.content_hash) == (
                row.status,
                row.size,
                row.mtime_ns,
                row.content_hash,
            )
            if same and (row.status != "ok" or row.content_hash in embedded):
                report.unchanged += 1
                continue
            if old is not None:
                plan.existing[row.path] = old
            fresh.append(result)
    return fresh

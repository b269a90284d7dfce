"""Indexing a library, as three stages: plan -> embed -> commit.

`plan` walks the roots and compares them with the catalog (reads only); `embed` reads, decodes and
embeds the files the plan names (no catalog: picklable jobs in, picklable results out, so a thread,
a process or a Ray actor can run it); `commit` writes the results in batches, each one
transaction of rows with their vectors. `ingest` runs the three for one model. Ctrl-C (or SIGTERM,
which the CLI turns into the same) stops after committing what is complete.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from xmodal.media.walk import WalkOptions
from xmodal.models.embedder import Embedder
from xmodal.progress import NullProgress, Progress
from xmodal.store.catalog import Catalog
from xmodal.store.ingest.commit import Committer
from xmodal.store.ingest.embed import READY_TYPES, EmbedConfig, EmbedResult, EmbedRun
from xmodal.store.ingest.embed import embed as embed_files
from xmodal.store.ingest.plan import FileJob, IngestPlan, canonical_root
from xmodal.store.ingest.plan import plan as plan_roots
from xmodal.store.ingest.report import IndexReport

log = logging.getLogger(__name__)

__all__ = [
    "Committer",
    "EmbedConfig",
    "EmbedResult",
    "EmbedRun",
    "FileJob",
    "IndexReport",
    "IngestPlan",
    "canonical_root",
    "embed_files",
    "ingest",
    "plan_roots",
]


def ingest(
    catalog: Catalog,
    embedder: Embedder,
    roots: Sequence[str | os.PathLike],
    *,
    walk: WalkOptions | None = None,
    config: EmbedConfig | None = None,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> IndexReport:
    """Bring the catalog (a writer connection) up to date with the files under `roots` for
    `embedder`'s model. `dry_run` only plans: the report says what would be added, updated,
    removed (moves cannot be told from additions without reading the files)."""
    progress = progress or NullProgress()
    start = time.perf_counter()
    report = IndexReport(model=embedder.model_key, dry_run=dry_run)
    progress.start("scanning", None)
    with catalog.read():
        known = frozenset(catalog.embedded_hashes(embedder.model_key))
    work = plan_roots(catalog, list(roots), known, walk=walk, ready_types=READY_TYPES)
    if dry_run:
        _count_plan(work, report)
        return report
    committer = Committer(catalog, embedder.model_key, work, report, progress)
    committer.begin()
    progress.start("indexing", len(work.jobs))
    run = embed_files(work.jobs, embedder, known, config)
    try:
        for results in run:
            committer.add(results)
    except KeyboardInterrupt:
        committer.add(run.unfinished())
        report.interrupted = True
        log.warning("interrupted: committed work is kept; run again to finish")
    finally:
        committer.finish()
    report.seconds = time.perf_counter() - start
    return report


def _count_plan(work: IngestPlan, report: IndexReport) -> None:
    for job in work.jobs:
        if job.path not in work.existing:
            report.added += 1
        elif job.known_hash is None:
            report.updated += 1
        else:
            report.unchanged += 1
    report.removed = len(work.gone)
    report.unchanged += work.unchanged
    report.failed = list(work.failed)
    report.offline = dict(work.offline)

"""Evaluation: retrieval metrics, dataset readers, retrieval and zero-shot benchmarks, reports and plots."""

from xmodal.eval.metrics import (
    metrics_from_ranks,
    rank_metrics,
    ranks_from_embeddings,
    ranks_from_similarity,
)

__all__ = ["metrics_from_ranks", "rank_metrics", "ranks_from_embeddings", "ranks_from_similarity"]

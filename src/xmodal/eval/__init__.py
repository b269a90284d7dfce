"""Evaluation: retrieval metrics, dataset readers, retrieval and zero-shot benchmarks, reports and plots.

from xmodal.eval import EmbeddingCache, evaluate_retrieval, read_dataset
dataset = read_dataset("karpathy:coco/dataset_coco.json")        # FORMAT:PATH, see datasets
with EmbeddingCache() as cache:
    result = evaluate_retrieval(xmodal.load_model("ViT-B-32__openai"), dataset, cache=cache)
result.directions[0].metrics  # {"R@1", "R@5", "R@10", "MedR", "MnR", "MR"}; .ranks per query
# several models and datasets at once; reports (results.md/.csv/.json, ranks.npz, plots) in one call:
results = evaluate_models(["ViT-B-32__openai", "ViT-B-16-SigLIP__webli"], [dataset], ks=(1, 5, 10, 50))
xmodal.eval.report.write_results(results, xmodal.eval.report.prepare_folder(Path("out")))
"""

from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets import ReadOptions, RetrievalDataset, read_dataset
from xmodal.eval.datasets.classification import ClassificationDataset, read_classification
from xmodal.eval.metrics import (
    metrics_from_ranks,
    rank_metrics,
    ranks_from_embeddings,
    ranks_from_similarity,
)
from xmodal.eval.retrieval import RetrievalResult, evaluate_models, evaluate_retrieval
from xmodal.eval.zeroshot import ZeroShotResult, evaluate_zeroshot, load_templates

__all__ = [
    "ClassificationDataset",
    "EmbeddingCache",
    "ReadOptions",
    "RetrievalDataset",
    "RetrievalResult",
    "ZeroShotResult",
    "evaluate_models",
    "evaluate_retrieval",
    "evaluate_zeroshot",
    "load_templates",
    "metrics_from_ranks",
    "rank_metrics",
    "ranks_from_embeddings",
    "ranks_from_similarity",
    "read_classification",
    "read_dataset",
]

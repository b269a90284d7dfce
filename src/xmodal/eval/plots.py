"""Benchmark plots as PNG files: recall@K curves and confusion matrices.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend
switch), so plotting works headless and leaves an interactive session's backend alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from xmodal.eval.metrics import recall_curve
from xmodal.eval.retrieval import CURVE_MAX_K, RetrievalResult


def safe_name(text: str) -> str:
    """A file-name-safe version of a model or dataset name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unnamed"


def plot_recall_curves(results: Sequence[RetrievalResult], out_dir: Path, max_k: int = CURVE_MAX_K) -> list[Path]:
    """One PNG per dataset: a panel per direction, a recall@K curve (K=1..max_k) per model, chance dashed."""
    paths = []
    for dataset in dict.fromkeys(r.dataset for r in results):
        runs = [r for r in results if r.dataset == dataset]
        directions = list(dict.fromkeys(d.direction for r in runs for d in r.directions))
        fig = Figure(figsize=(5.5 * len(directions), 4.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(directions), sharey=True))
        ks = np.arange(1, max_k + 1)
        for ax, direction in zip(axes, directions, strict=True):
            chance = None
            for r in runs:
                for d in r.directions:
                    if d.direction == direction:
                        ax.plot(ks, recall_curve(d.ranks, max_k), label=r.run_label, linewidth=1.6)
                        chance = d.chance_curve[:max_k]
            if chance is not None:
                ax.plot(ks[: len(chance)], chance, linestyle="--", color="grey", linewidth=1, label="chance")
            d0 = next(d for r in runs for d in r.directions if d.direction == direction)
            ax.set_title(f"{d0.label} — {dataset} ({d0.queries} queries, {d0.gallery} candidates)", fontsize=9)
            ax.set_xlabel("K")
            ax.set_xlim(1, max_k)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("Recall@K (fraction of queries)")
        axes[-1].legend(fontsize=8, loc="lower right")
        path = out_dir / f"recall_at_k_{safe_name(dataset)}.png"
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths


def plot_confusion_matrix(confusion: np.ndarray, classnames: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalized confusion matrix (true class rows, predicted columns); names shown up to 40 classes."""
    rows = confusion.sum(axis=1, keepdims=True)
    normalized = confusion / np.maximum(rows, 1)
    n = len(classnames)
    size = min(14.0, 4.0 + 0.25 * n)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="share of the true class")
    if n <= 40:
        ax.set_xticks(range(n), classnames, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classnames, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=120)
    return path

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
    """One PNG per dataset (see recall_figure): `recall_at_k_DATASET.png` in out_dir."""
    paths = []
    for dataset in dict.fromkeys(r.dataset for r in results):
        path = out_dir / f"recall_at_k_{safe_name(dataset)}.png"
        recall_figure([r for r in results if r.dataset == dataset], max_k).savefig(path, dpi=120)
        paths.append(path)
    return paths


def recall_figure(runs: Sequence[RetrievalResult], max_k: int = CURVE_MAX_K) -> Figure:
    """A panel per direction of one dataset, a recall@K curve per model, chance dashed. The K axis
    ends at the gallery size when that is below `max_k` (past it every curve is 1); the legend sits
    below the panels, so it never covers a curve."""
    dataset = runs[0].dataset
    directions = list(dict.fromkeys(d.direction for r in runs for d in r.directions))
    fig = Figure(figsize=(5.5 * len(directions), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(directions), sharey=True))
    for ax, direction in zip(axes, directions, strict=True):
        d0 = next(d for r in runs for d in r.directions if d.direction == direction)
        last = max(1, min(max_k, d0.gallery))
        ks = np.arange(1, last + 1)
        for r in runs:
            for d in r.directions:
                if d.direction == direction:
                    curve = recall_curve(d.ranks, last)
                    ax.plot(ks, curve, label=r.model, linewidth=1.6, marker="." if last < 12 else None)
        ax.plot(ks, d0.chance_curve[:last], linestyle="--", color="grey", linewidth=1, label="chance")
        ax.set_title(f"{d0.label} — {dataset} ({d0.queries} queries, {d0.gallery} candidates)", fontsize=9)
        ax.set_xlabel("K" + (f" (up to the gallery size, {d0.gallery})" if last < max_k else ""))
        ax.set_xlim(1, max(last, 2))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Recall@K (fraction of queries)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8, frameon=False)
    return fig


TICK_LIMIT = 40  # classes named on the axes up to this many; beyond, the most confused pairs are listed


def most_confused(confusion: np.ndarray, n: int = 10) -> list[tuple[int, int, int]]:
    """The n largest off-diagonal cells as (true class, predicted class, count), largest first
    (ties: lower true, then predicted class index first)."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    true, predicted = np.nonzero(off)
    counts = off[true, predicted]
    order = np.lexsort((predicted, true, -counts))[:n]
    return [(int(true[i]), int(predicted[i]), int(counts[i])) for i in order]


def plot_confusion_matrix(confusion: np.ndarray, classnames: Sequence[str], path: Path, title: str) -> Path:
    """The confusion matrix (see confusion_figure) as a PNG."""
    confusion_figure(confusion, classnames, title).savefig(path, dpi=120)
    return path


def confusion_figure(confusion: np.ndarray, classnames: Sequence[str], title: str) -> Figure:
    """Row-normalized confusion matrix (true class rows, predicted columns) over the classes that
    occur (present or predicted). Up to 40 classes are named on the axes; above that the ten most
    confused pairs are numbered on the matrix and named beside it."""
    used = np.flatnonzero(confusion.sum(axis=1) + confusion.sum(axis=0))
    sub = confusion[np.ix_(used, used)]
    names = [classnames[i] for i in used]
    normalized = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1)
    n = len(used)
    size = min(14.0, 4.0 + 0.25 * n)
    named = n <= TICK_LIMIT
    fig = Figure(figsize=(size + (1.5 if named else 6.0), size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    if named:
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    else:
        lines = []
        for number, (t, p, count) in enumerate(most_confused(sub), start=1):
            ax.scatter([p], [t], s=160, facecolors="none", edgecolors="red", linewidths=1.2)
            ax.annotate(str(number), (p, t), xytext=(4, 4), textcoords="offset points", color="red", fontsize=8)
            lines.append(f"{number}. {names[t]} → {names[p]}: {count} of {int(sub[t].sum())}")
        heading = "Most confused (true → predicted)\n"
        ax.text(1.25, 1.0, heading + "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=8)
    ax.set_xlabel("predicted class" + ("" if named else f" ({n} classes, in class order)"))
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    return fig

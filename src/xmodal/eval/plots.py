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
from matplotlib.ticker import FuncFormatter

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
                        ax.plot(ks, recall_curve(d.ranks, max_k), label=r.model, linewidth=1.6)
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


def plot_pareto(
    labels: Sequence[str],
    speeds: Sequence[float],
    qualities: Sequence[float],
    front: Sequence[int],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    highlight: int | None = None,
) -> Path:
    """Quality against speed (log scale), one labelled point per entry; the front (indices by
    speed) drawn as the staircase bounding what the other points reach, its dominated side shaded,
    `highlight` ringed."""
    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.subplots()
    left, right = min(speeds) / 1.6, max(speeds) * 3.0  # room for the labels right of the fastest points
    pad = max(0.02, 0.15 * (max(qualities) - min(qualities)))
    bottom, top = min(qualities) - pad, max(qualities) + pad
    on_front = set(front)
    offsets = _label_offsets(
        [(np.log(s) - np.log(left)) / (np.log(right) - np.log(left)) for s in speeds],
        [(q - bottom) / (top - bottom) for q in qualities],
    )
    for i, (label, s, q) in enumerate(zip(labels, speeds, qualities, strict=True)):
        ax.scatter([s], [q], s=46, zorder=3, color="tab:blue" if i in on_front else "grey")
        ax.annotate(label, (s, q), textcoords="offset points", xytext=(6, offsets[i]), fontsize=8)
    if front:
        # At speed x in (x[i-1], x[i]] the best quality reachable is y[i]: a "pre" staircase, run out
        # to the left edge at the best point's height and down to the bottom at the fastest point.
        xs = [left, *(speeds[i] for i in front), speeds[front[-1]]]
        ys = [qualities[front[0]], *(qualities[i] for i in front), bottom]
        ax.plot(xs, ys, drawstyle="steps-pre", color="tab:blue", linewidth=1.4, label="Pareto front", zorder=2)
        ax.fill_between(xs, ys, bottom, step="pre", color="tab:blue", alpha=0.07, label="dominated by the front")
    if highlight is not None:
        ax.scatter(
            [speeds[highlight]],
            [qualities[highlight]],
            s=200,
            facecolors="none",
            edgecolors="tab:red",
            linewidths=1.6,
            zorder=4,
            label="recommended",
        )
    ax.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    if right / left < 30:  # under a decade and a half the powers of ten alone leave the axis bare
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    fig.legend(fontsize=8, loc="outside lower center", ncols=3, frameon=False)
    fig.savefig(path, dpi=120)
    return path


def _label_offsets(xs: Sequence[float], ys: Sequence[float], near: float = 0.08) -> list[int]:
    """Vertical label offsets (points) so that labels of points close together (within `near` of
    the axes in both directions) stack above and below each other instead of overprinting."""
    steps = [5, -13, 17, -25, 29, -37]
    placed: list[tuple[float, float, int]] = []
    out = []
    for x, y in zip(xs, ys, strict=True):
        taken = {k for px, py, k in placed if abs(px - x) < 2 * near and abs(py - y) < near}
        k = next((k for k in range(len(steps)) if k not in taken), 0)
        placed.append((x, y, k))
        out.append(steps[k])
    return out

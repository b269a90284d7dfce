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
                    ax.plot(ks, curve, label=r.run_label, linewidth=1.6, marker="." if last < 12 else None)
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

"""Benchmark reports: the seed-000 table as Markdown, CSV and JSON, per-query ranks, and the
zero-shot summary and per-class tables.

Recalls are fractions (0-1) or percent, and every table header says which. JSON always holds
fractions (`"recall_unit": "fraction"`) so tools reading it need no option.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import xmodal
from xmodal.errors import InvalidArgumentError
from xmodal.eval.retrieval import RetrievalResult
from xmodal.eval.zeroshot import ZeroShotResult

RECALL_UNITS = ("fraction", "percent")
RECALLS = ("R@1", "R@5", "R@10")


def _unit_label(unit: str) -> str:
    if unit not in RECALL_UNITS:
        raise InvalidArgumentError("recall unit", unit, RECALL_UNITS)
    return "%" if unit == "percent" else "0-1"


def _recall(value: float, unit: str) -> str:
    return f"{100 * value:.1f}" if unit == "percent" else f"{value:.3f}"


def _rank(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def table_rows(results: Sequence[RetrievalResult], unit: str = "fraction") -> tuple[list[str], list[list[str]]]:
    """Header and rows of the seed-000 table: direction, model, dataset, R@1/5/10, MedR, MnR, MR."""
    label = _unit_label(unit)
    header = ["Direction", "Model", "Dataset", *(f"{r} ({label})" for r in RECALLS), "MedR", "MnR", f"MR ({label})"]
    rows = []
    for result in results:
        for d in result.directions:
            m = d.metrics
            rows.append(
                [
                    d.label,
                    result.run_label,
                    result.dataset,
                    *(_recall(m[r], unit) for r in RECALLS),
                    _rank(m["MedR"]),
                    f"{m['MnR']:.1f}",
                    _recall(m["MR"], unit),
                ]
            )
    return header, rows


def markdown_table(results: Sequence[RetrievalResult], unit: str = "fraction") -> str:
    """The table as GitHub Markdown (numbers right-aligned)."""
    header, rows = table_rows(results, unit)
    return _markdown(header, rows, "lll" + "r" * (len(header) - 3))


def _markdown(header: list[str], rows: list[list[str]], align: str) -> str:
    """A Markdown table; `align` has one letter per column: l(eft) for names, r(ight) for numbers."""
    align = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, align, *rows])


def summary_lines(results: Sequence[RetrievalResult]) -> list[str]:
    """One line per (model, dataset): what was evaluated and what was skipped."""
    out = []
    for r in results:
        split = f" [{r.split}]" if r.split else ""
        skipped = []
        if r.missing:
            skipped.append(f"{len(r.missing)} missing files")
        if r.failed:
            skipped.append(f"{len(r.failed)} undecodable")
        if r.malformed:
            skipped.append(f"{len(r.malformed)} malformed records")
        if r.texts_dropped:
            skipped.append(f"{r.texts_dropped} captions without a present {r.kind}")
        note = f"; skipped: {', '.join(skipped)}" if skipped else ""
        out.append(
            f"{r.model} on {r.dataset}{split}: {r.items} {r.kind}s, {r.texts} captions{note}; "
            f"{r.cached.get('items', 0)} {r.kind} and {r.cached.get('texts', 0)} caption embeddings from cache; "
            f"{r.timings['wall_s']:.1f} s"
        )
    return out


def write_csv(results: Sequence[RetrievalResult], path: Path, unit: str = "fraction") -> Path:
    """The table plus counts, precision, model key, xmodal version and wall time, one row per direction."""
    header, rows = table_rows(results, unit)
    extra = [
        "split",
        "queries",
        "gallery",
        "items",
        "texts",
        "missing",
        "failed",
        "precision",
        "model_key",
        "xmodal_version",
        "wall_time_s",
    ]
    flat = [(r, d) for r in results for d in r.directions]
    with open(path, "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(header + extra)
        for row, (r, d) in zip(rows, flat, strict=True):
            writer.writerow(
                row
                + [
                    r.split or "",
                    d.queries,
                    d.gallery,
                    r.items,
                    r.texts,
                    len(r.missing),
                    len(r.failed),
                    r.precision,
                    r.model_key,
                    r.xmodal_version,
                    f"{r.timings['wall_s']:.3f}",
                ]
            )
    return path


def result_dict(r: RetrievalResult) -> dict:
    """Everything about one run except the per-query ranks, JSON-ready (recalls as fractions)."""
    return {
        "model": r.model,
        "model_key": r.model_key,
        "precision": r.precision,
        "dataset": r.dataset,
        "format": r.format,
        "split": r.split,
        "kind": r.kind,
        "pooling": r.pooling,
        "counts": {
            "items": r.items,
            "texts": r.texts,
            "missing": len(r.missing),
            "failed": len(r.failed),
            "malformed": len(r.malformed),
            "texts_dropped": r.texts_dropped,
            "cached_items": r.cached.get("items", 0),
            "cached_texts": r.cached.get("texts", 0),
        },
        "directions": {
            d.direction: {
                "label": d.label,
                "queries": d.queries,
                "gallery": d.gallery,
                "metrics": d.metrics,
                "chance": d.chance,
            }
            for d in r.directions
        },
        "wall_time_s": r.timings["wall_s"],
        "timings_s": r.timings,
        "xmodal_version": r.xmodal_version,
        "missing": r.missing,
        "failed": r.failed,
        "malformed": r.malformed,
    }


def write_json(results: Sequence[RetrievalResult], path: Path) -> Path:
    """All retrieval results (see result_dict) in one JSON document."""
    return _write_document([result_dict(r) for r in results], path)


def _write_document(results: list[dict], path: Path) -> Path:
    """The JSON envelope shared by the reports: version, time, recall unit, results."""
    doc = {
        "xmodal_version": xmodal.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "recall_unit": "fraction",
        "results": results,
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_ranks(results: Sequence[RetrievalResult], path: Path) -> Path:
    """Per-query ranks (1-based) as `model/dataset/direction` arrays in one .npz."""
    arrays = {f"{r.run_label}/{r.dataset}/{d.direction}": d.ranks for r in results for d in r.directions}
    np.savez_compressed(path, **arrays)
    return path


def zeroshot_markdown(results: Sequence[ZeroShotResult], unit: str = "fraction") -> str:
    """Model · dataset · top-1 · top-5 · mean per-class recall · images · classes · templates."""
    label = _unit_label(unit)
    header = [
        "Model",
        "Dataset",
        f"Top-1 ({label})",
        f"Top-5 ({label})",
        f"Mean per-class recall ({label})",
        "Images",
        "Classes",
        "Templates",
    ]
    rows = [
        [
            r.model,
            r.dataset,
            _recall(r.top1, unit),
            _recall(r.top5, unit),
            _recall(r.mean_per_class_recall, unit),
            str(r.images),
            str(len(r.classnames)),
            str(r.templates),
        ]
        for r in results
    ]
    return _markdown(header, rows, "llrrrrrr")


def per_class_markdown(result: ZeroShotResult, unit: str = "fraction", worst: int | None = None) -> str:
    """Per-class table (class, images, top-1, top-5, most confused with); `worst` keeps the lowest top-1."""
    label = _unit_label(unit)
    rows = [r for r in result.per_class if r["images"] > 0]
    if worst is not None:
        rows = sorted(rows, key=lambda r: (r["top1"], r["top5"], r["class"].lower()))[:worst]
    header = ["Class", "Images", f"Top-1 ({label})", f"Top-5 ({label})", "Most confused with"]
    body = [
        [
            r["class"],
            str(r["images"]),
            _recall(r["top1"], unit),
            _recall(r["top5"], unit),
            f"{r['most_confused_with']} ({r['confused_count']})" if r["confused_count"] else "",
        ]
        for r in rows
    ]
    return _markdown(header, body, "lrrrl")


def write_per_class_csv(result: ZeroShotResult, path: Path) -> Path:
    """Every class with its images, top-1 / top-5 recall (fractions) and most frequent confusion."""
    with open(path, "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(["class", "images", "top1", "top5", "most_confused_with", "confused_count"])
        for r in result.per_class:
            writer.writerow(
                [
                    r["class"],
                    r["images"],
                    f"{r['top1']:.6f}",
                    f"{r['top5']:.6f}",
                    r["most_confused_with"],
                    r["confused_count"],
                ]
            )
    return path


def write_zeroshot_json(results: Sequence[ZeroShotResult], path: Path) -> Path:
    """Zero-shot results with class names and confusion matrices (recalls as fractions)."""
    return _write_document(
        [
            {
                "model": r.model,
                "model_key": r.model_key,
                "precision": r.precision,
                "dataset": r.dataset,
                "images": r.images,
                "classes": len(r.classnames),
                "templates": r.templates,
                "top1": r.top1,
                "top5": r.top5,
                "mean_per_class_recall": r.mean_per_class_recall,
                "wall_time_s": r.wall_time_s,
                "xmodal_version": r.xmodal_version,
                "classnames": r.classnames,
                "confusion": r.confusion.tolist(),
                "missing": r.missing,
                "failed": r.failed,
                "malformed": r.malformed,
            }
            for r in results
        ],
        path,
    )

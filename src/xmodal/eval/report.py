"""Benchmark reports: the retrieval table (Markdown, CSV, JSON), per-query ranks joinable to their
queries, Chinese-CLIP top-k prediction files, the zero-shot summary and per-class tables, and the
one function per benchmark that writes them all into an output folder.

Recalls are fractions (0-1) or percent, and every table header says which. JSON always holds
fractions (`"recall_unit": "fraction"`) so tools reading it need no option; CSV keeps every number
at full precision.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import xmodal
from xmodal.errors import InvalidArgumentError, XmodalError
from xmodal.eval.plots import plot_confusion_matrix, plot_recall_curves, safe_name
from xmodal.eval.retrieval import DirectionResult, RetrievalResult
from xmodal.eval.zeroshot import ZeroShotResult

log = logging.getLogger(__name__)

RECALL_UNITS = ("fraction", "percent")
PREDICTIONS_K = 10  # Chinese-CLIP's evaluation scores exactly ten predictions per query
TRIVIAL = "*"  # marks an R@K that is 1 whatever the model (K >= gallery size)


class OutputFolderError(XmodalError):
    """The output folder already holds files and overwriting was not allowed."""

    def __init__(self, folder: Path, files: list[str]):
        self.shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        super().__init__(f"{folder} already holds files ({self.shown}); choose another folder or allow overwriting")
        self.folder = folder


def prepare_folder(folder: Path, overwrite: bool = False) -> Path:
    """Create the output folder; an existing one that holds files is refused unless `overwrite`."""
    if folder.is_dir() and not overwrite:
        files = sorted(p.name for p in folder.iterdir())
        if files:
            raise OutputFolderError(folder, files)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _unit_label(unit: str) -> str:
    if unit not in RECALL_UNITS:
        raise InvalidArgumentError("recall unit", unit, RECALL_UNITS)
    return "%" if unit == "percent" else "0-1"


def _recall(value: float, unit: str) -> str:
    return f"{100 * value:.1f}" if unit == "percent" else f"{value:.3f}"


def _rank(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def recall_keys(results: Sequence[RetrievalResult]) -> list[str]:
    """The R@K columns the results have, in K order (e.g. R@1, R@5, R@10, R@50)."""
    keys = {k for r in results for d in r.directions for k in d.metrics if k.startswith("R@")}
    return sorted(keys, key=lambda k: int(k[2:]))


def _has_mr(results: Sequence[RetrievalResult]) -> bool:
    return all("MR" in d.metrics for r in results for d in r.directions)


def table_rows(results: Sequence[RetrievalResult], unit: str = "fraction") -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table: direction, model, dataset, queries, gallery, R@K...,
    MedR, MnR, MR; an R@K that is 1 only because K >= the gallery size is marked `*`."""
    label = _unit_label(unit)
    recalls = recall_keys(results)
    mr = _has_mr(results)
    header = ["Direction", "Model", "Dataset", "Queries", "Gallery", *(f"{r} ({label})" for r in recalls)]
    header += ["MedR", "MnR"] + ([f"MR ({label})"] if mr else [])
    rows = []
    for result in results:
        for d in result.directions:
            m, trivial = d.metrics, {f"R@{k}" for k in d.trivial_ks()}
            cells = [d.label, result.run_label, result.dataset, str(d.queries), str(d.gallery)]
            cells += [_recall(m[r], unit) + (TRIVIAL if r in trivial else "") if r in m else "" for r in recalls]
            cells += [_rank(m["MedR"]), f"{m['MnR']:.1f}"] + ([_recall(m["MR"], unit)] if mr else [])
            rows.append(cells)
    return header, rows


def markdown_table(results: Sequence[RetrievalResult], unit: str = "fraction") -> str:
    """The table as GitHub Markdown (numbers right-aligned)."""
    header, rows = table_rows(results, unit)
    return markdown_grid(header, rows, "lll" + "r" * (len(header) - 3))


def markdown_grid(header: list[str], rows: list[list[str]], align: str) -> str:
    """A Markdown table; `align` has one letter per column: l(eft) for names, r(ight) for numbers."""
    align = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, align, *rows])


def trivial_notes(results: Sequence[RetrievalResult]) -> list[str]:
    """One line per direction whose gallery is no larger than some K: that R@K is 1 by construction."""
    out = []
    for r in results:
        for d in r.directions:
            ks = d.trivial_ks()
            if ks:
                keys = ", ".join(f"R@{k}" for k in ks)
                out.append(
                    f"{TRIVIAL} {r.dataset} {d.label}: the gallery has only {d.gallery} candidates, "
                    f"so {keys} {'is' if len(ks) == 1 else 'are'} trivially 1 (every query's answer is within K)"
                )
    return list(dict.fromkeys(out))


def summary_lines(results: Sequence[RetrievalResult]) -> list[str]:
    """One line per (model, dataset): what was evaluated and what was skipped."""
    out = []
    for r in results:
        skipped = [f"{n} {what}" for n, what in partial_counts(r) if n]
        note = f"; skipped: {', '.join(skipped)}" if skipped else ""
        out.append(
            f"{r.run_label} on {r.dataset} [{r.split or 'all'}]: {r.items} {r.kind}s, {r.texts} captions{note}; "
            f"{r.cached.get('items', 0)} {r.kind} and {r.cached.get('texts', 0)} caption embeddings from cache; "
            f"{r.timings['wall_s']:.1f} s"
        )
    return out


def partial_counts(r: RetrievalResult) -> list[tuple[int, str]]:
    """What a partial dataset lacked: missing files, undecodable items, malformed records, orphan captions."""
    return [
        (len(r.missing), "missing files"),
        (len(r.failed), "undecodable"),
        (len(r.malformed), "malformed records"),
        (r.texts_dropped, f"captions without a present {r.kind}"),
    ]


def results_markdown(results: Sequence[RetrievalResult], unit: str = "fraction") -> str:
    """The table, its notes and the summary lines: what the terminal shows and results.md holds."""
    lines = [markdown_table(results, unit), ""]
    lines += trivial_notes(results)
    lines += [f"- {line}" for line in summary_lines(results)]
    return "\n".join(lines).rstrip() + "\n"


def write_csv(results: Sequence[RetrievalResult], path: Path, unit: str = "fraction") -> Path:
    """One row per direction: the table's columns at full precision, plus counts, split, precision,
    model key, xmodal version and wall time."""
    recalls = recall_keys(results)
    scale = 100.0 if unit == "percent" else 1.0
    label = _unit_label(unit)
    header = ["Direction", "Model", "Dataset", "Queries", "Gallery", *(f"{r} ({label})" for r in recalls)]
    header += ["MedR", "MnR", f"MR ({label})", "split", "items", "texts", "missing", "failed"]
    header += ["precision", "model_key", "xmodal_version", "wall_time_s"]
    with open(path, "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(header)
        for r in results:
            for d in r.directions:
                m = d.metrics
                writer.writerow(
                    [d.label, r.run_label, r.dataset, d.queries, d.gallery]
                    + [repr(m[k] * scale) if k in m else "" for k in recalls]
                    + [repr(m["MedR"]), repr(m["MnR"]), repr(m["MR"] * scale) if "MR" in m else ""]
                    + [r.split or "all", r.items, r.texts, len(r.missing), len(r.failed)]
                    + [r.precision, r.model_key, r.xmodal_version, repr(r.timings["wall_s"])]
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
        "split": r.split or "all",
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
                "trivial": [f"R@{k}" for k in d.trivial_ks()],
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
    """Per-query ranks (1-based) as `MODEL/DATASET/DIRECTION` (MODEL with its pooling for videos:
    "name · segments"), and beside each the ids that join them
    back: `.../query_ids` (ranks[i] belongs to query_ids[i]), `.../gallery_ids` (gallery order) and,
    for caption queries, `.../query_texts`. Strings are stored as unicode arrays: no pickle needed."""
    arrays: dict[str, np.ndarray] = {}
    for r in results:
        for d in r.directions:
            key = f"{r.run_label}/{r.dataset}/{d.direction}"
            arrays[key] = d.ranks
            arrays[f"{key}/query_ids"] = np.array(d.query_ids, dtype=str)
            arrays[f"{key}/gallery_ids"] = np.array(d.gallery_ids, dtype=str)
            if d.query_texts is not None:
                arrays[f"{key}/query_texts"] = np.array(d.query_texts, dtype=str)
    np.savez_compressed(path, **arrays)
    return path


def _json_id(value: str) -> int | str:
    """An id as Chinese-CLIP's files hold it: an integer when it is one, else the string."""
    return int(value) if value.isdigit() and str(int(value)) == value else value


def prediction_lines(result: RetrievalResult, d: DirectionResult) -> list[dict]:
    """Chinese-CLIP's top-k prediction records of one direction: `{"text_id", "image_ids": [...]}`
    for caption queries, `{"image_id", "text_ids": [...]}` the other way (video: video_id(s))."""
    if d.top is None:
        raise InvalidArgumentError("predictions", "not computed", "evaluate with predictions=K")
    item = result.kind
    query_key, found_key = ("text_id", f"{item}_ids") if d.text_queries else (f"{item}_id", "text_ids")
    gallery = [_json_id(g) for g in d.gallery_ids]
    return [
        {query_key: _json_id(q), found_key: [gallery[j] for j in row]}
        for q, row in zip(d.query_ids, d.top.tolist(), strict=True)
    ]


def write_predictions(results: Sequence[RetrievalResult], folder: Path) -> list[Path]:
    """`predictions_MODEL_DATASET_DIRECTION.jsonl` per direction (see prediction_lines)."""
    paths = []
    for r in results:
        for d in r.directions:
            path = folder / f"predictions_{safe_name(r.run_label)}_{safe_name(r.dataset)}_{d.direction}.jsonl"
            with open(path, "w", encoding="utf-8") as fp:
                for record in prediction_lines(r, d):
                    fp.write(json.dumps(record, ensure_ascii=False) + "\n")
            paths.append(path)
    return paths


def write_results(results: Sequence[RetrievalResult], folder: Path, unit: str = "fraction") -> list[Path]:
    """Everything a retrieval benchmark leaves behind, into `folder` (made by prepare_folder):
    results.md, results.csv, results.json, ranks.npz, a recall@K plot per dataset, and the
    top-k prediction files of the results evaluated with predictions. Returns the paths written."""
    (folder / "results.md").write_text(results_markdown(results, unit), encoding="utf-8")
    paths = [folder / "results.md", write_csv(results, folder / "results.csv", unit)]
    paths += [write_json(results, folder / "results.json"), write_ranks(results, folder / "ranks.npz")]
    paths += plot_recall_curves(results, folder)
    with_top = [r for r in results if all(d.top is not None for d in r.directions)]
    paths += write_predictions(with_top, folder)
    return paths


# -- zero-shot ----------------------------------------------------------------------------------


def zeroshot_markdown(results: Sequence[ZeroShotResult], unit: str = "fraction") -> str:
    """Model · dataset · top-1 · top-5 · mean per-class recall · images · classes scored over ·
    classes present · templates."""
    label = _unit_label(unit)
    header = [
        "Model",
        "Dataset",
        f"Top-1 ({label})",
        f"Top-5 ({label})",
        f"Mean per-class recall ({label})",
        "Images",
        "Classes",
        "Present",
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
            str(r.classes_present),
            str(r.templates),
        ]
        for r in results
    ]
    return markdown_grid(header, rows, "llrrrrrrr")


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
    return markdown_grid(header, body, "lrrrl")


def zeroshot_notes(results: Sequence[ZeroShotResult]) -> list[str]:
    """What each run classified over and what it left out."""
    out = []
    for r in results:
        scope = (
            f"classified over all {len(r.classnames):,} {r.class_set} classes, {r.classes_present} of them present"
            if r.class_set
            else f"{len(r.classnames)} classes, {r.classes_present} present"
        )
        skipped = [
            f"{n} {what}"
            for n, what in (
                (len(r.missing), "missing files"),
                (len(r.failed), "undecodable"),
                (len(r.malformed), "malformed lines"),
                (sum(r.unknown.values()), f"images of {len(r.unknown)} classes outside the set"),
            )
            if n
        ]
        note = f"; skipped: {', '.join(skipped)}" if skipped else ""
        out.append(f"{r.model} on {r.dataset}: {r.images} images, {scope}, {r.templates} templates{note}")
    return out


def zeroshot_report_markdown(results: Sequence[ZeroShotResult], unit: str = "fraction") -> str:
    """The summary table, the notes, and per model a per-class table (the 10 worst classes when
    there are more than 25 present; every class is in its per_class CSV)."""
    sections = [zeroshot_markdown(results, unit), "", *(f"- {n}" for n in zeroshot_notes(results))]
    for r in results:
        worst = None if r.classes_present <= 25 else 10
        title = f"{r.model}: per-class" + (
            f" (the {worst} lowest top-1 of {r.classes_present} classes present; all in its per_class CSV)"
            if worst
            else ""
        )
        sections += ["", title, per_class_markdown(r, unit, worst)]
    return "\n".join(sections) + "\n"


def write_per_class_csv(result: ZeroShotResult, path: Path) -> Path:
    """Every class with its images, top-1 / top-5 recall (fractions, full precision) and most frequent confusion."""
    with open(path, "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(["class", "images", "top1", "top5", "most_confused_with", "confused_count"])
        for r in result.per_class:
            writer.writerow(
                [
                    r["class"],
                    r["images"],
                    repr(r["top1"]),
                    repr(r["top5"]),
                    r["most_confused_with"],
                    r["confused_count"],
                ]
            )
    return path


def write_zeroshot_json(results: Sequence[ZeroShotResult], path: Path) -> Path:
    """Zero-shot results with class names and confusion counts (recalls as fractions); the confusion
    matrix is stored sparse, `[true class, predicted class, count]` for every non-zero cell."""
    return _write_document(
        [
            {
                "model": r.model,
                "model_key": r.model_key,
                "precision": r.precision,
                "dataset": r.dataset,
                "images": r.images,
                "classes": len(r.classnames),
                "classes_present": r.classes_present,
                "class_set": r.class_set,
                "templates": r.templates,
                "top1": r.top1,
                "top5": r.top5,
                "mean_per_class_recall": r.mean_per_class_recall,
                "wall_time_s": r.wall_time_s,
                "xmodal_version": r.xmodal_version,
                "classnames": r.classnames,
                "confusion": [
                    [int(t), int(p), int(r.confusion[t, p])] for t, p in zip(*np.nonzero(r.confusion), strict=True)
                ],
                "missing": r.missing,
                "failed": r.failed,
                "malformed": r.malformed,
                "outside_class_set": r.unknown,
            }
            for r in results
        ],
        path,
    )


def write_zeroshot_results(results: Sequence[ZeroShotResult], folder: Path, unit: str = "fraction") -> list[Path]:
    """results.md, results.json, and per model its per_class CSV and confusion-matrix PNG."""
    (folder / "results.md").write_text(zeroshot_report_markdown(results, unit), encoding="utf-8")
    paths = [folder / "results.md", write_zeroshot_json(results, folder / "results.json")]
    for r in results:
        stem = safe_name(r.model)
        paths.append(write_per_class_csv(r, folder / f"per_class_{stem}.csv"))
        paths.append(
            plot_confusion_matrix(
                r.confusion,
                r.classnames,
                folder / f"confusion_{stem}.png",
                f"{r.model} on {r.dataset}: top-1 {r.top1:.3f}",
            )
        )
    return paths

"""The comparison report: the benchmark table extended with the cost columns (Markdown, CSV, JSON),
timings with best and median, library sizing, the Pareto plot, the recommendation, and the eval
outputs (per-query ranks, recall curves) for every model x precision.

Markdown rounds for reading; CSV and JSON keep the raw numbers (recalls as fractions, bytes, seconds).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import xmodal
from xmodal.eval import report
from xmodal.eval.compare import ComparedModel, Comparison
from xmodal.eval.plots import plot_pareto, plot_recall_curves

MIB = 1 << 20


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:,.1f}"


def _seconds(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _ops(c: Comparison) -> list[str]:
    """Timed operations in column order: images then texts, batch 1 then the run's batch."""
    batches = list(dict.fromkeys((1, c.speed_batch)))
    return [f"{kind}@{b}" for kind in ("image", "text") for b in batches]


def _op_label(op: str) -> str:
    kind, batch = op.split("@")
    return f"{'img' if kind == 'image' else 'txt'}/s b{batch}"


def _quality_rows(c: Comparison) -> tuple[list[str], list[tuple[ComparedModel, list[str]]]]:
    """The benchmark table's header and rows, each row with its entry: retrieval rows per direction
    (report.table_rows, a Precision column added), else one row per entry; zero-shot columns after."""
    if c.entries[0].retrieval is not None:
        header, rows = report.table_rows([e.retrieval for e in c.entries])
        owners = [e for e in c.entries for _ in e.retrieval.directions]
        header = header[:2] + ["Precision"] + header[2:]
        pairs = [(e, row[:2] + [e.precision] + row[2:]) for e, row in zip(owners, rows, strict=True)]
    else:
        header = ["Model", "Precision", "Dataset"]
        pairs = [(e, [e.name, e.precision, c.classification]) for e in c.entries]
    if c.classification is not None:
        header = header + ["Zero-shot top-1 (0-1)", "Zero-shot top-5 (0-1)"]
        pairs = [(e, row + [f"{e.zeroshot.top1:.3f}", f"{e.zeroshot.top5:.3f}"]) for e, row in pairs]
    return header, pairs


def _cost_cells(c: Comparison, e: ComparedModel) -> list[str]:
    cost, b = e.cost, c.speed_batch
    return [
        *(_rate(cost.speed[op].best()) for op in _ops(c)),
        f"{min(cost.speed[f'image@{b}'].cpu_ms_per_item):.2f}",
        f"{min(cost.speed[f'text@{b}'].cpu_ms_per_item):.2f}",
        _mib(cost.process.model_rss_bytes),
        _mib(cost.process.peak_rss_bytes),
        _mib(cost.file_bytes["visual"]),
        _mib(cost.file_bytes["textual"]),
        _seconds(cost.process.load_s.best(higher_is_better=False)),
        str(cost.dim),
        f"{cost.index_bytes_per_vector:g}",
        "yes" if e.on_front else "no",
    ]


def main_table(c: Comparison) -> str:
    """Quality and cost side by side: one row per model x precision (x direction)."""
    header, pairs = _quality_rows(c)
    b = c.speed_batch
    cost_header = [
        *(_op_label(op) for op in _ops(c)),
        f"CPU-ms/img b{b}",
        f"CPU-ms/txt b{b}",
        "Model MiB",
        "Peak RSS MiB",
        "Visual MiB",
        "Textual MiB",
        "Load s",
        "Dim",
        "B/vector",
        "Front",
    ]
    rows = [row + _cost_cells(c, e) for e, row in pairs]
    text_columns = 4 if c.entries[0].retrieval is not None else 3
    align = "l" * text_columns + "r" * (len(header) - text_columns + len(cost_header) - 1) + "l"
    return report.markdown_grid(header + cost_header, rows, align)


def timing_table(c: Comparison) -> str:
    """Every timed figure as best / median over the rounds."""
    header = ["Model", "Precision"]
    for op in _ops(c):
        header += [f"{_op_label(op)} (best / median)", f"CPU-ms per {op.split('@')[0]} b{op.split('@')[1]}"]
    header.append("Load s (best / median)")
    rows = []
    for e in c.entries:
        row = [e.name, e.precision]
        for op in _ops(c):
            m = e.cost.speed[op]
            row += [f"{_rate(m.best())} / {_rate(m.median())}", f"{min(m.cpu_ms_per_item):.2f}"]
        load = e.cost.process.load_s
        row.append(f"{_seconds(load.best(higher_is_better=False))} / {_seconds(load.median())}")
        rows.append(row)
    return report.markdown_grid(header, rows, "ll" + "r" * (len(header) - 2))


def sizing_table(c: Comparison) -> str:
    """Per model x precision and library size: index memory, catalog vectors, exact-search time."""
    header = [
        "Model",
        "Precision",
        "Dim",
        "Items",
        "Index MiB",
        "Catalog vectors MiB",
        "Exact search ms/query (best / median)",
        "auto index",
    ]
    rows = []
    by_label = {e.label: e for e in c.entries}
    for s in c.sizing():
        e = by_label[s.label]
        rows.append(
            [
                e.name,
                e.precision,
                str(s.dim),
                f"{s.items:,}",
                _mib(s.index_bytes),
                _mib(s.catalog_bytes),
                f"{1000 * s.search_s_best:.1f} / {1000 * s.search_s_median:.1f}",
                s.auto_spec,
            ]
        )
    return report.markdown_grid(header, rows, "llrrrrrl")


def header_lines(c: Comparison) -> list[str]:
    """Machine, data and method: what the numbers below depend on."""
    m, o = c.machine, c.options
    memory = f"{m.memory_bytes / (1 << 30):.1f} GiB RAM" if m.memory_bytes else "RAM unknown"
    load = ""
    if m.load_average:
        after = f", {', '.join(map(str, c.load_after))} after" if c.load_after else ""
        load = f"load average {', '.join(map(str, m.load_average))} before the run{after}"
    versions = ", ".join(f"{k} {v}" for k, v in {"xmodal": xmodal.__version__, **m.versions}.items())
    data = [
        f"{e.retrieval.dataset} [{e.retrieval.split or 'all'}]: {e.retrieval.items} {e.retrieval.kind}s, "
        f"{e.retrieval.texts} captions"
        for e in c.entries[:1]
        if e.retrieval is not None
    ] + [
        f"{c.classification}: {e.zeroshot.images} images, {len(e.zeroshot.classnames)} classes, "
        f"{e.zeroshot.templates} templates"
        for e in c.entries[:1]
        if e.zeroshot is not None
    ]
    scan = c.scan_rates[c.entries[0].cost.dim]
    busy = max(x[0] for x in (m.load_average, c.load_after) if x) if m.load_average else 0.0
    warning = (
        [
            f"- Busy machine: a load average of {busy:g} on {m.cpu.cores} cores means other programs shared the "
            f"CPU; speeds are low and two close ones may swap places in another run. Compare on an idle machine."
        ]
        if busy > m.cpu.cores
        else []
    )
    return warning + [
        f"- Machine: {m.summary()}; {memory}; {load}; {m.system}; Python {m.python}; {versions}.",
        f"- Data: {'; '.join(data)}.",
        f"- Speed: {o.rounds} rounds interleaved across the models (order rotating), at least {o.seconds:g} s per "
        f"operation and round, best and median kept. Image towers are timed on the data's own pictures through "
        f"each model's preprocessing (pixels in memory: decoding excluded, it is the same for every model), text "
        f"towers on its captions (tokenizing included). CPU-ms = process CPU time (all threads) per item.",
        f"- Memory and load time: each model x precision loaded {o.rounds} times, each time in a fresh process "
        f"that then embeds one batch of each kind; Model MiB = the resident high-water mark from loading to the "
        f"end of those batches minus what the process held with the runtime imported and the inputs allocated "
        f"(highest of the rounds; on Linux exact, elsewhere a lower bound); Peak RSS = the whole process.",
        f"- Files: the graph each tower runs (int8: the quantized copy). B/vector: the library's exact index "
        f"(float16 + id); the catalog stores float32 ({c.entries[0].cost.catalog_bytes_per_vector} B at dim "
        f"{c.entries[0].cost.dim}).",
        f"- Library sizing: one query's top-10 on xmodal's exact index timed over {scan.rows:,} random "
        f"{scan.dim}-d vectors ({o.scan_mib} MiB of float16 codes per dimension, beyond the CPU caches), "
        f"scaled linearly to each size.",
        f"- Quality for the front and the recommendation: {c.quality.label}; as good = within {o.tolerance:g}.",
    ]


def markdown_report(c: Comparison, plot_name: str = "pareto.png") -> str:
    """The whole report as one Markdown document."""
    lines = ["# Model comparison", "", *header_lines(c), "", "## Recommendation", ""]
    lines += [f"- {s}" for s in c.recommendation]
    lines += ["", f"![{c.quality.label} against images/s]({plot_name})", ""]
    lines += ["## Quality and cost", "", main_table(c), ""]
    lines += [f"## Timings (best / median of {c.options.rounds} rounds)", "", timing_table(c), ""]
    lines += ["## Library sizing", "", sizing_table(c), ""]
    if c.failed:
        lines += ["## Not compared", "", *(f"- {k}: {v}" for k, v in c.failed.items()), ""]
    problems = [r["error"] for e in c.entries for r in e.cost.process.rounds if "error" in r]
    if problems:
        lines += ["## Measurements that failed", "", *(f"- {p}" for p in problems), ""]
    lines.append(f"xmodal {xmodal.__version__}, {c.created}, {c.wall_s:.1f} s.")
    return "\n".join(lines) + "\n"


def entry_dict(c: Comparison, e: ComparedModel) -> dict:
    """One model x precision, JSON-ready: quality (eval's own result records) and raw costs."""
    cost = e.cost
    return {
        "model": e.model,
        "name": e.name,
        "precision": e.precision,
        "label": e.label,
        "quality": e.quality,
        "on_front": e.on_front,
        "retrieval": report.result_dict(e.retrieval) if e.retrieval is not None else None,
        "zeroshot": None
        if e.zeroshot is None
        else {
            "dataset": e.zeroshot.dataset,
            "top1": e.zeroshot.top1,
            "top5": e.zeroshot.top5,
            "mean_per_class_recall": e.zeroshot.mean_per_class_recall,
            "images": e.zeroshot.images,
            "classes": len(e.zeroshot.classnames),
            "templates": e.zeroshot.templates,
        },
        "cost": {
            "dim": cost.dim,
            "index_bytes_per_vector": cost.index_bytes_per_vector,
            "catalog_bytes_per_vector": cost.catalog_bytes_per_vector,
            "file_bytes": cost.file_bytes,
            "speed_items_per_s": {op: m.to_dict() for op, m in cost.speed.items()},
            "process": cost.process.to_dict(),
        },
    }


def comparison_dict(c: Comparison) -> dict:
    """The whole comparison, JSON-ready."""
    return {
        "xmodal_version": xmodal.__version__,
        "created": c.created,
        "wall_time_s": c.wall_s,
        "load_average_after": c.load_after,
        "recall_unit": "fraction",
        "machine": c.machine.to_dict(),
        "options": asdict(c.options),
        "quality": {"task": c.quality.task, "metric": c.quality.metric, "label": c.quality.label},
        "recommendation": c.recommendation,
        "front": [c.entries[i].label for i in c.front],
        "models": [entry_dict(c, e) for e in c.entries],
        "library_sizing": [asdict(s) for s in c.sizing()],
        "scan_rates": [rate.to_dict() for rate in c.scan_rates.values()],
        "failed": c.failed,
    }


def csv_rows(c: Comparison) -> tuple[list[str], list[list]]:
    """Raw numbers, one row per model x precision (x direction): the CSV's header and rows."""
    header = ["direction", "model", "name", "precision", "dataset", "R@1", "R@5", "R@10", "MedR", "MnR", "MR"]
    header += ["zeroshot_dataset", "zeroshot_top1", "zeroshot_top5", "quality_metric", "quality", "on_front"]
    for op in _ops(c):
        header += [f"{op}_items_per_s_best", f"{op}_items_per_s_median", f"{op}_cpu_ms_per_item"]
    header += ["model_rss_bytes", "peak_rss_bytes", "visual_bytes", "textual_bytes", "load_s_best", "load_s_median"]
    header += ["dim", "index_bytes_per_vector", "catalog_bytes_per_vector", "cpu"]
    rows = []
    for e in c.entries:
        directions = e.retrieval.directions if e.retrieval is not None else [None]
        for d in directions:
            metrics = [d.metrics[k] for k in ("R@1", "R@5", "R@10", "MedR", "MnR", "MR")] if d else [""] * 6
            row = [d.direction if d else "zeroshot", e.model, e.name, e.precision]
            row += [e.retrieval.dataset if d else "", *metrics]
            z = e.zeroshot
            row += [c.classification or "", z.top1 if z else "", z.top5 if z else ""]
            row += [c.quality.label, e.quality, e.on_front]
            for op in _ops(c):
                m = e.cost.speed[op]
                row += [m.best(), m.median(), min(m.cpu_ms_per_item)]
            p = e.cost.process
            row += [p.model_rss_bytes, p.peak_rss_bytes, e.cost.file_bytes["visual"], e.cost.file_bytes["textual"]]
            row += [p.load_s.best(higher_is_better=False), p.load_s.median()]
            row += [e.cost.dim, e.cost.index_bytes_per_vector, e.cost.catalog_bytes_per_vector, c.machine.summary()]
            rows.append(row)
    return header, rows


def write_comparison(c: Comparison, folder: Path) -> list[Path]:
    """comparison.md/.csv/.json, sizing.csv, pareto.png, and eval's ranks.npz and recall curves."""
    folder.mkdir(parents=True, exist_ok=True)
    plot = plot_pareto(
        [e.label for e in c.entries],
        [e.images_per_s(c.speed_batch) for e in c.entries],
        [e.quality for e in c.entries],
        c.front,
        folder / "pareto.png",
        xlabel=f"image embeddings/s at batch {c.speed_batch} (log scale)",
        ylabel=c.quality.label,
        title=f"What each point of {c.quality.label} costs — {c.machine.cpu.model}, {c.machine.cpu.cores} cores",
        highlight=c.recommended,
    )
    paths = [folder / "comparison.md", folder / "comparison.csv", folder / "comparison.json", folder / "sizing.csv"]
    paths[0].write_text(markdown_report(c, plot.name), encoding="utf-8")
    header, rows = csv_rows(c)
    _write_csv(paths[1], header, rows)
    paths[2].write_text(json.dumps(comparison_dict(c), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    sizing = [asdict(s) for s in c.sizing()]
    _write_csv(paths[3], list(sizing[0]), [list(s.values()) for s in sizing])
    paths.append(plot)
    retrieval = [replace(e.retrieval, model=e.label) for e in c.entries if e.retrieval is not None]
    if retrieval:  # named with their precision: fp32 and int8 of one model are two curves, two rank sets
        paths.append(report.write_ranks(retrieval, folder / "ranks.npz"))
        paths += plot_recall_curves(retrieval, folder)
    return paths


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(header)
        writer.writerows(rows)

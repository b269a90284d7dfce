"""`xmodal compare`: the Pareto front and the recommendation on made-up points, the machine
description, the fresh-process memory probe, and a real run on synthetic shapes with the shipped
model at fp32 and int8 beside an exported random-init small CLIP — every column filled, timings
repeated, quality identical to `evaluate_retrieval`, front and recommendation consistent with the table."""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import xmodal
from xmodal.cli import app
from xmodal.errors import InvalidArgumentError
from xmodal.eval.compare import (
    CompareOptions,
    compare_models,
    pareto_front,
    parse_quality,
    recommend,
    recommended_index,
)
from xmodal.eval.compare_report import csv_rows, header_lines, main_table, markdown_report, write_comparison
from xmodal.eval.cost import Workload, measure_processes, probe_model
from xmodal.eval.datasets import ReadOptions, read_dataset
from xmodal.eval.retrieval import evaluate_retrieval
from xmodal.machine import CpuInfo, describe_machine, parse_cpuinfo

SHIPPED = "xmodal-tiny-shapes"
runner = CliRunner()


# --- the front and the recommendation on made-up points ---------------------------------------


def brute_force_front(points):
    """Points no other point is >= in both and > in one: the definition, checked pair by pair."""
    keep = []
    for i, (s, q) in enumerate(points):
        beaten = False
        for j, (s2, q2) in enumerate(points):
            if j != i and s2 >= s and q2 >= q and (s2 > s or q2 > q):
                beaten = True
        if not beaten:
            keep.append(i)
    return keep


def test_pareto_front_of_made_up_points():
    #          A fp32       A int8       B fp32       B int8       C (dominated by B fp32)
    points = [(15.0, 0.82), (42.0, 0.815), (120.0, 0.70), (300.0, 0.69), (90.0, 0.60)]
    assert pareto_front(points) == [0, 1, 2, 3]  # ordered by speed
    # an equal speed with better quality dominates; exact duplicates both stay on the front
    assert pareto_front([(10.0, 0.5), (10.0, 0.6), (5.0, 0.9)]) == [2, 1]
    assert pareto_front([(10.0, 0.5), (10.0, 0.5)]) == [0, 1]
    assert pareto_front([(1.0, 0.1)]) == [0]
    assert pareto_front([(1.0, 0.1), (2.0, float("nan")), (0.5, 0.2)]) == [2, 0]
    rng = np.random.default_rng(3)
    for _ in range(50):
        pts = [tuple(p) for p in np.round(rng.random((9, 2)), 1)]  # rounded: many ties
        assert sorted(pareto_front(pts)) == brute_force_front(pts)


def test_recommendation_is_computed_from_the_points():
    labels = ["A (fp32)", "A (int8)", "B (fp32)", "B (int8)", "C (fp32)"]
    speeds = [15.0, 42.0, 120.0, 300.0, 90.0]
    quality = [0.82, 0.815, 0.70, 0.69, 0.60]
    assert recommended_index(speeds, quality, 0.01) == 1  # the fastest within 0.01 of 0.82
    assert recommended_index(speeds, quality, 0.0) == 0
    assert recommended_index(speeds, quality, 0.2) == 3
    lines = recommend(labels, speeds, quality, "R@10", 0.01)
    assert lines[0] == "Recommended: A (int8)."
    assert lines[1] == "Best R@10: A (fp32) at 0.820, 15.0 images/s."
    assert lines[2] == (
        "Within 0.01 of the best R@10 at 2.8x its speed: A (int8) at 0.815, 42.0 images/s; "
        "A (fp32)'s extra 0.005 costs 2.8x the time per image."
    )
    assert lines[3] == "Fastest: B (int8) at 0.690, 300 images/s, 0.130 below the best, 7.1x the speed of A (int8)."
    assert lines[4] == "Dominated (another is at least as fast and as good): C (fp32)."
    alone = recommend(["X"], [5.0], [0.5], "R@10", 0.01)
    assert alone == [
        "Recommended: X.",
        "Best R@10: X at 0.500, 5.00 images/s.",
        "No other model within 0.01 of the best R@10 is faster.",
    ]


def test_quality_metric_choice():
    assert parse_quality(None, "image", False).label == "Text→Image R@10"
    assert parse_quality(None, "video", True).task == "t2v"
    assert parse_quality(None, None, True).label == "zero-shot top-1"
    assert parse_quality("i2t:R@1", "image", False).label == "Image→Text R@1"
    assert parse_quality("MR", "image", True).metric == "MR"
    assert parse_quality("acc5", "image", True).label == "zero-shot top-5"
    for spec, kind, classifying in [("MedR", "image", False), ("acc1", "image", False), ("t2v:R@1", "image", False)]:
        with pytest.raises(InvalidArgumentError):
            parse_quality(spec, kind, classifying)
    with pytest.raises(InvalidArgumentError, match="rounds"):
        CompareOptions(rounds=0)
    with pytest.raises(InvalidArgumentError, match="library sizes"):
        CompareOptions(library_sizes=())


# --- the machine and the memory probe ----------------------------------------------------------

AVX2_ONLY = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B13
flags		: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2
core id		: 0
physical id	: 0

processor	: 1
model name	: AMD EPYC 7B13
flags		: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2
core id		: 1
physical id	: 0
"""


def test_cpuinfo_names_the_cpu_and_what_it_lacks():
    model, flags = parse_cpuinfo(AVX2_ONLY)
    assert (model, flags) == ("AMD EPYC 7B13", ("avx2", "fma", "f16c"))
    here = describe_machine()
    avx2_only = replace(here, cpu=CpuInfo(model, flags, 2), architecture="x86_64")
    assert avx2_only.cpu.kind == "AVX2"
    assert {"avx512f", "avx512_vnni", "amx_int8"} <= set(avx2_only.lacking)
    assert avx2_only.summary().startswith("AMD EPYC 7B13 (AVX2; avx2, fma, f16c; 2 cores); lacks avx512f, ")
    arm = parse_cpuinfo("processor : 0\nFeatures : fp asimd asimddp i8mm\n")
    assert arm == (None, ("asimd", "asimddp", "i8mm"))
    assert replace(here, cpu=CpuInfo("arm", arm[1], 4), architecture="aarch64").lacking == ("bf16", "sve")
    assert parse_cpuinfo("") == (None, ())
    assert replace(here, cpu=CpuInfo("unknown", (), 1)).lacking is None
    assert here.cpu.model and here.cpu.cores >= 1 and here.cpu.model in here.summary()
    assert json.dumps(here.to_dict())  # JSON-ready


def test_probe_measures_a_fresh_process_not_its_parent():
    """The parent holds 256 MiB while probing: the child's own high-water mark must not include it,
    and the model's share must at least hold the weights ONNX Runtime loads."""
    encoder = xmodal.load_model(SHIPPED)
    ballast = np.ones(32 << 20, dtype=np.float64)  # 256 MiB, touched
    result = probe_model(encoder, ["a red circle"] * 4, batch_size=4)
    weights = encoder.config.visual_path.stat().st_size + encoder.config.textual_path.stat().st_size
    assert result["model_rss_bytes"] >= weights
    assert result["peak_rss_bytes"] >= result["baseline_rss_bytes"] + result["model_rss_bytes"] - (1 << 20)
    assert result["peak_rss_bytes"] < ballast.nbytes  # a fresh interpreter with ORT is ~110 MiB
    assert 0 < result["load_s"] < 60
    del ballast


def test_a_failing_measurement_is_reported_and_the_rest_goes_on(tmp_path):
    """A model file damaged after the comparison loaded the model: each fresh process fails with the
    file and the reason, the rounds say so, and the cost reads as unknown instead of aborting the run."""
    folder = tmp_path / "shapes-copy"
    shutil.copytree(xmodal.load_model(SHIPPED).config.folder, folder)
    damaged = xmodal.load_model(folder)
    (folder / "visual" / "model.onnx").write_bytes(b"not an onnx graph")
    healthy = xmodal.load_model(SHIPPED)
    pixels = np.zeros((2, 3, 64, 64), dtype=np.float32)
    costs = measure_processes(
        [Workload(damaged, pixels, ["a red circle"] * 2), Workload(healthy, pixels, ["a red circle"] * 2)], rounds=2
    )
    assert [("error" in r) for r in costs[0].rounds] == [True, True]
    assert "model.onnx" in costs[0].rounds[0]["error"] and "not a loadable ONNX model" in costs[0].rounds[0]["error"]
    assert costs[0].model_rss_bytes is None and math.isnan(costs[0].load_s.best(False))
    assert len(costs[1].load_s.values) == 2 and costs[1].model_rss_bytes > 0


# --- a real comparison ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_all(synth_shapes):
    """Every split of the synthetic shapes (120 images): a random model's R@10 is near 10/120 there."""
    return read_dataset(f"karpathy:{synth_shapes}", ReadOptions(split=None))


@pytest.fixture(scope="module")
def comparison(shapes_all, clip_model_dir):
    options = CompareOptions(batch_size=8, rounds=2, seconds=0.05, library_sizes=(1000, 100_000), scan_mib=4)
    return compare_models([SHIPPED, str(clip_model_dir)], ["fp32", "int8"], dataset=shapes_all, options=options)


def test_comparison_fills_every_column_and_repeats_timings(comparison):
    assert [e.label for e in comparison.entries] == [
        "xmodal-tiny-shapes (fp32)",
        "xmodal-tiny-shapes (int8)",
        "tiny-clip (fp32)",
        "tiny-clip (int8)",
    ]
    assert not comparison.failed
    table = main_table(comparison).splitlines()
    assert len(table) == 2 + 4 * 2  # header, rule, two directions per model x precision
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(cells) and "n/a" not in cells and "nan" not in cells
    header, rows = csv_rows(comparison)
    assert len(rows) == 8
    for row in rows:
        filled = dict(zip(header, row, strict=True))
        empty = {k for k, v in filled.items() if v in ("", None) or (isinstance(v, float) and math.isnan(v))}
        assert empty == {"zeroshot_dataset", "zeroshot_top1", "zeroshot_top5"}  # no classification in this run
    for e in comparison.entries:
        assert set(e.cost.speed) == {"image@1", "image@8", "text@1", "text@8"}
        for measured in e.cost.speed.values():
            assert len(measured.values) == 2 and len(measured.cpu_ms_per_item) == 2
            assert measured.best() >= measured.median() > 0
        assert len(e.cost.process.rounds) == 2 and e.cost.process.load_s.best(False) > 0
        assert e.cost.process.model_rss_bytes > 0
        assert e.cost.process.peak_rss_bytes > e.cost.process.model_rss_bytes
    by = {e.label: e for e in comparison.entries}
    for name in ("xmodal-tiny-shapes", "tiny-clip"):
        fp32, int8 = by[f"{name} (fp32)"].cost, by[f"{name} (int8)"].cost
        for tower in ("visual", "textual"):  # the int8 row reports the quantized graph it runs
            assert int8.file_bytes[tower] < fp32.file_bytes[tower]
    assert by["xmodal-tiny-shapes (fp32)"].cost.file_bytes["visual"] == (
        xmodal.load_model(SHIPPED).config.visual_path.stat().st_size
    )
    assert by["tiny-clip (fp32)"].cost.dim == 32 and by["xmodal-tiny-shapes (int8)"].cost.dim == 128
    assert by["tiny-clip (int8)"].cost.index_bytes_per_vector == 2 * 32 + 8  # float16 codes + int64 id
    assert by["tiny-clip (int8)"].cost.catalog_bytes_per_vector == 4 * 32


def test_quality_is_the_eval_pipelines(comparison, shapes_all, clip_model_dir):
    for e in comparison.entries:
        encoder = xmodal.load_model(e.model, precision=e.precision)
        direct = evaluate_retrieval(encoder, shapes_all, batch_size=comparison.options.batch_size)
        assert [d.metrics for d in e.retrieval.directions] == [d.metrics for d in direct.directions]
        assert e.quality == direct.directions[0].metrics["R@10"]
    by = {e.label: e for e in comparison.entries}
    assert by["xmodal-tiny-shapes (fp32)"].quality > 0.9  # the trained model finds its shapes
    assert by["tiny-clip (fp32)"].quality < 0.5  # random weights: near chance (10/120)


def test_front_and_recommendation_follow_the_table(comparison):
    entries = comparison.entries
    points = [(e.images_per_s(8), e.quality) for e in entries]
    assert sorted(comparison.front) == brute_force_front(points)
    assert [e.on_front for e in entries] == [i in comparison.front for i in range(len(entries))]
    best = max(q for _, q in points)
    pick = entries[comparison.recommended]
    assert pick.quality >= best - comparison.options.tolerance
    assert all(
        e.images_per_s(8) <= pick.images_per_s(8) for e in entries if e.quality >= best - comparison.options.tolerance
    )
    assert comparison.recommendation[0] == f"Recommended: {pick.label}."
    assert pick.name == "xmodal-tiny-shapes"  # the random model is not within 0.01 of it
    fastest = max(entries, key=lambda e: e.images_per_s(8))
    if fastest is not pick:
        assert any(line.startswith(f"Fastest: {fastest.label}") for line in comparison.recommendation)


def test_library_sizing_scales_the_measured_scan(comparison):
    rows = comparison.sizing()
    assert len(rows) == 4 * 2
    for small, large in zip(rows[::2], rows[1::2], strict=True):
        assert (small.items, large.items) == (1000, 100_000)
        assert large.index_bytes == 100 * small.index_bytes == 100_000 * (2 * small.dim + 8)
        assert large.catalog_bytes == 100_000 * 4 * small.dim
        assert large.search_s_best == pytest.approx(100 * small.search_s_best)
        assert 0 < small.search_s_best <= small.search_s_median
        assert large.auto_spec == "exact"
    rate = comparison.scan_rates[128]
    assert rate.rows == (4 << 20) // (2 * 128) and len(rate.seconds.values) == 2


def test_report_files(comparison, tmp_path):
    paths = write_comparison(comparison, tmp_path)
    names = {p.name for p in paths}
    assert {"comparison.md", "comparison.csv", "comparison.json", "sizing.csv", "pareto.png", "ranks.npz"} <= names
    md = (tmp_path / "comparison.md").read_text()
    assert md == markdown_report(comparison)
    assert comparison.machine.cpu.model in md and "## Library sizing" in md and "Recommended:" in md
    doc = json.loads((tmp_path / "comparison.json").read_text())
    assert doc["machine"]["cpu"]["flags"] == list(comparison.machine.cpu.flags)
    assert doc["front"] == [comparison.entries[i].label for i in comparison.front]
    assert doc["models"][1]["cost"]["speed_items_per_s"]["image@8"]["rounds"] == (
        comparison.entries[1].cost.speed["image@8"].values
    )
    assert (
        doc["models"][0]["retrieval"]["directions"]["t2i"]["metrics"]
        == comparison.entries[0].retrieval.directions[0].metrics
    )
    with open(tmp_path / "comparison.csv", newline="") as fp:
        rows = list(csv.DictReader(fp))
    assert float(rows[2]["image@8_items_per_s_best"]) == comparison.entries[1].images_per_s(8)
    with open(tmp_path / "sizing.csv", newline="") as fp:
        assert len(list(csv.DictReader(fp))) == 8
    ranks = np.load(tmp_path / "ranks.npz")
    assert "xmodal-tiny-shapes (int8)/synth_shapes/t2i" in ranks.files
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    cores = comparison.machine.cpu.cores
    busy = replace(
        comparison, machine=replace(comparison.machine, load_average=(cores + 1.0, 1.0, 1.0)), load_after=None
    )
    idle = replace(comparison, machine=replace(comparison.machine, load_average=(0.1, 0.1, 0.1)), load_after=(0.2,) * 3)
    assert header_lines(busy)[0].startswith(f"- Busy machine: a load average of {cores + 1.0:g} on {cores} cores")
    assert not any("Busy" in line for line in header_lines(idle))
    assert "load average 0.1, 0.1, 0.1 before the run, 0.2, 0.2, 0.2 after" in header_lines(idle)[0]


def test_compare_cli_with_a_classifier_and_a_model_that_fails(synth_shapes, tmp_path):
    """Zero-shot columns when classifying; a model that cannot load is named, the rest is reported, exit 1."""
    classes = tmp_path / "classes"
    from PIL import Image

    for name, colour in [("red", (220, 30, 30)), ("blue", (30, 30, 220))]:
        (classes / name).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (64, 64), colour).save(classes / name / f"{k}.png")
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "compare",
            "--quiet",
            "-m",
            SHIPPED,
            "-m",
            str(tmp_path / "no-such-model"),
            "-p",
            "fp32",
            "-p",
            "int8",
            "-d",
            f"karpathy:{synth_shapes}",
            "--classify",
            str(classes),
            "--templates",
            "simple",
            "--rounds",
            "1",
            "--seconds",
            "0.02",
            "--scan-mib",
            "2",
            "-n",
            "5000",
            "--batch-size",
            "4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "no-such-model (fp32)" in result.output and "Recommended: xmodal-tiny-shapes" in result.output
    md = (out / "comparison.md").read_text()
    assert "Zero-shot top-1 (0-1)" in md and "## Not compared" in md and "5,000" in md
    doc = json.loads((out / "comparison.json").read_text())
    assert [m["label"] for m in doc["models"]] == ["xmodal-tiny-shapes (fp32)", "xmodal-tiny-shapes (int8)"]
    assert doc["models"][0]["zeroshot"]["images"] == 6 and 0 <= doc["models"][0]["zeroshot"]["top1"] <= 1
    assert set(doc["failed"]) == {f"{tmp_path / 'no-such-model'} (fp32)", f"{tmp_path / 'no-such-model'} (int8)"}
    assert Path(out / "pareto.png").is_file()

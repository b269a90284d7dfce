"""`xmodal models list | pull | export | rknn | rknn-toolkit`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from xmodal.cli.console import flag, progress_bar, say, warn
from xmodal.models import registry

app = typer.Typer(help="List, download and export models; convert them for Rockchip NPUs.", no_args_is_help=True)


COLUMNS = ("name", "dim", "image", "family", "multilingual", "available")


@app.command("list")
def list_models(
    as_json: bool = flag("Print a JSON list (one object per model) instead of the table.", "--json"),
) -> None:
    """Known model names with embedding size, input size, family and whether they are available offline."""
    rows = []
    for model in registry.known_models():
        where = "shipped" if model.shipped else ("cached" if registry.cached_folder(model.name) else "-")
        rows.append((model, where))
    if as_json:
        records = [
            {
                "name": m.name,
                "repo_id": m.repo_id,
                "dim": m.dim,
                "image_size": m.image_size,
                "family": m.family,
                "multilingual": m.multilingual,
                "available": where,
            }
            for m, where in rows
        ]
        say(json.dumps(records, indent=2))
        return
    table = [COLUMNS] + [
        (m.name, str(m.dim), str(m.image_size), m.family, "yes" if m.multilingual else "", where) for m, where in rows
    ]
    # plain aligned columns: names are never cut or wrapped, whatever the terminal width
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@app.command()
def pull(name: str = typer.Argument(..., help="Immich model name (e.g. ViT-B-32__openai) or hub org/repo.")) -> None:
    """Download a model into the Hugging Face cache (needs network)."""
    folder = registry.pull_model(name, offline=False)
    say(f"{name}: {folder}")


@app.command()
def export(
    src: Path = typer.Argument(..., help="transformers checkpoint folder (CLIPModel, SiglipModel, ChineseCLIPModel)."),
    out: Path = typer.Argument(..., help="Model folder to create (Immich layout)."),
    int8: bool = flag("Quantize weights to int8 (ONNX Runtime dynamic quantization).", "--int8"),
    fp16: bool = flag("Store weights as float16 (smaller; for GPU runtimes).", "--fp16"),
    context_length: int = typer.Option(None, help="Text context length (default: the model's)."),
    overwrite: bool = flag("Replace OUT if it exists.", "--overwrite"),
) -> None:
    """Export a transformers checkpoint to an xmodal/Immich model folder with dynamic batch."""
    from xmodal.models.export import export_hf_checkpoint

    folder = export_hf_checkpoint(src, out, int8=int8, fp16=fp16, context_length=context_length, overwrite=overwrite)
    say(f"exported {src} -> {folder}")


@app.command()
def rknn(
    model: str = typer.Argument(..., help="Model name or folder (ours, exported, fine-tuned, or an Immich folder)."),
    soc: list[str] = typer.Option(
        ["rk3588"],
        "--soc",
        metavar="SOC",
        help="Rockchip SoC to build for: rk3566, rk3568, rk3576, rk3588; repeatable.",
    ),
    int8: bool = flag("Quantize the visual tower to int8 (needs --calibration).", "--int8"),
    int8_text: bool = flag("Quantize the textual tower to int8 too.", "--int8-text"),
    int8_algorithm: str = typer.Option(
        "normal", "--int8-algorithm", metavar="NAME", help="int8 calibration: normal (min/max), mmse, kl_divergence."
    ),
    int8_hybrid: bool = flag("int8: let the toolkit keep the layers int8 hurts most in fp16.", "--int8-hybrid"),
    calibration: str = typer.Option(
        None,
        "--calibration",
        metavar="DIR|DATASET",
        help="int8 calibration: a folder of your photos, or a dataset (FORMAT:PATH as for `xmodal eval`, whose captions also calibrate text).",
    ),
    calibration_count: int = typer.Option(
        64,
        min=2,
        metavar="N",
        help="Calibration images to use (spread over the source; up to 16 are held out to check the graph).",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        metavar="DIR",
        help="Write a copy of the model folder with its RKNN graphs here (default: the model folder itself).",
    ),
    toolkit_python: Path = typer.Option(
        None,
        "--toolkit-python",
        metavar="PATH",
        help="A Python that has rknn-toolkit2 (default: one xmodal makes once in its cache).",
    ),
    allow_cpu: list[str] = typer.Option(
        None,
        "--allow-cpu",
        metavar="OP",
        help="Accept this operator type (e.g. Gather) on the board's CPU; repeatable.",
    ),
    no_fold_preprocess: bool = flag(
        "Keep the normalized float input of the ONNX graph (default: mean/std in the visual graph, which takes uint8 RGB pixels).",
        "--no-fold-preprocess",
    ),
    no_npu_rewrite: bool = flag(
        "Build the textual graph as it is (default: its token handling rewritten into NPU operators where possible).",
        "--no-npu-rewrite",
    ),
    tower: list[str] = typer.Option(
        None, "--tower", metavar="NAME", help="Only this tower: visual or textual; repeatable."
    ),
    as_json: bool = flag("Print the reports as JSON.", "--json"),
    quiet: bool = flag("No progress bar.", "--quiet", "-q"),
) -> None:
    """Convert a model for Rockchip NPUs (Immich's layout: TOWER/rknpu/SOC/model.rknn), each graph
    checked in Rockchip's simulator against ONNX Runtime before it is written (cosine >= 0.999 fp16,
    >= 0.99 int8; no operator left to the CPU). A report.json lies beside each graph; a tower that
    fails stays on ONNX. Exit code 0: every graph written, 2: some left on ONNX, 1: none."""
    from xmodal.models.rknn import RknnOptions, convert_to_rknn

    options = RknnOptions(
        socs=tuple(dict.fromkeys(soc)),
        int8=int8,
        int8_text=int8_text,
        fold_preprocess=not no_fold_preprocess,
        npu_rewrite=not no_npu_rewrite,
        allow_cpu=frozenset(allow_cpu or ()),
        towers=tuple(dict.fromkeys(tower)) if tower else ("visual", "textual"),
        int8_algorithm=int8_algorithm,
        int8_hybrid=int8_hybrid,
    )
    if (int8 or int8_text) and not calibration:
        raise typer.BadParameter("int8 needs calibration photos (a folder) or a dataset", param_hint="--calibration")
    samples = _calibration_set(calibration, calibration_count) if calibration else None
    with progress_bar(quiet) as progress:
        result = convert_to_rknn(
            model, options, out=out, calibration=samples, toolkit_python=toolkit_python, progress=progress
        )
    if as_json:
        say(json.dumps([r.to_dict() for r in result.reports], indent=2))
    else:
        _print_reports(result)
    if len(result.written) < len(result.reports):
        raise typer.Exit(2 if result.written else 1)


@app.command("rknn-toolkit")
def rknn_toolkit(quiet: bool = flag("No progress bar.", "--quiet", "-q")) -> None:
    """Print the Python of xmodal's RKNN toolkit environment, making it first if needed (once)."""
    from xmodal.models.rknn_toolkit import toolkit_python

    with progress_bar(quiet) as progress:
        python = toolkit_python(progress=progress)
    say(str(python))


def _calibration_set(spec: str, count: int):
    """Calibration images (and captions) from a folder of photos or a dataset, `count` of them
    spread evenly over it in a fixed order."""
    from xmodal.eval.datasets import ReadOptions, read_dataset
    from xmodal.media.walk import MediaFile, walk_media
    from xmodal.models.rknn import CalibrationSet

    folder = Path(spec).expanduser()
    if folder.is_dir():
        photos = sorted(e.path for e in walk_media([folder]) if isinstance(e, MediaFile) and e.type == "image")
        if photos:
            return CalibrationSet(images=_spread(photos, count), source=str(folder))
    data = read_dataset(spec, ReadOptions(split=None))
    if data.kind != "image":
        raise typer.BadParameter(f"{spec}: a {data.kind} dataset; calibration needs images", param_hint="--calibration")
    picked = _spread(range(len(data.items)), count)
    first_caption = {}  # item -> index of its first caption
    for t in reversed(range(len(data.texts))):
        for i in data.text_positives[t]:
            first_caption[i] = t
    texts = [data.texts[first_caption[i]] for i in picked if i in first_caption]
    return CalibrationSet(images=[data.items[i] for i in picked], texts=texts, source=spec)


def _spread(items, count: int) -> list:
    items = list(items)
    if len(items) <= count:
        return items
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


REPORT_COLUMNS = ("tower", "SoC", "precision", "status", "cosine (min)", "NPU ops", "CPU ops")


def _print_reports(result) -> None:
    rows = [REPORT_COLUMNS]
    for r in result.reports:
        cosine = f"{r.cosine_min:.6f}" if r.cosine_min is not None else "-"
        npu = sum(op.target == "NPU" for op in r.operators)
        rows.append((r.tower, r.soc, r.precision, r.status, cosine, str(npu), str(len(r.cpu_operators))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(REPORT_COLUMNS))]
    say(str(result.folder))
    for row in rows:
        say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in result.reports:
        if r.rewrite and r.rewrite.get("applied"):
            replaced = ", ".join(f"{n} {op}" for op, n in r.rewrite["removed"].items())
            say(
                f"{r.tower} {r.soc}: token handling rewritten for the NPU ({r.rewrite['lookup']} over "
                f"{r.rewrite['vocab']} tokens, replacing {replaced})"
            )
        for reason in r.reasons:
            warn(f"{r.tower} {r.soc}: {reason}")
    say("reports: TOWER/rknpu/SOC/report.json; towers left on ONNX run on ONNX Runtime (as Immich does)")

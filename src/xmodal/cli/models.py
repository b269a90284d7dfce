"""`xmodal models list | pull | export | rknn | rknn-toolkit`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from xmodal.cli.console import console, progress_bar
from xmodal.models import registry

app = typer.Typer(help="List, download and export models; convert them for Rockchip NPUs.", no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """Known model names with embedding size, input size and whether they are available offline."""
    table = Table("name", "dim", "image", "family", "multilingual", "available")
    for model in registry.known_models():
        if model.shipped:
            where = "shipped"
        else:
            where = "cached" if registry.cached_folder(model.name) else "-"
        table.add_row(
            model.name, str(model.dim), str(model.image_size), model.family, "yes" if model.multilingual else "", where
        )
    console.print(table)


@app.command()
def pull(name: str = typer.Argument(..., help="Immich model name (e.g. ViT-B-32__openai) or hub org/repo.")) -> None:
    """Download a model into the Hugging Face cache (needs network)."""
    folder = registry.pull_model(name, offline=False)
    console.print(f"{name}: {folder}")


@app.command()
def export(
    src: Path = typer.Argument(..., help="transformers checkpoint folder (CLIPModel, SiglipModel, ChineseCLIPModel)."),
    out: Path = typer.Argument(..., help="Model folder to create (Immich layout)."),
    int8: bool = typer.Option(False, "--int8", help="Quantize weights to int8 (ONNX Runtime dynamic quantization)."),
    fp16: bool = typer.Option(False, "--fp16", help="Store weights as float16 (smaller; for GPU runtimes)."),
    context_length: int = typer.Option(None, help="Text context length (default: the model's)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Export a transformers checkpoint to an xmodal/Immich model folder with dynamic batch."""
    from xmodal.models.export import export_hf_checkpoint

    folder = export_hf_checkpoint(src, out, int8=int8, fp16=fp16, context_length=context_length, overwrite=overwrite)
    console.print(f"exported {src} -> {folder}")


@app.command()
def rknn(
    model: str = typer.Argument(..., help="Model name or folder (ours, exported, fine-tuned, or an Immich folder)."),
    soc: list[str] = typer.Option(
        ["rk3588"], "--soc", help="Rockchip SoC to build for: rk3566, rk3568, rk3576, rk3588; repeatable."
    ),
    int8: bool = typer.Option(False, "--int8", help="Quantize the visual tower to int8 (needs --calibration)."),
    int8_text: bool = typer.Option(False, "--int8-text", help="Quantize the textual tower to int8 too."),
    calibration: str = typer.Option(
        None,
        "--calibration",
        help="int8 calibration: a folder of your photos, or a dataset (FORMAT:PATH as for `xmodal eval`, whose captions also calibrate text).",
    ),
    int8_algorithm: str = typer.Option(
        "normal", "--int8-algorithm", help="int8 calibration of the toolkit: normal (min/max), mmse, kl_divergence."
    ),
    int8_hybrid: bool = typer.Option(
        False, "--int8-hybrid", help="int8: let the toolkit keep the layers int8 hurts most in fp16."
    ),
    calibration_count: int = typer.Option(
        64, min=2, help="Calibration images to use (spread over the source; up to 16 are held out to check the graph)."
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Write a copy of the model folder with its RKNN graphs here (default: the model folder itself).",
    ),
    toolkit_python: Path = typer.Option(
        None, "--toolkit-python", help="A Python that has rknn-toolkit2 (default: one xmodal makes once in its cache)."
    ),
    allow_cpu: list[str] = typer.Option(
        None, "--allow-cpu", help="Accept this operator type (e.g. Gather) on the board's CPU; repeatable."
    ),
    fold_preprocess: bool = typer.Option(
        True,
        "--fold-preprocess/--no-fold-preprocess",
        help="Put mean/std into the visual graph, which then takes uint8 RGB pixels (off: the normalized input of the ONNX graph).",
    ),
    npu_rewrite: bool = typer.Option(
        True,
        "--npu-rewrite/--no-npu-rewrite",
        help="Rewrite the textual graph's token handling into operators the NPU has, where possible.",
    ),
    tower: list[str] = typer.Option(None, "--tower", help="Only this tower: visual or textual; repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
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
        fold_preprocess=fold_preprocess,
        npu_rewrite=npu_rewrite,
        allow_cpu=frozenset(allow_cpu or ()),
        towers=tuple(dict.fromkeys(tower)) if tower else ("visual", "textual"),
        int8_algorithm=int8_algorithm,
        int8_hybrid=int8_hybrid,
    )
    if (int8 or int8_text) and not calibration:
        raise typer.BadParameter("--int8 needs --calibration (a folder of photos or a dataset)")
    samples = _calibration_set(calibration, calibration_count) if calibration else None
    with progress_bar(quiet) as progress:
        result = convert_to_rknn(
            model, options, out=out, calibration=samples, toolkit_python=toolkit_python, progress=progress
        )
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in result.reports]))
    else:
        _print_reports(result)
    if len(result.written) < len(result.reports):
        raise typer.Exit(2 if result.written else 1)


@app.command("rknn-toolkit")
def rknn_toolkit(quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")) -> None:
    """Print the Python of xmodal's RKNN toolkit environment, making it first if needed (once)."""
    from xmodal.models.rknn_toolkit import toolkit_python

    with progress_bar(quiet) as progress:
        python = toolkit_python(progress=progress)
    console.print(str(python), markup=False, highlight=False, soft_wrap=True)


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
        raise typer.BadParameter(f"{spec}: a {data.kind} dataset; calibration needs images")
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


def _print_reports(result) -> None:
    table = Table("tower", "SoC", "precision", "status", "cosine (min)", "NPU ops", "CPU ops", title=str(result.folder))
    for r in result.reports:
        cosine = f"{r.cosine_min:.6f}" if r.cosine_min is not None else "-"
        npu = sum(op.target == "NPU" for op in r.operators)
        status = "[green]written[/]" if r.written else "[yellow]left on ONNX[/]"
        table.add_row(r.tower, r.soc, r.precision, status, cosine, str(npu), str(len(r.cpu_operators)))
    console.print(table)
    for r in result.reports:
        if r.rewrite and r.rewrite.get("applied"):
            what = ", ".join(f"{n} {op}" for op, n in r.rewrite["removed"].items())
            console.print(
                f"{r.tower} {r.soc}: token handling rewritten for the NPU ({r.rewrite['lookup']} over "
                f"{r.rewrite['vocab']} tokens, replacing {what})",
                markup=False,
                highlight=False,
            )
        for reason in r.reasons:
            console.print(f"[yellow]{r.tower} {r.soc}:[/] {escape(reason)}", highlight=False)
    console.print(
        "reports: TOWER/rknpu/SOC/report.json; towers left on ONNX keep running on ONNX Runtime (as Immich does)",
        markup=False,
        highlight=False,
    )

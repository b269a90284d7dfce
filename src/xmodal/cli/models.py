"""`xmodal models list | pull | export`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from xmodal.cli.console import console
from xmodal.models import registry

app = typer.Typer(help="List, download and export models.", no_args_is_help=True)


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

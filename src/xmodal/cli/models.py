"""`xmodal models list | pull | export`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from xmodal.cli.console import flag, say
from xmodal.models import registry

app = typer.Typer(help="List, download and export models.", no_args_is_help=True)


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

"""`xmodal train`: train a dual encoder from scratch or fine-tune a checkpoint, then export it."""

from __future__ import annotations

from pathlib import Path

import typer

from xmodal.cli.console import console, flag, progress_bar


def _epoch_line(record: dict) -> str:
    line = f"epoch {record['epoch']}: loss {record['loss']:.4f}, {record['train_seconds']:.0f} s"
    for direction, metrics in record.get("val", {}).items():
        line += f" | {direction} R@1 {metrics['R@1']:.3f} R@5 {metrics['R@5']:.3f} R@10 {metrics['R@10']:.3f}"
    return line


def train(
    dataset: str = typer.Argument(
        ..., help="Captioned images as FORMAT:PATH (e.g. karpathy:shapes/dataset_synth_shapes.json)."
    ),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints/, log.json, training.png, model/."),
    model: str = typer.Option(
        "tiny", "--model", help='"tiny" (from scratch) or a transformers CLIP/SigLIP/ChineseCLIP folder.'
    ),
    loss: str = typer.Option("infonce", "--loss", help="infonce (CLIP) or siglip (sigmoid)."),
    epochs: int = typer.Option(10, "--epochs"),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (default 2e-3 from scratch, 1e-5 fine-tuning)."),
    weight_decay: float = typer.Option(0.1, "--weight-decay"),
    warmup: float = typer.Option(0.05, "--warmup", help="Share of the steps spent warming up."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Clip the gradient norm to this."),
    accum: int = typer.Option(1, "--accum", help="Micro-batches per optimizer step."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or bf16 (autocast)."),
    modal_weight: float = typer.Option(0.0, "--modal-weight", help="Weight of the modal-mean regularizer."),
    attribute_captions: float = typer.Option(
        0.0,
        "--attribute-captions",
        help="Share of captions replaced by partial descriptions ('a red circle') drawn from the images' "
        "`shapes` annotations (synth-shapes); every image of the batch they fit counts as a positive.",
    ),
    seed: int = typer.Option(0, "--seed"),
    train_split: str = typer.Option("train", "--train-split"),
    val_split: str = typer.Option("val", "--val-split", help='Split validated every epoch ("none" to skip).'),
    limit: int = typer.Option(None, "--limit", help="At most this many training images."),
    val_limit: int = typer.Option(1000, "--val-limit", help="At most this many validation images."),
    image_size: int = typer.Option(64, "--image-size", help="Input size of the from-scratch model."),
    embed_dim: int = typer.Option(128, "--embed-dim", help="Embedding size of the from-scratch model."),
    export: Path = typer.Option(None, "--export", help="Model folder to write at the end (default OUT/model)."),
    name: str = typer.Option(None, "--name", help="Model name recorded in the exported config.json."),
    threads: int = typer.Option(None, "--threads", help="torch threads (default: torch's choice)."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue the run in OUT from its last checkpoint."),
    quiet: bool = flag("No progress bar.", "--quiet", "-q"),
) -> None:
    """Train with InfoNCE or SigLIP loss, validate R@K every epoch, checkpoint, export to a model folder."""
    from xmodal.train import TrainConfig
    from xmodal.train import train as run_training

    config = TrainConfig(
        dataset=dataset,
        out=out,
        model=model,
        loss=loss,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        grad_clip=grad_clip,
        accum=accum,
        precision=precision,
        modal_weight=modal_weight,
        attribute_captions=attribute_captions,
        seed=seed,
        train_split=train_split,
        val_split=None if val_split.lower() == "none" else val_split,
        limit=limit,
        val_limit=val_limit,
        image_size=image_size,
        embed_dim=embed_dim,
        export=export,
        name=name,
        threads=threads,
    )
    with progress_bar(quiet) as progress:
        result = run_training(
            config,
            progress,
            resume=resume,
            on_epoch=lambda record: console.print(_epoch_line(record), highlight=False, soft_wrap=True),
        )
    if result.resumed_epochs:
        console.print(f"resumed after epoch {result.resumed_epochs}")
    console.print(f"log: {out / 'log.json'}, plot: {out / 'training.png'}", soft_wrap=True)
    console.print(f"model: {result.model_dir}", soft_wrap=True)

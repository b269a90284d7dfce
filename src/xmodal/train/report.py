"""A training run's record: log.json (config + one entry per epoch) and training.png (loss and recall)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LOG = "log.json"
PLOT = "training.png"


def write_log(out: Path, config: dict[str, Any], history: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write log.json atomically and redraw training.png; return both paths."""
    path = out / LOG
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": config, "epochs": history}, indent=2))
    os.replace(tmp, path)
    return path, plot_history(history, out / PLOT)


def plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    """Loss per epoch on the left; validation R@1 / R@10 per epoch and direction on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["loss"] for r in history], marker="o")
    left.set(title="training loss", xlabel="epoch", ylabel="loss")
    validated = [r for r in history if "val" in r]
    for direction in ("t2i", "i2t"):
        for k, style in (("R@1", "-"), ("R@10", "--")):
            values = [r["val"][direction][k] for r in validated]
            right.plot([r["epoch"] for r in validated], values, style, marker="o", label=f"{direction} {k}")
    right.set(title="validation recall", xlabel="epoch", ylabel="recall", ylim=(0, 1.02))
    if validated:
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

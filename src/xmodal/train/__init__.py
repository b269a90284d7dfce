"""Training dual encoders: losses, the from-scratch architecture, fine-tuning, the loop, its log.

from xmodal.train import TrainConfig, train
result = train(TrainConfig(dataset="karpathy:shapes/dataset_synth_shapes.json", out=Path("runs/shapes")))
xmodal.load_model(result.model_dir)

Imports torch (the `[torch]` extra); the rest of xmodal never imports this package.
"""

from xmodal.train.config import TrainConfig
from xmodal.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]

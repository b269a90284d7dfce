"""xmodal: images, video and text in one embedding space — search, benchmark, train, serve."""

from xmodal.errors import XmodalError


def __getattr__(name: str):
    # The models and the library pull in numpy, ONNX Runtime and the store: imported on first use,
    # so `import xmodal` (and every command line) stays light.
    if name in ("Encoder", "load_model"):
        from xmodal import models

        return getattr(models, name)
    if name == "Library":
        from xmodal.library import Library

        return Library
    raise AttributeError(f"module 'xmodal' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = ["Encoder", "Library", "XmodalError", "__version__", "load_model"]

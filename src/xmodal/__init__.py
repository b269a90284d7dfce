"""xmodal: images, video and text in one embedding space — search, benchmark, train, serve."""

from xmodal.errors import XmodalError
from xmodal.models import Encoder, load_model


def __getattr__(name: str):
    # Library pulls in faiss and the store: imported on first use, so `import xmodal` stays light.
    if name == "Library":
        from xmodal.library import Library

        return Library
    raise AttributeError(f"module 'xmodal' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = ["Encoder", "Library", "XmodalError", "__version__", "load_model"]

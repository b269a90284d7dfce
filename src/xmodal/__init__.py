"""xmodal: images, video and text in one embedding space — search, benchmark, train, serve."""

from xmodal.errors import XmodalError
from xmodal.models import Encoder, load_model

__version__ = "0.1.0"

__all__ = ["Encoder", "XmodalError", "__version__", "load_model"]

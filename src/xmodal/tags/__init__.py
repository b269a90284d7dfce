"""Zero-shot tags for a library's photos and videos: a vocabulary of labels prompted with
templates, thresholds calibrated from the library's own scores, and tagging runs that commit in
batches (resumable after any crash). `Library.tag` runs one; `Library.tags` lists them."""

from xmodal.tags.calibrate import DEFAULT_CONFIDENCE, LabelThreshold, calibrate
from xmodal.tags.run import TagReport, TagSettings, prompt_vectors, tag_library
from xmodal.tags.vocabulary import LabelGroup, Vocabulary, default_vocabulary, load_vocabulary

__all__ = [
    "DEFAULT_CONFIDENCE",
    "LabelGroup",
    "LabelThreshold",
    "TagReport",
    "TagSettings",
    "Vocabulary",
    "calibrate",
    "default_vocabulary",
    "load_vocabulary",
    "prompt_vectors",
    "tag_library",
]

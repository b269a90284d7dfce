"""Class sets xmodal ships: ImageNet's 1,000 classes and CIFAR-10/100, each class's id as the
published data labels it (a WordNet id, a CIFAR label name) with the name CLIP's zero-shot
evaluation prompts with, and the template set CLIP uses for it.

A dataset whose labels belong to a shipped set is classified over the whole set, so a folder
holding 250 ImageNet classes is scored exactly as the full validation set would score them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources

from xmodal.errors import InvalidArgumentError


@dataclass(frozen=True)
class ClassSet:
    """One shipped class set: ids (the data's labels, in class-index order) and CLIP's names."""

    key: str
    title: str
    templates: str  # name of the shipped template set CLIP uses with these classes
    ids: tuple[str, ...]
    names: tuple[str, ...]

    @cached_property
    def index(self) -> dict[str, int]:
        """Class id -> class index; also accepts CLIP's name and the id with spaces for underscores."""
        out: dict[str, int] = {}
        for i, (class_id, name) in enumerate(zip(self.ids, self.names, strict=True)):
            for key in (class_id, class_id.replace("_", " "), name):
                out.setdefault(key, i)
        return out

    def lookup(self, label: str) -> int | None:
        """Class index of a data label: an id, CLIP's name, or a class index written as a number."""
        if label.isdigit():
            return int(label) if int(label) < len(self.ids) else None
        return self.index.get(label)


@lru_cache(maxsize=1)
def class_sets() -> dict[str, ClassSet]:
    """The shipped sets by key: imagenet, cifar10, cifar100."""
    data = json.loads(resources.files("xmodal.data").joinpath("class_sets.json").read_text(encoding="utf-8"))
    return {
        key: ClassSet(key, s["title"], s["templates"], tuple(s["ids"]), tuple(s["names"]))
        for key, s in data["sets"].items()
    }


def class_set(key: str) -> ClassSet:
    """A shipped set by key; an error listing the keys otherwise."""
    sets = class_sets()
    if key not in sets:
        raise InvalidArgumentError("class set", key, sorted(sets))
    return sets[key]

"""Tag vocabularies: groups of labels, each prompted with its own templates.

The default (data/tag_vocabulary.json) is the 1,000 ImageNet class names as CLIP names them plus
scenes, events and everyday subjects of personal photos. A user's vocabulary replaces it, or with
`extend` is added to it. A vocabulary file is one of:

* text: one label per line (blank lines and lines starting with '#' are skipped);
* JSON: a list of labels; or {"labels": [...], "templates": ...}; or {"groups": [{"name": ...,
  "labels": [...], "templates": ...}, ...]}, where templates is a shipped set's name
  ("imagenet", "cifar", "simple") or a list of templates holding "{}" (e.g. "a photo of a {}, a
  type of bird."); a group may take a shipped class set's names instead of "labels"
  ("class_set": "imagenet", "cifar10", "cifar100").

A label met twice (in one group or two) is kept once, where it first appears.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from xmodal.errors import DatasetFormatError

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = "simple"


@dataclass(frozen=True)
class LabelGroup:
    """Labels prompted alike: their templates, and the template set's name when it is a shipped one."""

    name: str
    labels: tuple[str, ...]
    templates: tuple[str, ...]
    template_set: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "labels": list(self.labels),
            "templates": list(self.templates),
            "template_set": self.template_set,
        }


@dataclass(frozen=True)
class Vocabulary:
    """The labels a tagging run may give, in groups, and where they came from."""

    groups: tuple[LabelGroup, ...]
    source: str

    @property
    def labels(self) -> list[str]:
        return [label for group in self.groups for label in group.labels]

    def to_dict(self) -> dict:
        return {"source": self.source, "groups": [g.to_dict() for g in self.groups]}

    def digest(self) -> str:
        """Changes when any label or template does (not when only the source's name does)."""
        body = json.dumps([[g.labels, g.templates] for g in self.groups], ensure_ascii=False)
        return hashlib.blake2b(body.encode(), digest_size=8).hexdigest()


def default_vocabulary(templates: str | Path | None = None) -> Vocabulary:
    """The shipped vocabulary (see the module docstring); `templates` replaces every group's."""
    data = json.loads(resources.files("xmodal.data").joinpath("tag_vocabulary.json").read_text(encoding="utf-8"))
    return _vocabulary(
        data, "xmodal default (ImageNet classes, scenes and events)", Path("tag_vocabulary.json"), templates
    )


def load_vocabulary(
    path: str | Path | None = None, templates: str | Path | None = None, *, extend: bool = False
) -> Vocabulary:
    """A vocabulary file (text or JSON, see the module docstring), the default when `path` is
    None, the default plus the file's labels with `extend`; `templates` replaces every group's."""
    if path is None:
        return default_vocabulary(templates)
    path = Path(path).expanduser()
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(path, f"cannot read the vocabulary: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, f"not valid JSON: {exc.msg}", exc.lineno) from None
    else:
        data = [line.strip() for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    own = _vocabulary(data, str(path), path, templates)
    if not extend:
        return own
    base = default_vocabulary(templates)
    return _deduplicated(Vocabulary(base.groups + own.groups, f"{base.source} + {path}"))


def _vocabulary(data: object, source: str, path: Path, templates: str | Path | None) -> Vocabulary:
    if isinstance(data, list):
        data = {"labels": data}
    if not isinstance(data, dict):
        raise DatasetFormatError(path, 'expected a list of labels, {"labels": [...]} or {"groups": [...]}')
    groups_data = data.get("groups", [data] if "labels" in data or "class_set" in data else None)
    if not isinstance(groups_data, list) or not groups_data:
        raise DatasetFormatError(path, 'expected "labels" or a non-empty "groups" list')
    groups = tuple(_group(g, n, path, templates) for n, g in enumerate(groups_data, start=1))
    vocabulary = _deduplicated(Vocabulary(groups, source))
    if not vocabulary.labels:
        raise DatasetFormatError(path, "the vocabulary has no labels")
    return vocabulary


def _group(data: object, number: int, path: Path, templates: str | Path | None) -> LabelGroup:
    from xmodal.eval.zeroshot import load_templates, shipped_templates

    if isinstance(data, dict) and "class_set" in data and "labels" not in data:
        from xmodal.eval.datasets.class_sets import class_set

        data = dict(data, labels=list(class_set(str(data["class_set"])).names))
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
        raise DatasetFormatError(path, f"group {number}: expected an object with a 'labels' list or a 'class_set'")
    labels = data["labels"]
    bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
    if bad:
        raise DatasetFormatError(path, f"group {number}: label {bad[0]!r} is not a non-empty string")
    spec = templates if templates is not None else data.get("templates", DEFAULT_TEMPLATES)
    if isinstance(spec, list):
        chosen, name = _checked_templates(spec, path, number), None
    else:
        chosen, name = load_templates(spec), str(spec) if str(spec) in shipped_templates() else None
    return LabelGroup(
        str(data.get("name") or f"group {number}"), tuple(label.strip() for label in labels), tuple(chosen), name
    )


def _checked_templates(templates: list, path: Path, number: int) -> list[str]:
    for template in templates:
        if not isinstance(template, str) or ("{}" not in template and "{c}" not in template):
            raise DatasetFormatError(path, f"group {number}: template {template!r} has no {{}} for the label")
    if not templates:
        raise DatasetFormatError(path, f"group {number}: an empty template list")
    return templates


def _deduplicated(vocabulary: Vocabulary) -> Vocabulary:
    seen: set[str] = set()
    groups = []
    for group in vocabulary.groups:
        kept = tuple(label for label in dict.fromkeys(group.labels) if label not in seen)
        if len(kept) < len(group.labels):
            log.info("%s: %d repeated labels kept once", group.name, len(group.labels) - len(kept))
        seen.update(kept)
        if kept:
            groups.append(LabelGroup(group.name, kept, group.templates, group.template_set))
    return Vocabulary(tuple(groups), vocabulary.source)

"""The media walker: which files it finds, what it reports, and that it never hangs or stops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xmodal.media.formats import media_type
from xmodal.media.walk import MediaFile, WalkOptions, WalkProblem, walk_media


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _names(entries, root: Path) -> dict[str, str]:
    out = {}
    for e in entries:
        rel = os.path.relpath(e.path, root)
        out[rel] = e.type if isinstance(e, MediaFile) else f"problem: {e.reason}"
    return out


def test_media_types_by_extension():
    assert media_type("a/B.JPG") == "image"
    assert media_type("x.tiff") == "image" and media_type("x.webp") == "image" and media_type("x.gif") == "image"
    assert media_type("clip.MOV") == "video" and media_type("clip.mkv") == "video"
    assert media_type("notes.txt") == "text" and media_type("a.MD") == "text" and media_type("x.caption") == "text"
    assert media_type("notes.txt", text=frozenset()) is None and media_type("noext") is None
    assert media_type("notes.org") is None and media_type("notes.org", text=frozenset({".org"})) == "text"


def test_walk_finds_media_skips_hidden_and_excluded(tmp_path: Path):
    _touch(tmp_path / "a.jpg")
    _touch(tmp_path / "sub" / "deeper" / "b.PNG")
    _touch(tmp_path / "sub" / "v.mp4")
    _touch(tmp_path / "sub" / "readme.txt")
    _touch(tmp_path / ".hidden.jpg")
    _touch(tmp_path / ".cache" / "c.jpg")
    _touch(tmp_path / "thumbs" / "t.jpg")
    found = _names(walk_media([tmp_path], WalkOptions(exclude=("thumbs",))), tmp_path)
    assert found == {"a.jpg": "image", "sub/deeper/b.PNG": "image", "sub/v.mp4": "video", "sub/readme.txt": "text"}
    with_hidden = _names(walk_media([tmp_path], WalkOptions(include_hidden=True, exclude=("*/thumbs/*",))), tmp_path)
    assert set(with_hidden) == {
        "a.jpg",
        "sub/deeper/b.PNG",
        "sub/v.mp4",
        "sub/readme.txt",
        ".hidden.jpg",
        ".cache/c.jpg",
    }
    no_text = _names(walk_media([tmp_path], WalkOptions(exclude=("thumbs",), text_extensions=frozenset())), tmp_path)
    assert "sub/readme.txt" not in no_text and len(no_text) == 3


def test_walk_stat_and_single_file_roots(tmp_path: Path):
    path = _touch(tmp_path / "one.jpg", b"12345")
    (entry,) = list(walk_media([path, tmp_path]))  # the same file through two roots: once
    assert entry == MediaFile(str(path), "image", 5, path.stat().st_mtime_ns)
    (missing,) = list(walk_media([tmp_path / "nope"]))
    assert isinstance(missing, WalkProblem) and missing.reason == "not found"


def test_symlinks_skipped_by_default_followed_loop_safe_when_asked(tmp_path: Path):
    real = _touch(tmp_path / "photos" / "a.jpg")
    os.symlink(real, tmp_path / "photos" / "link.jpg")
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "photos" / "broken.jpg")
    os.symlink(tmp_path / "photos", tmp_path / "photos" / "loop")
    os.symlink(tmp_path / "photos" / "self", tmp_path / "photos" / "self")
    assert _names(walk_media([tmp_path / "photos"]), tmp_path) == {"photos/a.jpg": "image"}

    followed = _names(walk_media([tmp_path / "photos"], WalkOptions(follow_symlinks=True)), tmp_path)
    assert followed["photos/a.jpg"] == "image"
    assert followed["photos/link.jpg"] == "image"
    assert followed["photos/broken.jpg"] == "problem: broken symbolic link"
    assert followed["photos/loop"].startswith("problem: symbolic link loop")
    assert followed["photos/self"] == "problem: symbolic link loop"
    assert len(followed) == 5  # the loop is not walked into


def test_non_utf8_names_round_trip(tmp_path: Path):
    name = os.fsdecode(b"na\xefve-\xff.jpg")
    _touch(tmp_path / name)
    (entry,) = list(walk_media([tmp_path]))
    assert os.fsencode(entry.path).endswith(b"na\xefve-\xff.jpg")
    assert Path(entry.path).read_bytes() == b"x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder: permission errors cannot happen")
def test_unreadable_folder_is_a_problem_not_a_stop(tmp_path: Path):
    _touch(tmp_path / "ok" / "a.jpg")
    locked = tmp_path / "locked"
    _touch(locked / "b.jpg")
    locked.chmod(0)
    try:
        found = _names(walk_media([tmp_path]), tmp_path)
    finally:
        locked.chmod(0o755)
    assert found == {"ok/a.jpg": "image", "locked": "problem: permission denied"}

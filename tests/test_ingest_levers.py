"""Ingest levers and what they must keep: JPEG draft decoding at the smallest scale covering the
model input (embeddings within cosine 0.999 of a full decode, on real photos), SHA-256 content keys
from schema version 4 with older keys and their embeddings kept."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import xmodal
from helpers import REALDATA
from library_helpers import make_photo_tree
from xmodal.library import Library
from xmodal.media.hashing import content_hash
from xmodal.media.options import DecodeOptions

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "library_v1"


def real_photos(n: int, short_side: int) -> list[Path]:
    """`n` real photos whose short side is at least `short_side` (so a draft scale applies)."""
    from PIL import Image

    folder = REALDATA / "coco_mini"
    if not folder.is_dir():
        pytest.skip(f"real photos not found at {folder} (shared/realdata is not part of a clone)")
    found = []
    for path in sorted(folder.rglob("*.jpg")):
        with Image.open(path) as img:
            if min(img.size) >= short_side:
                found.append(path)
        if len(found) == n:
            break
    return found


def test_draft_decoding_keeps_embeddings_of_real_photos():
    """The shipped (trained) model reads 64 px: COCO's 640x480 photos decode at 1/4 (160x120)."""
    encoder = xmodal.load_model("xmodal-tiny-shapes")
    assert encoder.decode_options.draft_size == 80  # 1.25 x the input: a resize always follows
    photos = real_photos(16, 4 * encoder.decode_options.draft_size // 2)
    assert len(photos) == 16
    drafted = encoder.embed_images(photos)
    reference = xmodal.load_model("xmodal-tiny-shapes", decode=DecodeOptions(draft_size=None)).embed_images(photos)
    cosines = np.sum(drafted * reference, axis=1)
    assert cosines.min() >= 0.999, cosines.round(5)
    for path in photos:  # the drafts really are smaller than the photos (else this proves nothing)
        decoded = encoder.decode(path)
        assert decoded.image.width <= -(-decoded.width // 4) and min(decoded.image.size) >= 80


def test_draft_decoding_of_a_12_megapixel_jpeg_at_one_eighth(vitb32_model_dir: Path, tmp_path: Path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from ingest import make_photo

    path = tmp_path / "12mp.jpg"
    make_photo(path, seed=3)
    encoder = xmodal.load_model(vitb32_model_dir)
    assert encoder.decode_options.draft_size == 280
    decoded = encoder.decode(path)
    assert (decoded.width, decoded.height) == (4000, 3000) and decoded.image.size == (500, 375)  # 1/8
    reference = xmodal.load_model(vitb32_model_dir, decode=DecodeOptions(draft_size=None))
    cosine = float(encoder.embed_images([path])[0] @ reference.embed_images([path])[0])
    assert cosine >= 0.999


def test_new_content_keys_are_sha256():
    import hashlib

    assert content_hash(b"xmodal") == hashlib.sha256(b"xmodal").hexdigest()


def test_old_catalog_keeps_its_keys_and_embeddings_and_new_files_get_sha256(tmp_path: Path):
    library = tmp_path / "library"
    shutil.copytree(FIXTURE_V1 / "library", library)
    photos = tmp_path / "photos"
    shutil.copytree(FIXTURE_V1 / "photos", photos)
    with sqlite3.connect(library / "catalog.sqlite") as conn:
        old = dict(conn.execute("SELECT path, content_hash FROM items WHERE status = 'ok'").fetchall())
        root = conn.execute("SELECT path FROM items LIMIT 1").fetchone()[0]
    old_root = Path(root.decode() if isinstance(root, bytes) else root).parent
    with Library(library) as lib:
        before = [(h.item_id, round(h.score, 5)) for h in lib.search("a red circle", k=5)]
    with sqlite3.connect(library / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        assert meta["content_hash"] == "sha256" and meta["legacy_content_hash"] == "blake2b-128"
        assert dict(conn.execute("SELECT path, content_hash FROM items WHERE status = 'ok'").fetchall()) == old
    assert all(len(h) == 32 for h in old.values())
    assert before  # searches as before (the v1 fixture test checks the exact scores)
    if not old_root.is_dir():  # the fixture's files live where it was made: index a fresh tree instead
        make_photo_tree(tmp_path / "new", 3)
        with Library(library) as lib:
            report = lib.index([tmp_path / "new"])
            assert report.added == 3 and report.encoded == 3
            rows = [r for r in lib.catalog.items_under([str(tmp_path / "new")]).values()]
        assert all(len(r.content_hash) == 64 and r.content_hash == content_hash(r.path) for r in rows)


def test_version_3_library_with_tags_migrates_keeping_keys_embeddings_and_tags(tmp_path: Path, monkeypatch):
    """A library at version 3 (text items and tags, BLAKE2b keys) reaches version 4 in place: its
    keys, their vectors and the tags keyed by them stay, and searches by tag find the same item."""
    import xmodal.store.catalog as catalog_module
    from xmodal.store.catalog import Catalog
    from xmodal.store.schema import MIGRATIONS, VERSION

    assert [m.version for m in MIGRATIONS] == list(range(1, VERSION + 1)) and VERSION == 4
    library = tmp_path / "library"
    shutil.copytree(FIXTURE_V1 / "library", library)
    with monkeypatch.context() as patch:  # the xmodal that made version 3
        patch.setattr(catalog_module, "MIGRATIONS", MIGRATIONS[:3])
        patch.setattr(catalog_module, "VERSION", 3)
        catalog = Catalog(library / "catalog.sqlite")
        assert catalog.version() == 3
        item, digest = catalog.conn.execute(
            "SELECT id, content_hash FROM items WHERE status = 'ok' ORDER BY id LIMIT 1"
        ).fetchone()
        (model_key,) = catalog.conn.execute("SELECT key FROM models").fetchone()
        with catalog.transaction():
            run = catalog.tags.start_run(model_key, "d", {"groups": [{"labels": ["dog", "cat"]}]}, {}, 1)
            catalog.conn.execute("INSERT INTO tags VALUES (?, 'dog', 0.3, 0.9, ?)", (digest, run))
            catalog.conn.execute("INSERT INTO tagged VALUES (?, ?)", (digest, run))
            catalog.tags.finish_run(run)
        catalog.close()
    with Library(library) as lib:
        found = [h.item_id for h in lib.search("a red circle", k=5, tags=["dog"], min_score=-1)]
        assert lib.status()["catalog"]["version"] == 4
    assert found == [item] and len(digest) == 32
    with sqlite3.connect(library / "catalog.sqlite") as conn:
        assert conn.execute("SELECT content_hash FROM tags WHERE label = 'dog'").fetchall() == [(digest,)]
        assert conn.execute("SELECT count(*) FROM embeddings WHERE content_hash = ?", (digest,)).fetchone()[0] == 1

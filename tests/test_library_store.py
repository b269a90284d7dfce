"""The store under attack: a catalog that knows its identity, an index file that is one atomic unit
with it, readers that never write, bounded reading, bounds on k, offline roots, links, odd names,
and the version-1 library upgraded in place."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import xmodal
from library_helpers import PixelEmbedder, make_photo_tree, photo
from xmodal.errors import InvalidArgumentError, LibraryError
from xmodal.library import Library
from xmodal.store.catalog import Catalog
from xmodal.store.indexes import IndexCache
from xmodal.store.vector_index import VectorIndex

SHIPPED = "xmodal-tiny-shapes"
FIXTURE_V1 = Path(__file__).parent / "fixtures" / "library_v1"


@pytest.fixture(scope="module")
def shipped():
    return xmodal.load_model(SHIPPED)


def true_scores(lib: Library, encoder, text: str, hits) -> list[float]:
    """Each hit's cosine to the query computed from the catalog's stored vector (the truth)."""
    query = encoder.embed_texts([text])[0]
    ids, vectors = lib.catalog.vectors(encoder.model_key, np.asarray([h.item_id for h in hits]))
    by_id = dict(zip(ids.tolist(), vectors @ query, strict=True))
    return [float(by_id[h.item_id]) for h in hits]


def test_recreated_or_replaced_catalog_never_serves_the_old_index(tmp_path: Path, shipped):
    make_photo_tree(tmp_path / "a", 30)
    make_photo_tree(tmp_path / "b", 30, start_seed=500)
    make_photo_tree(tmp_path / "c", 10, start_seed=900)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "a"], model=shipped)
    for name in os.listdir(tmp_path / "lib"):
        if name.startswith("catalog.sqlite"):
            os.remove(tmp_path / "lib" / name)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "b"], model=shipped)  # item ids start at 1 again
        hits = lib.search("a red circle", k=30, min_score=-1)
        assert all(Path(h.path).is_relative_to(tmp_path / "b") for h in hits)
        assert [h.similarity for h in hits] == pytest.approx(true_scores(lib, shipped, "a red circle", hits), abs=2e-3)
        assert lib.status()["index"][shipped.model_key]["up_to_date"]
    # another library's catalog copied over this one: its index file is refused as well
    with Library(tmp_path / "other") as other:
        other.index([tmp_path / "c"], model=shipped)
    shutil.copy(tmp_path / "other" / "catalog.sqlite", tmp_path / "lib" / "catalog.sqlite")
    with Library(tmp_path / "lib") as lib:
        info = lib.status()["index"][shipped.model_key]
        assert not info["up_to_date"] and "another catalog" in info["problem"]
        hits = lib.search("a red circle", k=30, min_score=-1)
        assert len(hits) == 10 and all(Path(h.path).is_relative_to(tmp_path / "c") for h in hits)
        assert [h.similarity for h in hits] == pytest.approx(true_scores(lib, shipped, "a red circle", hits), abs=2e-3)


def test_an_older_index_file_is_caught_up_and_edited_photos_get_new_vectors(tmp_path: Path):
    embedder = PixelEmbedder()
    paths = make_photo_tree(tmp_path / "photos", 20)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=embedder)
        index_path = lib._indexes.path(embedder.model_key)
        old = index_path.read_bytes()
        photo(7777).save(paths[3])  # edited in place
        os.utime(paths[3], ns=(0, paths[3].stat().st_mtime_ns + 10**9))
        lib.index([tmp_path / "photos"])
    index_path.write_bytes(old)  # the older file lands after the newer catalog
    with Library(tmp_path / "lib") as lib:
        best = lib.search(image=paths[3], k=1, model=embedder)[0]
        assert best.path == str(paths[3]) and best.similarity == pytest.approx(1.0, abs=1e-3)
        assert not lib.status()["index"][embedder.model_key]["up_to_date"]


def test_an_index_file_from_a_rolled_back_catalog_is_refused(tmp_path: Path):
    embedder = PixelEmbedder()
    make_photo_tree(tmp_path / "photos", 10)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=embedder)
    backup = (tmp_path / "lib" / "catalog.sqlite").read_bytes()
    make_photo_tree(tmp_path / "photos" / "more", 5, start_seed=300)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=embedder)
    (tmp_path / "lib" / "catalog.sqlite").write_bytes(backup)  # restored: revision numbers go back
    with Library(tmp_path / "lib") as lib:
        info = lib.status()["index"][embedder.model_key]
        assert "never went through" in info["problem"]
        assert len(lib.search(image=tmp_path / "photos" / "album0" / "sub" / "p0000.png", k=100, model=embedder)) == 10


def test_index_headers_with_wrong_types_are_rebuilt_not_a_traceback(tmp_path: Path, caplog):
    embedder = PixelEmbedder()
    paths = make_photo_tree(tmp_path / "photos", 12)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=embedder)
        index_path = lib._indexes.path(embedder.model_key)
    index = VectorIndex.load(index_path)
    index.meta = {**index.meta, "revision": "abc"}
    index.save(index_path)
    with Library(tmp_path / "lib") as lib, caplog.at_level("WARNING"):
        assert lib.search(image=paths[0], k=1, model=embedder)[0].path == str(paths[0])
        assert "does not say which catalog revision" in caplog.text
    index.meta = {"spec": 3}
    index.save(index_path)
    with Library(tmp_path / "lib") as lib:
        assert lib.search(image=paths[1], k=1, model=embedder)[0].path == str(paths[1])


def test_readers_never_write(tmp_path: Path):
    embedder = PixelEmbedder()
    paths = make_photo_tree(tmp_path / "photos", 12)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=embedder)
    catalog = Catalog(tmp_path / "lib" / "catalog.sqlite")  # the catalog moves on without an index save
    from xmodal.store.ingest import ingest

    make_photo_tree(tmp_path / "photos" / "new", 3, start_seed=400)
    ingest(catalog, embedder, [str(tmp_path / "photos")])
    catalog.close()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "lib").rglob("*") if p.is_file()}
    with Library(tmp_path / "lib") as lib:
        for _ in range(3):
            assert len(lib.search(image=paths[0], k=100, model=embedder)) == 15
        lib.status()
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "lib").rglob("*") if p.is_file()}
    changed = {p.name for p in after if before.get(p) != after[p]}
    assert changed <= {"catalog.sqlite-shm", "catalog.sqlite-wal"}  # SQLite's shared memory, not ours


def test_a_huge_file_is_a_recorded_failure_and_the_rest_is_indexed(tmp_path: Path):
    embedder = PixelEmbedder()
    make_photo_tree(tmp_path / "photos", 6)
    huge = tmp_path / "photos" / "huge.jpg"
    with open(huge, "wb") as fp:
        fp.truncate(64 << 30)  # sparse: 64 GB that take no disk
    with Library(tmp_path / "lib") as lib:
        report = lib.index([tmp_path / "photos"], model=embedder)
        assert report.added == 6
        assert report.failed == [(str(huge), "file is 64.0 GB, over the 256.0 MB limit (XMODAL_MAX_IMAGE_BYTES)")]
        again = lib.index([tmp_path / "photos"])
        assert (again.unchanged, again.failed) == (7, [])


def test_k_is_bounded_by_the_library_and_a_documented_maximum(tmp_path: Path):
    embedder = PixelEmbedder()
    paths = make_photo_tree(tmp_path / "photos", 30)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=embedder)
        assert len(lib.search(image=paths[0], k=10_000)) == 30
        for k in (10**8, 10**12, 0, -3):
            with pytest.raises(InvalidArgumentError, match="-k"):
                lib.search(image=paths[0], k=k)


def test_an_unmounted_root_is_offline_not_emptied(tmp_path: Path):
    embedder = PixelEmbedder()
    mount = tmp_path / "drive"
    make_photo_tree(mount, 16)
    with Library(tmp_path / "lib") as lib:
        lib.index([mount], model=embedder)
        ids = {p: r.id for p, r in lib.catalog.items_under([str(mount)]).items()}
        mount.rename(tmp_path / "away")  # unplugged: the mount point is gone
        report = lib.index()  # no paths: every known root
        assert (report.removed, report.offline) == (0, {str(mount): "missing (not mounted?)"})
        mount.mkdir()  # or an empty mount point
        report = lib.index()
        assert (report.removed, report.offline) == (0, {str(mount): "empty folder (not mounted?)"})
        assert lib.status()["items"]["image"] == 16 and lib.status()["roots"][0]["state"] == "offline"
        hit = lib.search(image=tmp_path / "away" / "album0" / "sub" / "p0000.png", k=1)[0]
        assert hit.offline and hit.path == str(mount / "album0" / "sub" / "p0000.png")
        mount.rmdir()
        (tmp_path / "away").rename(mount)  # back
        report = lib.index()
        assert (report.added, report.removed, report.unchanged, report.offline) == (0, 0, 16, {})
        assert {p: r.id for p, r in lib.catalog.items_under([str(mount)]).items()} == ids
        assert lib.status()["roots"][0]["state"] == "online"
        # the user really emptied it: prune forgets offline roots on request
        shutil.rmtree(mount)
        lib.index()
        assert lib.prune(offline=True)["items"] == 16 and lib.status()["items"]["image"] == 0


def test_a_folder_through_a_link_is_one_set_of_items_and_a_deleted_file_root_goes(tmp_path: Path):
    embedder = PixelEmbedder()
    paths = make_photo_tree(tmp_path / "real", 8)
    os.symlink(tmp_path / "real", tmp_path / "link")
    single = tmp_path / "single.png"
    photo(4242).save(single)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "real"], model=embedder)
        report = lib.index([tmp_path / "link"])
        assert (report.added, report.unchanged) == (0, 8)
        assert lib.status()["items"]["image"] == 8
        lib.index([single])
        assert lib.search(image=single, k=1)[0].path == str(single)
        single.unlink()
        report = lib.index([single])
        assert report.removed == 1 and lib.status()["items"]["image"] == 8
        assert all(h.path != str(single) for h in lib.search(image=paths[0], k=100))


def test_odd_names_are_escaped_for_display_and_exact_in_json(tmp_path: Path):
    embedder = PixelEmbedder()
    folder = tmp_path / "photos"
    folder.mkdir()
    evil = folder / "evil\x1b[31mred.png"
    latin = folder / os.fsdecode(b"caf\xe9.png")
    literal = folder / "caf\\xe9.png"  # a real name with a backslash: must not collide with `latin`
    for n, path in enumerate((evil, latin, literal)):
        photo(n).save(path)
    with Library(tmp_path / "lib") as lib:
        lib.index([folder], model=embedder)
        hits = {h.path: h.to_dict() for h in lib.search(image=evil, k=3)}
    assert "\x1b" not in hits[str(evil)]["path"] and "\\x1b[31m" in hits[str(evil)]["path"]
    exact = {base64.b64decode(d["path_bytes"]) for d in hits.values()}
    assert exact == {os.fsencode(p) for p in (evil, latin, literal)}
    assert hits[str(latin)]["path"] == hits[str(literal)]["path"]  # same display text, different files
    assert base64.b64decode(hits[str(latin)]["path_bytes"]) != base64.b64decode(hits[str(literal)]["path_bytes"])


def test_a_moved_model_folder_is_found_again_or_named_in_the_error(tmp_path: Path, shipped):
    folder = tmp_path / "models" / "mine"
    shutil.copytree(shipped.config.folder, folder)
    make_photo_tree(tmp_path / "photos", 5)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=folder)
    folder.rename(tmp_path / "models" / "moved")  # moved and renamed: the same files
    with Library(tmp_path / "lib") as lib, pytest.raises(LibraryError, match="--model NEWPATH"):
        lib.search("a red circle")
    with Library(tmp_path / "lib") as lib:
        assert len(lib.search("a red circle", model=tmp_path / "models" / "moved", min_score=-1)) == 5
    with Library(tmp_path / "lib") as lib:  # a shipped model is remembered by its name
        lib.index([tmp_path / "photos"], model=SHIPPED)
        assert lib.status()["models"][0]["source"] == SHIPPED


def test_nothing_is_created_by_reading_a_missing_library(tmp_path: Path):
    from xmodal.errors import LibraryNotFoundError

    with Library(tmp_path / "typo") as lib:
        for attempt in (lib.status, lambda: lib.search("x"), lib.errors):
            with pytest.raises(LibraryNotFoundError, match="no library at"):
                attempt()
    assert not (tmp_path / "typo").exists()


def test_version_1_library_migrates_in_place_and_searches_identically(tmp_path: Path):
    library = tmp_path / "library"
    shutil.copytree(FIXTURE_V1 / "library", library)
    expected = json.loads((FIXTURE_V1 / "expected.json").read_text())
    with sqlite3.connect(library / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    with Library(library) as lib:
        for query, hits in expected["queries"].items():  # no floor: the fixture's searches predate them
            found = [[h.path, h.item_id, round(h.similarity, 6)] for h in lib.search(query, k=5, min_score=-1)]
            assert [f[:2] for f in found] == [h[:2] for h in hits]
            assert [f[2] for f in found] == pytest.approx([h[2] for h in hits], abs=2e-4)
        status = lib.status()
        assert status["items"] == {**expected["items"], "text": 0}
        assert (status["failed"], status["pending"]["video"]) == (expected["failed"], expected["pending"]["video"])
        assert status["catalog"]["version"] == 3 and len(status["catalog"]["uuid"]) == 36
        # the model folder it remembers no longer exists: found again by its shipped name
        assert status["models"][0]["source"].endswith("xmodal-tiny-shapes")
    with sqlite3.connect(library / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"segments", "roots", "removed", "revisions", "embeddings", "tags", "tagged", "tag_runs"} <= tables


def test_index_cache_never_changes_a_published_snapshot(tmp_path: Path):
    embedder = PixelEmbedder()
    make_photo_tree(tmp_path / "photos", 10)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=embedder)
        cache = IndexCache(tmp_path / "lib")
        (record,) = lib.catalog.models()
        first = cache.snapshot(lib.catalog, record)
        ids_before = first.live_ids().copy()
        make_photo_tree(tmp_path / "photos" / "more", 4, start_seed=600)
        lib.index([tmp_path / "photos"])
        second = cache.snapshot(lib.catalog, record)
        assert np.array_equal(first.live_ids(), ids_before) and len(second) == len(first) + 4


def test_a_full_disk_stops_indexing_with_a_clear_error_and_the_next_run_resumes(tmp_path: Path, monkeypatch):
    import xmodal.store.catalog as catalog_module
    from xmodal.errors import DiskFullError

    embedder = PixelEmbedder()
    make_photo_tree(tmp_path / "photos", 10)
    with Library(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=embedder)
    make_photo_tree(tmp_path / "photos" / "more", 200, start_seed=1000)
    real_connect = catalog_module._connect

    def nearly_full(path, readonly):  # SQLite's own "database or disk is full" once a few pages are added
        conn = real_connect(path, readonly)
        if not readonly:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages + 8}")
        return conn

    monkeypatch.setattr(catalog_module, "_connect", nearly_full)
    with Library(tmp_path / "lib") as lib, pytest.raises(DiskFullError, match="disk is full; the work committed"):
        lib.index([tmp_path / "photos"], model=embedder)
    monkeypatch.setattr(catalog_module, "_connect", real_connect)
    with sqlite3.connect(tmp_path / "lib" / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Library(tmp_path / "lib") as lib:
        report = lib.index([tmp_path / "photos"], model=embedder)
        assert report.added + report.unchanged == 210 and lib.status()["items"]["image"] == 210

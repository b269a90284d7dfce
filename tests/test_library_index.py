"""Library indexing: exact counts across add / modify / move / delete, model calls counted, bad
input recorded and never fatal, files changing under the indexer, interruption, several models."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

import xmodal
from library_helpers import check_consistent, count_model_calls, image_files, make_bad_corpus, make_photo_tree, photo
from xmodal.library import Library
from xmodal.media.hashing import content_hash
from xmodal.store.catalog import Catalog, display_path


@pytest.fixture
def encoder(clip_model_dir: Path):
    return xmodal.load_model(clip_model_dir)


def test_incremental_runs_count_exactly_and_reuse_embeddings(tmp_path: Path, encoder):
    tree = tmp_path / "photos"
    paths = make_photo_tree(tree, 240)
    calls = count_model_calls(encoder)
    with Library(tmp_path / "lib") as lib:
        first = lib.index([tree], model=encoder)
        assert (first.added, first.updated, first.removed, first.unchanged, first.failed) == (240, 0, 0, 0, [])
        assert sum(calls) == first.encoded == 240 and first.reused == 0

        calls.clear()
        second = lib.index([tree], model=encoder)
        assert (second.added, second.updated, second.removed, second.unchanged) == (0, 0, 0, 240)
        assert calls == [] and not second.model_work and "no model work needed" in second.summary()

        moved_ids = {str(p): lib.catalog.item_by_path(str(p)).id for p in paths[5:12]}
        for i, path in enumerate(paths[:5]):  # modify
            photo(10_000 + i).save(path)
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        moved_dir = tree / "moved"
        moved_dir.mkdir()
        for path in paths[5:12]:  # move / rename
            path.rename(moved_dir / f"renamed-{path.name}")
        for path in paths[12:18]:  # delete
            path.unlink()
        make_photo_tree(tree / "new", 4, start_seed=20_000)  # add
        shutil.copy(paths[20], tree / "copy-a.png" if paths[20].suffix == ".png" else tree / "copy-a.jpg")
        shutil.copy(paths[21], tree / "copy-b.png" if paths[21].suffix == ".png" else tree / "copy-b.jpg")

        calls.clear()
        third = lib.index([tree], model=encoder)
        assert (third.added, third.updated, third.moved, third.removed, third.unchanged) == (4 + 2, 5, 7, 6, 240 - 18)
        assert sum(calls) == third.encoded == 5 + 4  # moved files and copies: no model call
        assert third.reused == 7 + 2
        assert lib.status()["items"] == {"image": 240 - 6 + 4 + 2, "video": 0, "text": 0}
        for old, item_id in moved_ids.items():  # a moved file keeps its item id
            new = moved_dir / f"renamed-{Path(old).name}"
            assert lib.catalog.item_by_path(str(new)).id == item_id and lib.catalog.item_by_path(old) is None
        check_consistent(lib, image_files(tree))

        for path in paths[:2]:  # modified in place (same item id): the index serves the new vector
            best = lib.search(image=path, k=1)[0]
            assert best.path == str(path) and best.score == pytest.approx(1.0, abs=1e-3)
        hits = lib.search(text="a photo", k=1000, min_score=-1.0)
        found = {h.path for h in hits}
        assert found == image_files(tree)
        assert not found & {str(p) for p in paths[5:18]}


def test_bad_inputs_recorded_never_fatal_and_retried_only_when_changed(tmp_path: Path, encoder):
    corpus = tmp_path / "bad"
    expected = make_bad_corpus(corpus)
    calls = count_model_calls(encoder)
    with Library(tmp_path / "lib") as lib:
        report = lib.index([corpus], model=encoder)
        failed = dict(report.failed)
        assert dict(lib.errors()) == failed
        rows = {os.path.basename(p): r for p, r in lib.catalog.items_under([str(corpus)]).items()}
        for name, outcome in expected.items():
            if outcome is None:
                assert name not in rows, name
            elif outcome == "ok":
                assert rows[name].status == "ok", (name, rows[name].error)
            else:
                assert rows[name].status == "failed" and outcome in rows[name].error, (name, rows[name].error)
        n_ok = sum(1 for o in expected.values() if o == "ok")
        n_failed = sum(1 for o in expected.values() if o not in (None, "ok"))
        assert len(failed) == n_failed
        assert report.added == n_ok and report.pending == 0
        items = lib.status()["items"]
        assert (items["image"], items["text"]) == (n_ok - 1, 1) and lib.status()["failed"] == n_failed
        rotated = rows["rotated.jpg"]
        assert (rotated.width, rotated.height) == (20, 40) and rotated.taken_at_source == "exif"
        assert display_path([p for p in lib.catalog.items_under([str(corpus)]) if "caf" in p][0]).endswith(
            "caf\\xe9-latin1.jpg"
        )

        calls.clear()
        again = lib.index([corpus], model=encoder)
        assert calls == [] and again.failed == [] and again.unchanged == n_ok + n_failed

        photo(3).save(corpus / "zero.jpg")  # a failed file fixed: retried, the other failures are not
        calls.clear()
        fixed = lib.index([corpus], model=encoder)
        assert (fixed.updated, fixed.failed, sum(calls)) == (1, [], 1)
        assert lib.status()["failed"] == n_failed - 1

        linked = lib.index([corpus], model=encoder, follow_symlinks=True)
        reasons = dict((os.path.basename(p), r) for p, r in linked.failed)
        assert reasons["broken_link.jpg"] == "broken symbolic link"
        assert reasons["loop"].startswith("symbolic link loop")


def test_files_deleted_or_rewritten_while_indexing(tmp_path: Path, encoder, monkeypatch):
    import xmodal.store.ingest.plan as ingest_module

    tree = tmp_path / "photos"
    paths = make_photo_tree(tree, 12)
    real_walk = ingest_module.walk_media

    def walk_then_change(roots, options=None):
        found = list(real_walk(roots, options))
        paths[0].unlink()
        photo(999).save(paths[1])
        os.utime(paths[1], ns=(0, paths[1].stat().st_mtime_ns + 5 * 10**9))
        return found

    monkeypatch.setattr(ingest_module, "walk_media", walk_then_change)
    calls = count_model_calls(encoder)
    with Library(tmp_path / "lib") as lib:
        report = lib.index([tree], model=encoder)
        assert report.failed == [(str(paths[0]), "file disappeared before it could be read")]
        row = lib.catalog.item_by_path(str(paths[1]))
        assert row.mtime_ns == paths[1].stat().st_mtime_ns  # the stat of the content actually read
        assert row.content_hash == content_hash(paths[1])

        monkeypatch.setattr(ingest_module, "walk_media", real_walk)
        calls.clear()
        rerun = lib.index([tree], model=encoder)
        assert (rerun.removed, rerun.unchanged, sum(calls)) == (1, 11, 0)


def test_interrupt_keeps_committed_work(tmp_path: Path, encoder):
    from xmodal.store.ingest import EmbedConfig

    tree = tmp_path / "photos"
    make_photo_tree(tree, 60)
    original = encoder.embed_pixels
    seen: list[int] = []

    def interrupt_on_third(pixels):
        seen.append(len(pixels))
        if len(seen) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return original(pixels)

    encoder.embed_pixels = interrupt_on_third
    config = EmbedConfig(batch_size=8, workers=1)
    with Library(tmp_path / "lib") as lib:
        report = lib.index([tree], model=encoder, config=config)
        done = seen[0] + seen[1]  # the batches encoded before the interrupt (partial ones when decoding lags)
        assert report.interrupted and report.encoded == done and report.added == done
        committed = lib.status()["items"]["image"]
        assert committed == done

        encoder.embed_pixels = original
        calls = count_model_calls(encoder)
        rest = lib.index([tree], model=encoder, config=config)
        assert not rest.interrupted and sum(calls) == 60 - committed and rest.unchanged == committed
        check_consistent(lib, image_files(tree))


def test_several_models_share_one_catalog(tmp_path: Path, clip_model_dir: Path):
    tree = tmp_path / "photos"
    make_photo_tree(tree, 20)
    fp32 = xmodal.load_model(clip_model_dir)
    int8 = xmodal.load_model(clip_model_dir, precision="int8")
    with Library(tmp_path / "lib") as lib:
        lib.index([tree], model=fp32)
        calls = count_model_calls(int8)
        report = lib.index([tree], model=int8)
        assert sum(calls) == 20 and report.unchanged == 20  # files unchanged, embedded for the new model
        status = lib.status()
        assert {m["precision"] for m in status["models"]} == {"fp32", "int8"}
        assert all(m["embeddings"] == 20 for m in status["models"])
        assert len(lib.search(text="x", k=5, model=fp32, min_score=-1)) == 5
        assert len(lib.search(text="x", k=5, model=int8, min_score=-1)) == 5


def test_newer_catalog_schema_is_refused(tmp_path: Path):
    from xmodal.errors import LibraryError

    assert xmodal.Library is Library  # the public name
    (tmp_path / "lib").mkdir()
    Catalog(tmp_path / "lib" / "catalog.sqlite", create=True).close()
    with sqlite3.connect(tmp_path / "lib" / "catalog.sqlite") as conn:
        conn.execute("PRAGMA user_version = 99")
    for attempt in (lambda lib: lib.status(), lambda lib: lib.index([tmp_path], model="xmodal-tiny-shapes")):
        with Library(tmp_path / "lib") as lib, pytest.raises(LibraryError, match="newer than this xmodal"):
            attempt(lib)


def test_prune_drops_only_unreferenced_embeddings(tmp_path: Path, encoder):
    tree = tmp_path / "photos"
    paths = make_photo_tree(tree, 10)
    with Library(tmp_path / "lib") as lib:
        lib.index([tree], model=encoder)
        for path in paths[:3]:
            path.unlink()
        paths[3].rename(tree / "moved.png" if paths[3].suffix == ".png" else tree / "moved.jpg")
        lib.index([tree], model=encoder)
        (model,) = lib.catalog.models()
        assert lib.catalog.embeddings.count(model.key) == 10  # kept: a re-added file costs no model call
        assert lib.prune() == {"items": 0, "embeddings": 3}
        assert lib.catalog.embeddings.count(model.key) == 7
        check_consistent(lib, image_files(tree))

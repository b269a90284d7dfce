"""Library search: combined queries equal their definition, filters, decay, score floor, exact vs
Faiss Flat identical, ANN tuning, and corrupt or stale index files rebuilt, never served."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import xmodal
from library_helpers import make_photo_tree, photo, with_exif_date
from xmodal.errors import InvalidArgumentError
from xmodal.library import Library
from xmodal.models import l2_normalize
from xmodal.search import QueryTerm, decay_factors, floors_for, pair_floor, parse_query, query_modality
from xmodal.store.catalog import Catalog
from xmodal.store.ingest import ingest

N_PHOTOS = 150


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, clip_model_dir: Path):
    """A library of photos (a third with EXIF dates in 2019/2021/2023) indexed with exact search."""
    root = tmp_path_factory.mktemp("search")
    tree = root / "photos"
    make_photo_tree(tree, N_PHOTOS)
    dated = tree / "dated"
    dated.mkdir()
    for i, year in enumerate([2019, 2021, 2023] * 4):
        img = photo(50_000 + i)
        img.save(dated / f"d{i:02d}-{year}.jpg", exif=with_exif_date(img, f"{year}:06:15 12:00:00"))
    encoder = xmodal.load_model(clip_model_dir)
    lib = Library(root / "lib")
    lib.index([tree], model=encoder, index_spec="exact,fp32")  # float32 storage: scores equal numpy's
    yield lib, encoder, tree
    lib.close()


def brute_force(lib: Library, query: np.ndarray, k: int) -> list[int]:
    (model,) = lib.catalog.models()
    ids, vectors = lib.catalog.vectors(model.key)
    order = np.argsort(-(vectors @ query), kind="stable")[:k]
    return ids[order].tolist()


def test_parse_query_terms(tmp_path: Path):
    ref = tmp_path / "ref.jpg"
    photo(1).save(ref)
    terms = parse_query(f'"beach" + {ref} - people + 2:sunset - 0.5:#17')
    assert terms == [
        QueryTerm("text", "beach", 1.0),
        QueryTerm("image", str(ref), 1.0),
        QueryTerm("text", "people", -1.0),
        QueryTerm("text", "sunset", 2.0),
        QueryTerm("item", "17", -0.5),
    ]
    assert parse_query("sea-side cafe") == [QueryTerm("text", "sea-side cafe", 1.0)]
    with pytest.raises(InvalidArgumentError, match="existing image file"):
        parse_query("./missing.jpg")
    # Queries from the network never name files: the same terms are text (and #ID items).
    assert parse_query(f"{ref} - ./missing.jpg + #17", path_terms=False) == [
        QueryTerm("text", str(ref), 1.0),
        QueryTerm("text", "./missing.jpg", -1.0),
        QueryTerm("item", "17", 1.0),
    ]


def test_text_query_matches_brute_force(indexed):
    lib, encoder, _ = indexed
    hits = lib.search(text="a red circle", k=10, min_score=-1)
    query = encoder.embed_texts(["a red circle"])[0]
    assert [h.item_id for h in hits] == brute_force(lib, query, 10)
    assert [h.rank for h in hits] == list(range(1, 11))
    assert all(h.type == "image" and os.path.exists(h.path) for h in hits)


def test_combined_query_is_weighted_average_of_unit_vectors(indexed):
    lib, encoder, tree = indexed
    ref = sorted(tree.rglob("*.png"))[3]
    hits = lib.search(text=f"2:beach + {ref} - people", k=8, min_score=-1)
    text = encoder.embed_texts(["beach", "people"])
    image = encoder.embed_images([ref])[0]
    query = l2_normalize((2 * text[0] + image - text[1])[None])[0]
    assert [h.item_id for h in hits] == brute_force(lib, query, 8)
    (model,) = lib.catalog.models()
    ids, vectors = lib.catalog.vectors(model.key, np.asarray([h.item_id for h in hits]))
    expected = dict(zip(ids.tolist(), (vectors @ query).tolist(), strict=True))
    assert all(abs(h.score - expected[h.item_id]) < 1e-5 for h in hits)


def test_image_and_item_queries_find_the_item_itself(indexed):
    lib, _, tree = indexed
    ref = sorted(tree.rglob("*.jpg"))[5]
    by_image = lib.search(image=ref, k=3)
    assert by_image[0].path == str(ref) and by_image[0].score == pytest.approx(1.0, abs=1e-5)
    by_item = lib.search(item=by_image[0].item_id, k=3)
    assert by_item[0].item_id == by_image[0].item_id and by_item[0].score == pytest.approx(1.0, abs=1e-5)
    assert lib.search(text=f"#{by_image[0].item_id}", k=1)[0].item_id == by_image[0].item_id
    # The image's encoded bytes (an upload) search exactly as its file does.
    by_bytes = lib.search(image=ref.read_bytes(), k=3)
    assert [(h.item_id, h.score) for h in by_bytes] == [(h.item_id, h.score) for h in by_image]
    as_text = lib.search(text=str(ref), k=3, path_terms=False, min_score=-1)
    assert as_text[0].score < 0.999  # the path was embedded as words, not opened


def test_filters_restrict_the_search(indexed):
    lib, _, tree = indexed
    assert len(lib.search(text="x", k=100, type="video", min_score=-1)) == 0
    after = lib.search(text="x", k=100, after="2021-01-01", before="2024", min_score=-1)  # others: taken now
    assert sorted(Path(h.path).name[-8:-4] for h in after) == ["2021"] * 4 + ["2023"] * 4
    window = lib.search(text="x", k=100, after="2019", before="2022", min_score=-1)
    assert {Path(h.path).name[-8:-4] for h in window} == {"2019", "2021"} and len(window) == 8
    assert all(h.taken_at.year in (2019, 2021) for h in window)
    album = lib.search(text="x", k=500, path_glob="*/album1/*", min_score=-1)
    assert len(album) == len([p for p in (tree / "album1").rglob("*") if p.is_file()])
    assert all("/album1/" in h.path for h in album)


def test_decay_reranks_by_age(indexed):
    lib, _, _ = indexed
    plain = lib.search(text="x", k=12, after="2019", before="2024", min_score=-1)
    decayed = lib.search(text="x", k=12, after="2019", before="2024", min_score=-1, decay_days=365)
    now = time.time()
    for hit in decayed:
        factor = decay_factors(np.asarray([hit.taken_at.timestamp()]), 365, now)[0]
        assert hit.score == pytest.approx(hit.similarity * factor, rel=1e-4)
    assert [h.score for h in decayed] == sorted((h.score for h in decayed), reverse=True)
    assert {h.item_id for h in plain} == {h.item_id for h in decayed}
    assert decay_factors(np.asarray([now - 10 * 86400, np.nan]), 10, now) == pytest.approx([np.exp(-1), 1.0])


def test_score_floor_gives_no_good_match(indexed):
    lib, _, _ = indexed
    results = lib.search(text="a dog", k=5, min_score=0.999)
    assert results.no_good_match and len(results) == 0 and results.best_score < 0.999
    some = lib.search(text="a dog", k=5, min_score=results.best_score - 1e-6)
    assert len(some) == 1 and not some.no_good_match
    text = [QueryTerm("text", "a dog")]
    assert query_modality(text) == "text" and query_modality([QueryTerm("image", "x.jpg")]) == "image"
    assert query_modality([QueryTerm("item", "7")], {7: "text"}) == "text"
    assert (
        pair_floor("ViT-B-32", "clip", "text", "image") == 0.20 and pair_floor("x", "siglip", "text", "video") == 0.07
    )
    assert pair_floor("ViT-B-32", "clip", "image", "text") == 0.20  # the same cosine, either way
    assert pair_floor("ViT-B-32", "clip", "image", "image") is None and pair_floor("x", "clip", "text", "text") is None
    assert pair_floor("my-model", "xmodal", "text", "image") is None
    assert pair_floor("xmodal-tiny-shapes", "xmodal", "text", "text") == 0.68
    assert floors_for("x", "clip", "text", 0.3) == {"image": 0.3, "video": 0.3, "text": 0.3}
    assert floors_for("x", "clip", "text", {"text": 0.6}) == {"image": 0.2, "video": 0.2, "text": 0.6}


def test_exact_and_faiss_flat_identical_and_ann_tuned(tmp_path: Path, clip_model_dir: Path):
    tree = tmp_path / "photos"
    make_photo_tree(tree, 300)
    encoder = xmodal.load_model(clip_model_dir)
    with Library(tmp_path / "lib") as lib:
        lib.index([tree], model=encoder, index_spec="exact,fp32")
        queries = ["a", "b c", "the sea", "red"]
        exact = [lib.search(text=q, k=10, min_score=-1) for q in queries]
        lib.rebuild_index(spec="Flat")
        flat = [lib.search(text=q, k=10, min_score=-1) for q in queries]
        for e, f in zip(exact, flat, strict=True):
            assert [h.item_id for h in e] == [h.item_id for h in f]
            assert np.allclose([h.score for h in e], [h.score for h in f], atol=1e-6)
        assert lib.status()["index"][encoder.model_key]["spec"] == "Flat"
        lib.rebuild_index(spec="exact")  # float16 storage: same neighbours, scores within fp16 rounding
        half = [lib.search(text=q, k=10, min_score=-1) for q in queries]
        recall = np.mean(
            [len({h.item_id for h in a} & {h.item_id for h in b}) / 10 for a, b in zip(half, flat, strict=True)]
        )
        assert recall >= 0.9
        assert np.allclose([h.score for h in half[0]], [h.score for h in flat[0]], atol=2e-3)

        with pytest.raises(InvalidArgumentError, match="'IVF1024,Flat'.*300 given"):
            lib.rebuild_index(spec="IVF1024,Flat")  # too few vectors to train 1024 lists: nothing changes
        assert lib.status()["index"][encoder.model_key]["setting"] == "exact"
        assert len(lib.search(text="a", k=10, min_score=-1)) == 10

        lib.rebuild_index(spec="HNSW32")
        report = lib.tune(target_recall=0.95)
        assert report.met and report.chosen.startswith("efSearch=")
        assert max(s.recall for s in report.settings if s.params == report.chosen) >= 0.95
        tuned = lib.status()["index"][encoder.model_key]
        assert tuned["spec"] == "HNSW32" and tuned["search_params"] == report.chosen


def test_corrupt_and_stale_index_files_are_rebuilt(tmp_path: Path, clip_model_dir: Path, caplog):
    tree = tmp_path / "photos"
    paths = make_photo_tree(tree, 40)
    encoder = xmodal.load_model(clip_model_dir)
    with Library(tmp_path / "lib") as lib:
        lib.index([tree], model=encoder, index_spec="exact")
        reference = [h.item_id for h in lib.search(text="x", k=40, min_score=-1)]
        index_path = Path(lib.status()["index"][encoder.model_key]["path"])

    data = bytearray(index_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_path.write_bytes(bytes(data))
    with Library(tmp_path / "lib") as lib, caplog.at_level("WARNING"):
        assert [h.item_id for h in lib.search(text="x", k=40, min_score=-1)] == reference
        assert "rebuilding" in caplog.text

    # the catalog moves on without the index (a crash between the two): searches catch up in memory
    # (readers never write), the next index run saves
    make_photo_tree(tree / "more", 5, start_seed=777)
    paths[0].unlink()
    catalog = Catalog(tmp_path / "lib" / "catalog.sqlite")
    ingest(catalog, encoder, [str(tree)])
    catalog.close()
    saved = index_path.read_bytes()
    with Library(tmp_path / "lib") as lib:
        assert not lib.status()["index"][encoder.model_key]["up_to_date"]
        hits = lib.search(text="x", k=100, min_score=-1)
        assert len(hits) == 44 and all(os.path.exists(h.path) for h in hits)
        assert index_path.read_bytes() == saved and not lib.status()["index"][encoder.model_key]["up_to_date"]
        lib.index([tree])
        assert lib.status()["index"][encoder.model_key]["up_to_date"]
        assert [h.item_id for h in lib.search(text="x", k=100, min_score=-1)] == [h.item_id for h in hits]


def test_library_shared_by_threads(indexed):
    from concurrent.futures import ThreadPoolExecutor

    lib, _, _ = indexed
    expected = [h.item_id for h in lib.search(text="a red circle", k=5, min_score=-1)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: lib.search(text="a red circle", k=5, min_score=-1), range(8)))
    assert all([h.item_id for h in r] == expected for r in results)

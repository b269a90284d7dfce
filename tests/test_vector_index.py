"""Vector index: exact search against a numpy reference, Faiss parity, filters, changes, files, tuning."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from xmodal.errors import IndexCorruptError, InvalidArgumentError, StaleIndexError
from xmodal.store.vector_index import (
    AUTO_ANN_SPEC,
    AUTO_EXACT_MAX,
    ExactIndex,
    VectorIndex,
    build_index,
    choose_spec,
    create_index,
    index_file_info,
    tune_index,
)

REFINED = "IVF16,PQ4x4,Refine(SQfp16)"  # 4-bit PQ on 8-d pieces: coarse, so the re-ranking must go deep
DEEP_REFINE = "nprobe=16,k_factor=50"
ALL_SPECS = ["exact", "exact,fp32", "Flat", "HNSW16", "IVF16,Flat", "IVF16,PQ4x4", REFINED]


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread():
    """Faiss's OpenMP threads spin-wait; on the shared 2-core CI machine that makes training and graph
    building 10-100x slower. The exact scan is unaffected (it runs on its own thread pool)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32))


def clustered_unit(n: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    """Points around `clusters` random centres (the same centres for the same seed, whatever n)."""
    centres = unit(np.random.default_rng(seed).standard_normal((clusters, dim), dtype=np.float32))
    rng = np.random.default_rng([seed, n])
    return unit(centres[rng.integers(clusters, size=n)] + 0.25 * rng.standard_normal((n, dim), dtype=np.float32))


def reference(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in float64: top-k by score, ties by insertion position."""
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.array([np.lexsort((np.arange(len(ids)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, axis=1), ids[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def data():
    vectors = random_unit(3000, 64)
    ids = np.random.default_rng(1).permutation(100_000)[:3000].astype(np.int64)  # not sorted, not dense
    queries = random_unit(25, 64, seed=2)
    return ids, vectors, queries


def test_exact_fp32_equals_brute_force(data):
    ids, vectors, queries = data
    scores, found = build_index(ids, vectors, "exact,fp32").search(queries, 10)
    ref_scores, ref_ids = reference(vectors, ids, queries, 10)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert scores.dtype == np.float32 and found.dtype == np.int64


def test_exact_fp16_is_exact_on_stored_vectors_and_recall_vs_float32(data):
    ids, vectors, queries = data
    scores, found = build_index(ids, vectors, "exact").search(queries, 10)
    stored = vectors.astype(np.float16).astype(np.float32)
    ref_scores, ref_ids = reference(stored, ids, queries, 10)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert recall(found, reference(vectors, ids, queries, 10)[1]) >= 0.999


def test_exact_scan_over_many_blocks_in_threads_with_ties():
    """Enough rows for the parallel multi-block scan; repeated vectors tie and come in insertion order."""
    vectors = random_unit(40_000, 16, seed=3)
    twins = [5, 9_000, 17_500, 39_999]
    vectors[twins] = vectors[123]
    ids = np.arange(40_000, dtype=np.int64)[::-1].copy()  # ids descending: ties must follow position, not id
    index = build_index(ids, vectors, "exact,fp32")
    assert len(index._blocks) >= 3
    queries = np.vstack([vectors[123], random_unit(15, 16, seed=4)])
    scores, found = index.search(queries, 10)
    ref_scores, ref_ids = reference(vectors, ids, queries, 10)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_array_equal(found[0, :5], ids[sorted([123, *twins])])
    np.testing.assert_array_equal(index.search(queries[:1], 10)[1], found[:1])  # one query = same answer
    allowed = ids[::3]  # a filter too large to score row by row: block bitmaps in the threaded scan
    scores, found = index.search(queries, 10, allowed=allowed)
    ref_scores, ref_ids = reference(vectors[::3], allowed, queries, 10)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_exact_and_faiss_flat_identical(data):
    ids, vectors, queries = data
    exact_scores, exact_ids = build_index(ids, vectors, "exact,fp32").search(queries, 10)
    flat_scores, flat_ids = build_index(ids, vectors, "Flat").search(queries, 10)
    np.testing.assert_array_equal(exact_ids, flat_ids)
    np.testing.assert_allclose(exact_scores, flat_scores, atol=1e-6)
    np.testing.assert_array_equal(build_index(ids, vectors, "exact").search(queries, 10)[1], flat_ids)


@pytest.mark.parametrize("n_allowed", [50, 5000])  # scored row by row / block scan with a bitmap
def test_allowed_restricts_results(n_allowed):
    vectors = random_unit(12_000, 32, seed=5)
    ids = np.arange(12_000, dtype=np.int64) * 2
    queries = random_unit(8, 32, seed=6)
    allowed = np.random.default_rng(7).choice(ids, size=n_allowed, replace=False)
    allowed_with_strangers = np.concatenate([allowed, [1, 3, 10**9]])  # ids not in the index are ignored
    rows = np.isin(ids, allowed)
    ref_scores, ref_ids = reference(vectors[rows], ids[rows], queries, 10)
    for spec in ["exact", "exact,fp32", "Flat"]:
        scores, found = build_index(ids, vectors, spec).search(queries, 10, allowed=allowed_with_strangers)
        np.testing.assert_array_equal(found, ref_ids, err_msg=spec)
        np.testing.assert_allclose(scores, ref_scores, atol=2e-3, err_msg=spec)


def test_allowed_on_ann_indexes_returns_only_allowed_ids():
    vectors = clustered_unit(4000, 32, 16, seed=8)
    ids = np.arange(4000, dtype=np.int64) + 1000
    allowed = ids[::3]
    queries = vectors[:10]
    truth = reference(vectors[::3], allowed, queries, 10)[1]
    for spec in ["HNSW16", "IVF16,Flat", REFINED]:
        params = DEEP_REFINE if spec == REFINED else None
        found = build_index(ids, vectors, spec).search(queries, 10, allowed=allowed, params=params)[1]
        assert np.isin(found, allowed).all(), spec
        assert recall(found, truth) >= 0.9, spec
        few = build_index(ids, vectors, spec).search(queries, 10, allowed=ids[:40])[1]  # sparse filter
        assert recall(few, reference(vectors[:40], ids[:40], queries, 10)[1]) >= 0.9, spec
    assert (build_index(ids, vectors, "exact").search(queries, 3, allowed=np.array([7]))[1] == -1).all()


def test_padding_when_k_exceeds_count():
    vectors = random_unit(5, 8)
    for spec in ["exact", "Flat", "HNSW8"]:
        scores, found = build_index(np.arange(5), vectors, spec).search(vectors[:2], 8)
        assert found.shape == (2, 8)
        assert (found[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all(), spec
        assert sorted(found[0, :5]) == [0, 1, 2, 3, 4] and found[0, 0] == 0, spec
    scores, found = create_index("exact", 8).search(vectors[:1], 3)
    assert (found == -1).all() and np.isneginf(scores).all()


@pytest.mark.parametrize("spec", ["exact", "Flat", "HNSW16", "IVF16,Flat", REFINED])
def test_add_and_remove(spec):
    vectors = clustered_unit(3000, 32, 16, seed=9)
    ids = np.arange(3000, dtype=np.int64) * 10
    index = build_index(ids[:2000], vectors[:2000], spec)
    index.params = DEEP_REFINE if spec == REFINED else index.params
    index.add(ids[2000:], vectors[2000:])
    assert len(index) == 3000 and set(index.ids) == set(ids)
    with pytest.raises(InvalidArgumentError):
        index.add(ids[:1], vectors[:1])
    gone = ids[::2]
    assert index.remove(np.concatenate([gone, [-5, 7]])) == len(gone)  # unknown ids ignored
    assert index.remove(gone) == 0
    assert len(index) == 1500 and set(index.ids) == set(ids[1::2])
    found = index.search(vectors[:50], 10)[1]
    assert not np.isin(found, gone).any()
    truth = reference(vectors[1::2], ids[1::2], vectors[:50], 10)[1]
    assert recall(found, truth) >= (0.999 if spec in ("exact", "Flat") else 0.9)
    index.add(gone[:10], vectors[::2][:10])  # removed ids can come back
    assert index.search(vectors[:1], 1)[1][0, 0] == ids[0]


def test_hnsw_rebuilds_graph_when_many_removed():
    vectors = random_unit(1000, 16)
    index = build_index(np.arange(1000), vectors, "HNSW8")
    index.remove(np.arange(100))
    assert index.index.ntotal == 1000  # tombstones only
    index.remove(np.arange(100, 300))
    assert index.index.ntotal == 700 and len(index._dead) == 0
    assert index.search(vectors[500:501], 1)[1][0, 0] == 500


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_save_load_round_trip(tmp_path, spec):
    vectors = clustered_unit(2000, 32, 16, seed=10)
    ids = np.arange(2000, dtype=np.int64) * 3 + 1
    index = build_index(ids, vectors, spec)
    index.remove(ids[:30])
    tuned = {
        "HNSW16": "efSearch=40",
        "IVF16,Flat": "nprobe=3",
        "IVF16,PQ4x4": "nprobe=5",
        REFINED: "nprobe=6,k_factor=3",
    }
    index.params = tuned.get(spec, "")
    path = tmp_path / "sub" / "vectors.idx"
    index.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["vectors.idx"]  # no temp file left behind
    loaded = VectorIndex.load(path, expected_ids=np.random.default_rng(0).permutation(ids[30:]))
    assert (loaded.spec, loaded.dim, loaded.params, len(loaded)) == (spec, 32, index.params, 1970)
    np.testing.assert_array_equal(loaded.ids, index.ids)
    for a, b in zip(loaded.search(vectors[:20], 10), index.search(vectors[:20], 10), strict=True):
        np.testing.assert_array_equal(a, b)
    info = index_file_info(path)
    assert (info["spec"], info["count"], info["dim"]) == (spec, 1970, 32)


def _corruptions(path):
    data = path.read_bytes()
    yield "truncated tail", data[:-7]
    yield "truncated middle", data[: len(data) // 2]
    yield "empty", b""
    yield "not an index", b"hello world" * 50
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01  # inside the payload
    yield "payload bit", bytes(flipped)
    flipped = bytearray(data)
    flipped[12] ^= 0x10  # inside the ids
    yield "ids bit", bytes(flipped)
    flipped = bytearray(data)
    flipped[-60] ^= 0x01  # inside the header
    yield "header bit", bytes(flipped)


@pytest.mark.parametrize("spec", ["exact", "HNSW8", "IVF16,PQ4x4"])
def test_corrupt_or_truncated_file_raises(tmp_path, spec):
    vectors = random_unit(1000, 16)
    path = tmp_path / "v.idx"
    build_index(np.arange(1000), vectors, spec).save(path)
    good = path.read_bytes()
    for name, bad in _corruptions(path):
        path.write_bytes(bad)
        for verify in (False, True):  # checked before anything is served, as searched or all at once
            with pytest.raises(IndexCorruptError):
                VectorIndex.load(path, verify=verify).search(vectors[:1], 5)
                pytest.fail(f"{name} not detected")
    path.write_bytes(good)
    assert len(VectorIndex.load(path)) == 1000
    with pytest.raises(IndexCorruptError):
        VectorIndex.load(tmp_path / "missing.idx")


def test_damage_in_a_million_vector_file_is_refused_before_serving(tmp_path):
    """Opening maps the file and checks its frame and ids only; a flipped byte in the middle of the
    vectors is caught by its block's checksum before the scan that reads it returns, a truncated
    file at once."""
    n = 1_000_000
    vectors = random_unit(n, 8, seed=21)
    index = build_index(np.arange(n), vectors, "exact")
    flipped, truncated = tmp_path / "flipped.idx", tmp_path / "truncated.idx"
    index.save(flipped)
    index.save(truncated)
    size = flipped.stat().st_size
    payload_start = 8 + 8 * n
    with open(flipped, "r+b") as file:
        middle = payload_start + (size - payload_start) // 2
        file.seek(middle)
        byte = file.read(1)
        file.seek(middle)
        file.write(bytes([byte[0] ^ 0x04]))
    with open(truncated, "r+b") as file:
        file.truncate(size - 4096)
    opened = VectorIndex.load(flipped)  # frame and ids are fine: opens
    with pytest.raises(IndexCorruptError, match="does not match its checksum"):
        opened.search(vectors[:1], 10)
    with pytest.raises(IndexCorruptError, match="does not match its checksum"):
        VectorIndex.load(flipped, verify=True)
    with pytest.raises(IndexCorruptError, match="truncated|size"):
        VectorIndex.load(truncated)
    index.save(flipped)  # rewritten whole: served again, same answers
    np.testing.assert_array_equal(
        VectorIndex.load(flipped).search(vectors[:3], 10)[1], index.search(vectors[:3], 10)[1]
    )


def test_stale_ids_raise(tmp_path):
    vectors = random_unit(100, 8)
    path = tmp_path / "v.idx"
    build_index(np.arange(100), vectors, "exact").save(path)
    for catalog in [np.arange(101), np.arange(99), np.arange(1, 101)]:
        with pytest.raises(StaleIndexError):
            VectorIndex.load(path, expected_ids=catalog)
    assert len(VectorIndex.load(path, expected_ids=np.arange(100)[::-1])) == 100


@pytest.mark.parametrize("spec", ["IVF64,Flat", "HNSW16"])
def test_tune_picks_cheapest_setting_meeting_target(spec):
    vectors = clustered_unit(6000, 32, 64, seed=11)
    ids = np.arange(6000, dtype=np.int64)
    index = build_index(ids, vectors, spec)
    report = tune_index(index, vectors, target_recall=0.95)
    recalls = [s.recall for s in report.settings]
    assert report.met and index.params == report.chosen == report.settings[-1].params
    assert recalls[-1] >= 0.95 and all(r < 0.95 for r in recalls[:-1])
    assert all(0 <= r <= 1 and s.qps > 0 for r, s in zip(recalls, report.settings, strict=True))
    queries = clustered_unit(200, 32, 64, seed=11)  # fresh queries from the same clusters
    truth = reference(vectors, ids, queries, 10)[1]
    assert recall(index.search(queries, 10)[1], truth) >= 0.93


def test_refined_ivf_pq_recovers_recall_lost_to_pq_codes():
    vectors = clustered_unit(4000, 32, 16, seed=13)
    ids = np.arange(4000, dtype=np.int64)
    queries = clustered_unit(100, 32, 16, seed=13)
    truth = reference(vectors, ids, queries, 10)[1]
    plain = build_index(ids, vectors, "IVF16,PQ4x4").search(queries, 10, params="nprobe=16")[1]
    refined = build_index(ids, vectors, REFINED)
    assert refined.search_param_names() == ("nprobe", "k_factor")
    assert recall(plain, truth) < 0.6
    assert recall(refined.search(queries, 10, params=DEEP_REFINE)[1], truth) >= 0.95


def test_tune_keeps_parameters_it_does_not_sweep():
    vectors = clustered_unit(3000, 32, 16, seed=14)
    index = build_index(np.arange(3000), vectors, REFINED)
    index.params = "nprobe=2,k_factor=50"
    report = tune_index(index, vectors, target_recall=0.9)
    assert all(s.params.endswith(",k_factor=50") for s in report.settings)
    assert report.met and index.params == report.chosen and index.params.endswith(",k_factor=50")


def test_tune_reports_when_target_is_out_of_reach():
    vectors = random_unit(3000, 32)
    index = build_index(np.arange(3000), vectors, "IVF16,PQ4x4")
    report = tune_index(index, vectors, target_recall=0.99)
    assert not report.met
    assert report.chosen == max(report.settings, key=lambda s: s.recall).params == index.params
    assert len(report.settings) == 5  # nprobe 1, 2, 4, 8, 16


def test_auto_spec_and_bad_arguments():
    assert choose_spec(AUTO_EXACT_MAX) == "exact" and choose_spec(AUTO_EXACT_MAX + 1) == AUTO_ANN_SPEC
    vectors = random_unit(50, 8)
    index = build_index(np.arange(50), vectors)
    assert isinstance(index, ExactIndex) and index.spec == "exact"
    for bad in [
        lambda: build_index(np.arange(50), vectors, "NoSuchIndex"),
        lambda: build_index(np.arange(50), vectors, "exact,int3"),
        lambda: build_index(np.arange(50), vectors, "IVF1024,Flat"),  # fewer vectors than lists
        lambda: build_index(np.arange(49), vectors),
        lambda: build_index(np.zeros(50, dtype=np.int64), vectors),
        lambda: index.search(vectors[:, :4], 3),
        lambda: index.search(vectors, 0),
        lambda: index.search(vectors, 3, params="nprobe=4"),
        lambda: build_index(np.arange(50), vectors, "HNSW8").search(vectors, 3, params="efSearch"),
        lambda: index.add(np.arange(50, 51), np.full((1, 8), np.nan, dtype=np.float32)),
    ]:
        with pytest.raises(InvalidArgumentError):
            bad()

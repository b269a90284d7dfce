"""embed-dataset (sources, shards, resume), import into a library, the large index built from
shards and served memory-mapped — and a real two-node Ray cluster that loses its worker mid-job."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from xmodal.datasets import SynthConfig, generate_synth_shapes
from xmodal.errors import InvalidArgumentError, LibraryError
from xmodal.library import Library
from xmodal.models import load_model
from xmodal.scale.dataset import EmbedDatasetOptions, embed_dataset
from xmodal.scale.index import (
    ShardedIndex,
    build_sharded_index,
    choose_spec,
    estimate_bytes,
    parse_memory,
    query_model,
    search_embeddings,
)
from xmodal.scale.shards import SHARDS, EmbeddingsFolderError, finished_shards, read_manifest
from xmodal.scale.synthetic import write_synthetic_embeddings

MODEL = "xmodal-tiny-shapes"
SRC = Path(__file__).resolve().parents[1] / "src"
OFF = EmbedDatasetOptions(ray="off", shard_size=10)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    generate_synth_shapes(folder, SynthConfig(n=36, seed=5))
    return folder


@pytest.fixture(scope="module")
def encoder():
    return load_model(MODEL)


def _rows(out: Path) -> list[dict]:
    return [row for shard in finished_shards(out) for row in shard.table().to_pylist()]


def _image_vectors(out: Path) -> dict[str, np.ndarray]:
    """path -> stored float32 image vector."""
    found = {}
    for shard in finished_shards(out):
        vectors = shard.image_vectors()
        for row in shard.table().to_pylist():
            if row["image_row"] >= 0:
                found[os.fsdecode(row["path_bytes"])] = np.asarray(vectors[row["image_row"]], dtype=np.float32)
    return found


def _min_cosine(got: np.ndarray, want: np.ndarray) -> float:
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    return float(np.min(np.sum(got * want, axis=1)))


def test_folder_source_matches_the_local_pipeline(shapes: Path, encoder, tmp_path: Path) -> None:
    report = embed_dataset(shapes / "images", tmp_path / "out", MODEL, OFF)
    assert (report.shards, report.embedded, report.items, report.ok, report.failed) == (4, 4, 36, 36, 0)
    rows = _rows(tmp_path / "out")
    paths = sorted(str(p) for p in (shapes / "images").iterdir())
    assert [os.fsdecode(r["path_bytes"]) for r in rows] == paths  # every file once, in walk order
    assert len({r["id"] for r in rows}) == 36
    stored = _image_vectors(tmp_path / "out")
    assert _min_cosine(np.stack([stored[p] for p in paths]), encoder.embed_images(paths)) >= 0.9999
    manifest = read_manifest(tmp_path / "out")
    assert manifest["model"]["key"] == encoder.model_key and manifest["counts"]["ok"] == 36
    assert all(
        len(s["files"]) == 3 and all(len(f["sha256"]) == 64 for f in s["files"].values()) for s in manifest["shards"]
    )


def test_videos_and_documents_are_recorded_not_embedded(shapes: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((shapes / "images" / "000001.jpg").read_bytes())
    (folder / "notes.txt").write_text("a document about circles")
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    report = embed_dataset(folder, tmp_path / "out", MODEL, OFF)
    assert (report.items, report.ok, report.pending, report.failed) == (3, 1, 2, 0)
    rows = {Path(r["path"]).name: r for r in _rows(tmp_path / "out")}
    assert rows["a.jpg"]["image_row"] == 0 and len(_image_vectors(tmp_path / "out")) == 1
    for name in ("notes.txt", "clip.mp4"):
        assert rows[name]["status"] == "pending" and "not embedded by embed-dataset" in rows[name]["error"]


def test_captions_source_embeds_captions_too(shapes: Path, encoder, tmp_path: Path) -> None:
    annotations = json.loads((shapes / "dataset_synth_shapes.json").read_text())["images"]
    captions = {a["filename"]: [s["raw"] for s in a["sentences"]] for a in annotations}
    report = embed_dataset(shapes / "dataset_synth_shapes.json", tmp_path / "out", MODEL, OFF)
    assert (report.items, report.captions) == (36, 36 * 5)
    texts, rows = [], []
    for shard in finished_shards(tmp_path / "out"):
        table = shard.table().to_pylist()
        vectors = shard.text_vectors()
        for row in table:
            assert row["captions"] == captions[Path(row["path"]).name]
            texts += row["captions"]
            rows.append(np.asarray(vectors[row["text_row"] : row["text_row"] + len(row["captions"])], np.float32))
    assert _min_cosine(np.concatenate(rows), encoder.embed_texts(texts)) >= 0.9999


def test_file_list_records_missing_and_broken_files(shapes: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not a picture at all")
    listing = tmp_path / "files.txt"
    listing.write_text(f"{shapes / 'images' / '000001.jpg'}\nmissing.jpg\n\n# a comment\nbroken.jpg\n")
    report = embed_dataset(listing, tmp_path / "out", MODEL, OFF)
    assert (report.items, report.ok, report.failed) == (3, 1, 2)
    rows = {Path(r["path"]).name: r for r in _rows(tmp_path / "out")}
    assert rows["000001.jpg"]["status"] == "ok" and rows["000001.jpg"]["image_row"] == 0
    assert rows["missing.jpg"]["status"] == "failed" and "read" in rows["missing.jpg"]["error"]
    assert rows["broken.jpg"]["status"] == "failed" and rows["broken.jpg"]["image_row"] == -1
    assert rows["broken.jpg"]["error"]


def test_resume_redoes_only_unfinished_shards(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    embed_dataset(shapes / "images", out, MODEL, OFF)
    before = _image_vectors(out)
    shards = out / SHARDS
    (shards / "000001.done.json").unlink()  # killed after its files, before its marker
    (shards / "000002.image.npy").write_bytes(b"torn")  # a file that is not what its marker says
    (shards / ".000003.parquet.abc.tmp").write_bytes(b"half")  # a writer killed mid-file
    report = embed_dataset(shapes / "images", out, MODEL, OFF)
    assert (report.skipped, report.embedded, report.ok) == (2, 2, 36)
    assert not list(shards.glob(".*.tmp"))
    after = _image_vectors(out)
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[p], before[p]) for p in before)
    again = embed_dataset(shapes / "images", out, MODEL, OFF)
    assert (again.skipped, again.embedded) == (4, 0)


def test_a_folder_of_another_model_is_refused(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    embed_dataset(shapes / "images", out, MODEL, OFF)
    marker = out / SHARDS / "000000.done.json"
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "model_key": "other@fp32:0123"}))
    with pytest.raises(EmbeddingsFolderError, match="other@fp32:0123"):
        embed_dataset(shapes / "images", out, MODEL, OFF)


def test_webdataset_tars_give_the_folders_embeddings(shapes: Path, tmp_path: Path) -> None:
    images = sorted((shapes / "images").iterdir())
    tars = tmp_path / "tars"
    tars.mkdir()
    for n, start in enumerate((0, 20)):
        with tarfile.open(tars / f"shard-{n:04d}.tar", "w") as tar:
            for path in images[start : start + 20]:
                key = path.stem
                tar.add(path, arcname=f"{key}{path.suffix}")
                caption = f"caption of {key}".encode()
                info = tarfile.TarInfo(f"{key}.txt")
                info.size = len(caption)
                tar.addfile(info, io.BytesIO(caption))
            info = tarfile.TarInfo("orphan.json")  # metadata without an image: no item
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    report = embed_dataset(tars, tmp_path / "out", MODEL, OFF)
    assert (report.shards, report.items, report.ok, report.captions) == (2, 36, 36, 36)
    rows = _rows(tmp_path / "out")
    members = [r["path"].partition(".tar#")[2] for r in rows]
    assert all(r["captions"] == [f"caption of {Path(m).stem}"] for r, m in zip(rows, members, strict=True))
    assert sorted(members) == sorted(p.name for p in images)
    embed_dataset(shapes / "images", tmp_path / "folder", MODEL, OFF)
    by_hash = {r["content_hash"]: r for r in _rows(tmp_path / "folder")}
    from_tar, from_folder = _image_vectors(tmp_path / "out"), _image_vectors(tmp_path / "folder")
    for row in rows:
        twin = os.fsdecode(by_hash[row["content_hash"]]["path_bytes"])
        assert np.array_equal(from_tar[os.fsdecode(row["path_bytes"])], from_folder[twin])


def test_import_into_a_library_searches_without_model_work(shapes: Path, encoder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    embed_dataset(shapes / "dataset_synth_shapes.json", out, MODEL, OFF)
    with Library(tmp_path / "lib") as lib:
        report = lib.import_embeddings(out)
        assert (report.added, report.encoded, report.reused, len(report.failed)) == (36, 0, 36, 0)
        assert lib.status()["items"]["image"] == 36
        stored = lib.vectors()
        shard_vectors = _image_vectors(out)
        want = np.stack([shard_vectors[p] for p in stored.paths])
        assert _min_cosine(want, stored.vectors) >= 0.9999
        assert np.allclose(np.linalg.norm(stored.vectors, axis=1), 1, atol=1e-6)
        hits = lib.search("a red circle", k=5)
        assert len(hits) == 4  # the shipped model's text -> image floor keeps 4 of the 5 best
        again = lib.import_embeddings(out)
        assert (again.added, again.updated, again.unchanged) == (0, 0, 36)
        build_sharded_index(out)
        direct = search_embeddings(ShardedIndex(out), encoder, "a red circle", k=5)
        assert [h.path for h in direct] == [h.path for h in hits]
        assert np.allclose([h.score for h in direct], [h.score for h in hits], atol=2e-3)


def test_import_refuses_another_models_embeddings(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    embed_dataset(shapes / "images", out, MODEL, OFF)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["model"]["key"] = "xmodal-tiny-shapes@fp32:ffffffffffffffff"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with Library(tmp_path / "lib") as lib, pytest.raises(LibraryError, match="not of"):
        lib.import_embeddings(out)


def test_memory_budget_picks_the_best_code_that_fits() -> None:
    assert parse_memory("4G") == 4 * 2**30 and parse_memory("512MiB") == 512 * 2**20 and parse_memory("1.5K") == 1536
    with pytest.raises(InvalidArgumentError, match="max-index-memory"):
        parse_memory("lots")
    n, d = 10_000_000, 512
    assert choose_spec(n, d, parse_memory("16G")) == "IVF4096_HNSW32,SQfp16"  # 2 bytes a dimension fit
    assert choose_spec(n, d, parse_memory("6G")) == "IVF4096_HNSW32,SQ8"
    assert choose_spec(n, d, parse_memory("2G")) == "IVF4096_HNSW32,PQ128"
    spec = choose_spec(n, d, parse_memory("1G"))
    assert spec == "IVF4096_HNSW32,PQ64" and estimate_bytes(spec, n, d) <= 2**30
    with pytest.raises(InvalidArgumentError, match="at least"):
        choose_spec(n, d, parse_memory("100M"))


def test_sharded_index_within_budget_served_memory_mapped(tmp_path: Path) -> None:
    folder = write_synthetic_embeddings(
        tmp_path / "emb", 24_000, 32, shard_size=6_000, distribution="clustered", clusters=300
    )
    info = build_sharded_index(folder, max_memory="1M", target_recall=0.8, queries=200)
    assert info["spec"] == choose_spec(24_000, 32, parse_memory("1M")) == "IVF128,SQ8"
    assert info["index_bytes"] <= parse_memory("1M") and abs(info["index_bytes"] / info["estimated_bytes"] - 1) < 0.3
    index = ShardedIndex(folder)
    assert index.mapped and len(index) == 24_000
    # recall measured here, independently of the build: exact search over every stored vector
    ids = np.concatenate([s.table(["id"])["id"].to_numpy() for s in finished_shards(folder)])
    vectors = np.concatenate([np.asarray(s.image_vectors(), np.float32) for s in finished_shards(folder)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(7)
    queries = vectors[rng.choice(len(vectors), 100, replace=False)] + rng.normal(0, 0.1, (100, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :10]]
    _, found = index.search(queries, 10)
    recall = np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.75 and info["recall_at_10"] >= 0.8
    rows = index.metadata(found[0][:3])
    assert [r["path_bytes"].decode() for r in rows] == [f"synthetic/{i}" for i in found[0][:3]]


def test_pq_index_from_shards_finds_stored_vectors(tmp_path: Path) -> None:
    folder = write_synthetic_embeddings(tmp_path / "emb", 4_000, 16, shard_size=1_500, distribution="clustered")
    info = build_sharded_index(folder, spec="IVF16,PQ8", target_recall=0.5, queries=100)
    index = ShardedIndex(folder)
    assert index.mapped and index.index.spec == "IVF16,PQ8" and info["recall_at_10"] >= 0.5
    vectors = np.asarray(next(finished_shards(folder)).image_vectors()[:20], np.float32)
    _, found = index.search(vectors, 10)
    assert np.mean([i in row for i, row in enumerate(found)]) >= 0.8  # a stored vector finds itself (ids 0..19)


def test_opq_specs_are_ivf_indexes() -> None:
    from xmodal.store.index.faiss_ann import FaissIndex

    index = FaissIndex.create("OPQ4,IVF16,PQ4", 16)
    assert index.ivf is not None and index.ivf.nlist == 16
    assert index.params == "nprobe=8" and index.search_param_names() == ("nprobe",)


def test_an_index_of_another_manifest_is_refused(tmp_path: Path) -> None:
    folder = write_synthetic_embeddings(tmp_path / "emb", 3_000, 16, shard_size=1_000)
    build_sharded_index(folder, queries=50)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "updated_at": 0}))
    with pytest.raises(EmbeddingsFolderError, match="build it again"):
        ShardedIndex(folder)


def test_cli_embed_build_search(shapes: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    run = [sys.executable, "-m", "xmodal"]
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *run,
            "embed-dataset",
            str(shapes / "images"),
            "--out",
            str(out),
            "-m",
            MODEL,
            "--ray",
            "off",
            "--shard-size",
            "12",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] == 36
    built = subprocess.run([*run, "build-index", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0 and "recall@10 1.000" in built.stdout, built.stderr
    found = subprocess.run(
        [*run, "search", "a green star", "--embeddings", str(out), "-k", "3", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert len(hits) == 3 and all(Path(h["path"]).parent == shapes / "images" for h in hits)
    bad = subprocess.run(
        [*run, "search", "x", "--embeddings", str(out), "--type", "video"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--embeddings" in bad.stderr


def test_serve_answers_over_an_embeddings_folder(shapes: Path, tmp_path: Path) -> None:
    from serve_helpers import multipart, running_server
    from xmodal.serve.state import ServedEmbeddings

    out = tmp_path / "out"
    embed_dataset(shapes / "images", out, MODEL, OFF)
    build_sharded_index(out)
    index = ShardedIndex(out)
    served = ServedEmbeddings(index, query_model(index))
    photo = sorted((shapes / "images").glob("*.png"))[3]
    with running_server(embeddings=served) as server:
        client = server.client
        found = client.get("/api/embeddings/search", params={"q": "a red circle", "k": 5})
        assert found.status_code == 200
        assert found.json() == search_embeddings(index, served.encoder, "a red circle", k=5).to_dict()
        assert len(found.json()["hits"]) == 4  # the model's text -> image floor, as a library search
        body, content_type = multipart(("image", photo.read_bytes(), {"filename": "x.png"}), ("k", "3", None))
        by_image = client.post("/api/embeddings/search", content=body, headers={"content-type": content_type})
        assert by_image.status_code == 200, by_image.text
        best = by_image.json()["hits"][0]
        assert best["path"] == str(photo) and best["score"] == pytest.approx(1, abs=1e-3)
        info = client.get("/api/embeddings").json()
        assert info["counts"]["items"] == 36 and info["index"]["count"] == 36
        assert info["index"]["memory_mapped"] == index.mapped and str(tmp_path) not in json.dumps(info)
        assert client.get("/api/embeddings/search").status_code == 422
        library = client.get("/api/search", params={"q": "x"})
        assert library.status_code == 503 and "embeddings folder" in library.json()["detail"]


def test_two_node_ray_cluster_survives_losing_its_worker(shapes: Path, encoder, tmp_path: Path) -> None:
    """A head (coordinating only) and one worker node, started with `ray start` on loopback; the
    worker is killed (SIGKILL, every process of it) mid-job and started again; the job finishes
    with every item once and the local pipeline's embeddings."""
    pytest.importorskip("ray")
    from ray_helpers import LocalCluster, ray_cli

    if ray_cli() is None:
        pytest.skip("the `ray` command is not installed beside this Python")
    cluster = LocalCluster(tmp_path, str(SRC), worker_cpus=2)
    out = tmp_path / "out"
    try:
        cluster.start()
        job = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xmodal",
                "embed-dataset",
                str(shapes / "dataset_synth_shapes.json"),
                "--out",
                str(out),
                "-m",
                MODEL,
                "--ray",
                cluster.address,
                "--shard-size",
                "3",
                "--num-workers",
                "2",
                "--json",
            ],
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 90
        while len(list((out / SHARDS).glob("*.done.json"))) < 2 and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.05)
        cluster.kill_worker()
        finished_at_kill = len(list((out / SHARDS).glob("*.done.json")))
        assert 2 <= finished_at_kill < 12, "the worker must die with shards still to do"
        cluster.wait_for_nodes(1)
        time.sleep(1)
        assert len(list((out / SHARDS).glob("*.done.json"))) == finished_at_kill  # nothing runs without a worker
        restarted = time.time()
        cluster.start_worker()
        stdout, stderr = job.communicate(timeout=120)
        assert job.returncode == 0, stderr[-3000:]
    finally:
        if "job" in locals() and job.poll() is None:
            job.kill()
        cluster.stop()
    report = json.loads(stdout[stdout.index("{") :])  # the driver may print the cluster's warnings first
    assert (report["shards"], report["items"], report["ok"], report["captions"]) == (12, 36, 36, 180)
    assert "2 nodes at 127.0.0.2, 127.0.0.3" in report["runner"]
    markers = [s.marker for s in finished_shards(out)]
    assert sum(m["finished_at"] > restarted for m in markers) >= 1  # the restarted worker did the rest
    rows = _rows(out)
    paths = [os.fsdecode(r["path_bytes"]) for r in rows]
    assert len(paths) == len(set(paths)) == 36 and len({r["id"] for r in rows}) == 36
    assert set(paths) == {str(p) for p in (shapes / "images").iterdir()}
    stored, local = _image_vectors(out), _image_vectors(_local_run(shapes, tmp_path / "local"))
    assert _min_cosine(np.stack([stored[p] for p in paths]), np.stack([local[p] for p in paths])) >= 0.9999
    assert _min_cosine(np.stack([stored[p] for p in paths]), encoder.embed_images(paths)) >= 0.9999


def _local_run(shapes: Path, out: Path) -> Path:
    """The same source through the same stage in this process, no Ray: the reference."""
    embed_dataset(shapes / "dataset_synth_shapes.json", out, MODEL, OFF)
    return out

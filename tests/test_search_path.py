"""What a one-shot `xmodal search` costs and trusts: the modules it imports (checked with `python -X
importtime`), a damaged saved index that is refused before it serves anything, and `status --verify`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xmodal
from library_helpers import make_photo_tree
from xmodal.library import Library

SRC = str(Path(xmodal.__file__).parents[1])
# Modules a text search over an exact index must not load: each costs tens of milliseconds (or, for
# torch, seconds) on every call, and none is needed to embed a text and scan float16 vectors.
NOT_ON_THE_SEARCH_PATH = ("torch", "faiss", "matplotlib", "transformers", "PIL", "pydantic", "rich", "av", "fastapi")


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("search-path")
    make_photo_tree(root / "photos", 12)
    with Library(root / "lib") as lib:
        lib.index([root / "photos"], model="xmodal-tiny-shapes")
    return root / "lib"


def xmodal_cli(*args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "xmodal", *args]
    return subprocess.run(command, capture_output=True, env=env, timeout=120)


def imported_modules(importtime_stderr: str) -> set[str]:
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", importtime_stderr, flags=re.M)
    return {name.split(".")[0] for name in names}


def test_text_search_imports_only_what_it_needs(library: Path):
    done = xmodal_cli("search", "a red circle", "-l", str(library), "-k", "3", "--format", "paths", importtime=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert len(done.stdout.splitlines()) == 3
    modules = imported_modules(done.stderr.decode())
    assert {"xmodal", "numpy", "onnxruntime"} <= modules  # the parse really saw the imports
    assert not modules & set(NOT_ON_THE_SEARCH_PATH), sorted(modules & set(NOT_ON_THE_SEARCH_PATH))


def test_other_commands_do_not_load_the_search_machinery():
    done = xmodal_cli("--version", importtime=True)
    assert done.returncode == 0 and done.stdout.decode().startswith("xmodal ")
    modules = imported_modules(done.stderr.decode())
    assert not modules & {"numpy", "onnxruntime", "PIL", "faiss", "pydantic", "rich", "torch"}


def test_damaged_index_is_refused_rebuilt_and_rewritten(library: Path, tmp_path: Path, caplog):
    with Library(library) as lib:
        expected = [h.item_id for h in lib.search("a red circle", k=5)]
        path = lib._indexes.path(lib.catalog.models()[0].key)
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[8 + 8 * 12 + 100] ^= 0x20  # a byte of the vectors (after the 12 ids)
    path.write_bytes(bytes(damaged))
    try:
        with Library(library) as lib:
            with caplog.at_level("WARNING"):
                found = [h.item_id for h in lib.search("a red circle", k=5)]
            assert found == expected  # served from the catalog, not from the damaged block
            assert "does not match its checksum" in caplog.text
            index = lib.status(verify=True)["index"]
            (info,) = index.values()
            assert info["verified"] is False and "checksum" in info["problem"]
        done = xmodal_cli("status", "-l", str(library), "--verify")
        assert done.returncode == 1 and b"DAMAGED" in done.stdout
        with Library(library) as lib:
            lib.index()  # the writer rewrites what it finds damaged, then verifies what it wrote
            (info,) = lib.status(verify=True)["index"].values()
            assert info["verified"] is True and info["up_to_date"]
        done = xmodal_cli("status", "-l", str(library), "--verify", "--json")
        assert done.returncode == 0
        assert all(i["verified"] for i in json.loads(done.stdout)["index"].values())
    finally:
        path.write_bytes(good)


def test_index_file_is_mapped_not_read(library: Path):
    """Opening a saved exact index costs its header and ids: the vectors stay on disk until scanned."""
    from xmodal.store.index.exact import ExactIndex
    from xmodal.store.vector_index import VectorIndex

    with Library(library) as lib:
        path = lib._indexes.path(lib.catalog.models()[0].key)
    index = VectorIndex.load(path)
    assert isinstance(index, ExactIndex) and index._mapped == len(index._blocks) >= 1
    assert not index._file._verified.any()  # nothing checked (so nothing read) yet
    index.search(np.ones((1, index.dim), np.float32) / np.sqrt(index.dim), 3)
    assert index._file._verified.all()


def test_text_queries_are_cached_by_model_language_and_text(library: Path, monkeypatch):
    from xmodal.models.encoder import Encoder
    from xmodal.store.query_cache import CACHE_FILE

    (library / CACHE_FILE).unlink(missing_ok=True)
    encoded: list[list[str]] = []
    original = Encoder.embed_queries

    def counting(self, texts, language=None, **kwargs):
        encoded.append(list(texts))
        return original(self, texts, language, **kwargs)

    monkeypatch.setattr(Encoder, "embed_queries", counting)
    with Library(library) as lib:
        first = lib.search("a red circle", k=5)
    with Library(library) as lib:  # another process's view: the cache is a file in the library folder
        again = lib.search("a red circle", k=5)
        assert lib._encoders == {}  # answered from the cache: the model was never loaded
        combined = lib.search("a red circle + a blue square", k=5)
    assert encoded == [["a red circle"], ["a blue square"]]
    assert [(h.item_id, h.score) for h in again] == [(h.item_id, h.score) for h in first]
    with Library(library) as lib:
        direct = lib.encoder().embed_queries(["a red circle", "a blue square"])
        expected = direct.sum(0) / np.linalg.norm(direct.sum(0))
        rows = lib.vectors()
        best = rows.ids[np.argmax(rows.vectors @ expected)]
    assert combined[0].item_id == best


def test_query_cache_on_read_only_folder_still_searches(library: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "ro"
    shutil.copytree(library, copy)
    (copy / "queries.sqlite").unlink(missing_ok=True)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        if os.access(copy, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): read-only media cannot be simulated")
        with Library(copy) as lib:
            assert len(lib.search("a red circle", k=3)) == 3
        assert not (copy / "queries.sqlite").exists()
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_search_uses_a_resident_server_of_the_library_when_one_listens(library: Path):
    import time

    from xmodal.cli.resident import resident_search
    from xmodal.serve.resident import ADDRESS_FILE, SOCKET_FILE

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from xmodal.serve.resident import serve_library; serve_library(sys.argv[1])",
            str(library),
        ],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (library / ADDRESS_FILE).exists():
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        for args in (
            ["a red circle"],
            ["a blue square", "--format", "json"],
            ["a red circle", "--format", "tsv", "-k", "4"],
        ):
            local = xmodal_cli("search", *args, "-l", str(library), "--local")
            served = xmodal_cli("search", *args, "-l", str(library), importtime=True)
            assert served.returncode == local.returncode == 0, served.stderr.decode()[-2000:]
            assert served.stdout == local.stdout  # same results, byte for byte
            assert "onnxruntime" not in imported_modules(served.stderr.decode())  # the server did the work
        refused = xmodal_cli("search", "a red circle", "-l", str(library), "-k", "0")
        assert refused.returncode == 1 and b"invalid -k 0" in refused.stderr
        with pytest.raises(xmodal.XmodalError, match="search parameters must be among"):
            resident_search(library, {"text": "x", "image": "/etc/passwd"})
    finally:
        server.terminate()
        server.wait(30)
    deadline = time.monotonic() + 10
    while (library / ADDRESS_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (library / ADDRESS_FILE).exists() and not (library / SOCKET_FILE).exists()
    assert resident_search(library, {"text": "a red circle"}) is None  # nobody listens: searched here


def test_int8_query_tower_only_where_it_agrees_with_fp32(clip_model_dir: Path, monkeypatch):
    from xmodal import settings
    from xmodal.models import quantize, query_tower

    monkeypatch.setenv("XMODAL_QUERY_INT8", "1")
    settings.configure()

    encoder = xmodal.load_model(clip_model_dir)
    assert query_tower.ready_path(encoder.config.textual_path) is None  # not prepared: fp32 answers
    texts = ["a red circle", "two dogs on a beach at sunset"]
    np.testing.assert_array_equal(encoder.embed_queries(texts), encoder.embed_texts(texts))
    verdict = encoder.prepare_queries()["int8"]
    assert verdict["probe_texts"] == len(quantize.PROBE_TEXTS) and verdict["ok"] == (verdict["min_cosine"] >= 0.999)
    assert encoder.prepare_queries()["int8"] == verdict  # measured once per model and CPU kind
    fresh = xmodal.load_model(clip_model_dir)
    queries, plain = fresh.embed_queries(texts), fresh.embed_texts(texts)
    if verdict["ok"]:
        assert fresh._sessions["query"] is not None and np.sum(queries * plain, axis=1).min() >= 0.999
    else:
        assert fresh._sessions["query"] is None
        np.testing.assert_array_equal(queries, plain)
    assert xmodal.load_model(clip_model_dir, precision="int8").prepare_queries() == {}  # int8 models: as they are
    monkeypatch.setenv("XMODAL_QUERY_INT8", "0")
    settings.configure()
    np.testing.assert_array_equal(xmodal.load_model(clip_model_dir).embed_queries(texts), plain)  # off by default


def test_mapped_query_tower_gives_the_fp32_embeddings_and_maps_its_weights(clip_model_dir: Path, monkeypatch):
    """The mapped copy (optimized graph, weights in their own file, no prepacking) embeds queries
    as the model's own tower does; small graphs get none; a resident process keeps the own tower."""
    import onnx

    from xmodal import settings
    from xmodal.models import query_tower

    monkeypatch.setenv("XMODAL_QUERY_INT8", "0")
    settings.configure()
    encoder = xmodal.load_model(clip_model_dir)
    assert encoder.prepare_queries() == {}  # a small text graph: opening it as it is costs little
    monkeypatch.setattr(query_tower, "MAPPED_MIN_BYTES", 0)
    verdict = encoder.prepare_queries()["mapped"]
    assert verdict["ok"] and verdict["min_cosine"] >= 0.99999
    graph = query_tower.ready_path(encoder.config.textual_path, "mapped")
    weights = graph.with_name("model.weights")
    assert weights.stat().st_size > 0.9 * encoder.config.textual_path.stat().st_size  # the weights live outside
    external = [t for t in onnx.load(str(graph), load_external_data=False).graph.initializer if t.external_data]
    assert external and graph.stat().st_size < weights.stat().st_size / 10
    texts = ["a red circle", "two dogs on a beach at sunset", "receipt"]
    fresh = xmodal.load_model(clip_model_dir)
    queries, plain = fresh.embed_queries(texts), fresh.embed_texts(texts)
    assert fresh._sessions["query"].path == graph
    np.testing.assert_allclose(queries, plain, atol=2e-5)
    np.testing.assert_array_equal(fresh.embed_queries(texts, resident=True), plain)
    assert fresh._sessions["query resident"] is None


def test_a_warmed_up_library_embeds_queries_as_a_long_lived_process(library: Path):
    """A resident server's library keeps the model's own prepacked text tower (never the mapped
    one-shot copy) and has read its index before the first search."""
    with Library(library) as lib:
        lib.warm_up()
        (encoder,) = lib._encoders.values()
        assert "query resident" in encoder._sessions and "query" not in encoder._sessions
        assert len(lib.search("a green triangle seen from far away", k=3, min_score=-1)) == 3
        assert "query" not in encoder._sessions

"""How long `xmodal search "text"` takes as a new process, where the time goes, and the same beside
rclip, an older xmodal tree and a resident server — side by side in one run.

A ViT-B/32-geometry CLIP (random weights, real sizes: 256 px like rclip's ViT-B-32-256, 77 text
tokens) is built once and exported for both tools (rclip gets the same graphs with its input and
output names). Libraries of N items are written straight through the store API — catalog rows,
one random unit vector per item, then the index the writer would save — instead of indexing N
photos; rclip's database of the same size is written through rclip's own `DB` class. Every search
is a new process with the files in the OS cache (one untimed warm-up each) and a text no earlier
search used (xmodal caches query embeddings: the cached case is its own row). Variants are
interleaved in rounds; each reports its median, and the load average is printed with each round.

    python benchmarks/cli_latency.py --work DIR [--sizes 2000,20000,100000,1000000] [--rounds 5] \\
        [--baseline-src OLD_TREE/src] [--rclip] [--index-photos 24] [--warm 40] [--warm-index HNSW32,SQfp16]

Needs the [torch] extra once (to build the model; --work keeps it and the libraries between runs)
and, for --rclip, installs rclip from the registry into its own venv under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
RCLIP_VERSION = "3.3.0"
RCLIP_MODEL = "ViT-B-32-256-datacomp_s34b_b86k"
WORDS = "red blue green dog cat beach tree car house boat sunset mountain river city flower bird".split()
PHOTO_ROOT = "/bench/photos"
XMODAL_SEARCH = [sys.executable, "-m", "xmodal", "search"]


# -- the model, for both tools -----------------------------------------------------------------
def ensure_model(work: Path) -> Path:
    folder = work / "vitb32-256"
    if not (folder / "config.json").exists():
        from helpers import make_clip_checkpoint  # noqa: F401  (the real CLIP tokenizer builder)
        from xmodal.models.export import export_hf_checkpoint

        checkpoint = _checkpoint_256(work / "ckpt")
        export_hf_checkpoint(checkpoint, folder, overwrite=True)
        shutil.rmtree(work / "ckpt", ignore_errors=True)
    return folder


def _checkpoint_256(folder: Path) -> Path:
    """ViT-B/32 at 256 px (rclip's ViT-B-32-256 geometry), random init, CLIP's real vocabulary."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from helpers import clip_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(vision_config={"image_size": 256})
    CLIPModel(config).eval().save_pretrained(str(folder))
    clip_tokenizer(folder / "_vocab").save_pretrained(str(folder))
    CLIPImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 256, "width": 256}).save_pretrained(
        str(folder)
    )
    return folder


def ensure_rclip(work: Path, model: Path) -> tuple[Path, Path]:
    """rclip in its own venv, and a data folder holding the same graphs under rclip's names."""
    venv = work / "rclip-venv"
    if not (venv / "bin" / "rclip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"rclip=={RCLIP_VERSION}"], check=True)
    models = work / "rclip-models" / RCLIP_MODEL
    if not (models / "textual.onnx").exists():
        import onnx

        models.mkdir(parents=True, exist_ok=True)
        visual = onnx.load(str(model / "visual" / "model.onnx"))
        _rename(visual, {"image": "input"}, {"embedding": "output"})
        onnx.save(visual, str(models / "visual.onnx"))
        textual = onnx.load(str(model / "textual" / "model.onnx"))
        _rename(textual, {}, {"embedding": "output"})
        cast = onnx.helper.make_node("Cast", ["input"], ["text"], to=onnx.TensorProto.INT32)  # rclip feeds int64
        textual.graph.node.insert(0, cast)
        old = textual.graph.input[0]
        new = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.INT64, ["batch", 77])
        textual.graph.input.remove(old)
        textual.graph.input.insert(0, new)
        onnx.save(textual, str(models / "textual.onnx"))
    tokenizer = models.parent / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
    tokenizer.parent.mkdir(exist_ok=True)
    shutil.copy(ROOT / "tests" / "fixtures" / "clip_bpe" / tokenizer.name, tokenizer)
    return venv, models.parent


def _rename(model, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    names = {**inputs, **outputs}
    for value in [*model.graph.input, *model.graph.output]:
        value.name = names.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]


def rclip_datadir(work: Path, models: Path, name: str) -> Path:
    """An RCLIP_DATADIR (the model files linked in)."""
    data = work / name
    data.mkdir(exist_ok=True)
    for name in (RCLIP_MODEL, "tokenizer"):
        if not (data / name).exists():
            (data / name).symlink_to(models / name)
    return data


# -- libraries written through the store API ---------------------------------------------------
def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def ensure_library(work: Path, model: Path, n: int, folder: Path | None = None) -> Path:
    """A library of `n` photos (rows, embeddings, the saved exact index), made without photos."""
    folder = folder or work / f"lib-{n}"
    if (folder / "catalog.sqlite").exists():
        return folder
    import xmodal
    from xmodal.store.catalog import Catalog, ItemUpdate, ModelRecord
    from xmodal.store.indexes import IndexCache

    encoder = xmodal.load_model(model)
    folder.mkdir(parents=True)
    catalog = Catalog(folder / "catalog.sqlite", create=True)
    record = ModelRecord(encoder.model_key, encoder.name, encoder.source, "fp32", encoder.family, encoder.dim,
                         "exact", None, time.time())  # fmt: skip
    catalog.register_model(record)
    vectors = unit_vectors(n, encoder.dim, seed=n)
    taken = 1.5e9 + np.arange(n) * 600.0
    with catalog.transaction():
        catalog.set_root(PHOTO_ROOT, "online")
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        rows = [
            ItemUpdate(
                f"{PHOTO_ROOT}/{i // 1000:04d}/{i:07d}.jpg",
                "image",
                "ok",
                3_000_000,
                int(taken[i] * 1e9),
                content_hash=f"{i:032x}",
                width=4000,
                height=3000,
                taken_at=float(taken[i]),
                taken_at_source="exif",
            )  # fmt: skip
            for i in range(start, stop)
        ]
        with catalog.transaction() as revision:
            catalog.upsert_items(rows, revision)
            catalog.embeddings.put_many(record.key, ((f"{i:032x}", vectors[i]) for i in range(start, stop)))
    catalog.update_model(record.key, last_indexed_at=time.time())
    IndexCache(folder).save(catalog, catalog.model(record.key))
    try:  # what an index run does (int8: with XMODAL_QUERY_INT8=1); an older tree has no such step
        from xmodal.models import query_tower
    except ImportError:
        pass
    else:
        for kind in getattr(query_tower, "KINDS", ("int8",)):
            print(f"{kind} query tower: {query_tower.prepare(encoder, kind)}")
    catalog.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    catalog.close()
    return folder


def ensure_ann_library(work: Path, model: Path, n: int, spec: str) -> Path:
    """The same library with its index rebuilt as `spec` (a Faiss factory string)."""
    folder = work / f"lib-{n}-{spec.replace(',', '_')}"
    done = folder / ".index-built"
    if not done.exists():
        from xmodal.library import Library

        ensure_library(work, model, n, folder)
        with Library(folder) as lib:
            print(f"index {spec} of {n}: {lib.rebuild_index(spec=spec)}", flush=True)
        done.touch()
    return folder


def ensure_baseline_library(work: Path, model: Path, n: int, baseline_src: Path) -> Path:
    """The same library (same rows and vectors) written by the older tree, in its own formats."""
    folder = work / f"lib-{n}-baseline"
    if not (folder / "catalog.sqlite").exists():
        command = [sys.executable, __file__, "--work", str(work), "--build-library", str(n), "--out", str(folder)]
        subprocess.run(command, env=_env(baseline_src), check=True)
    return folder


def ensure_rclip_db(venv: Path, data: Path, n: int) -> Path:
    """rclip's database with `n` images under a photo folder, written by rclip's own DB class."""
    photos = data / "photos"
    photos.mkdir(exist_ok=True)
    if not (data / "db.sqlite3").exists():
        vectors = unit_vectors(n, 512, seed=n)
        np.save(data / "vectors.npy", vectors)
        code = (
            "import sys, numpy as np; from rclip.db import DB\n"
            "db = DB(sys.argv[1] + '/db.sqlite3'); v = np.load(sys.argv[1] + '/vectors.npy')\n"
            "for i in range(len(v)):\n"
            "    db.upsert_image({'filepath': f'{sys.argv[1]}/photos/{i:07d}.jpg', 'modified_at': 1.5e9, "
            "'size': 3000000, 'vector': v[i].tobytes(), 'hash': None}, commit=False)\n"
            "db.close()"
        )
        subprocess.run([str(venv / "bin" / "python"), "-c", code, str(data)], check=True)
        (data / "vectors.npy").unlink()
    return photos


# -- timing ------------------------------------------------------------------------------------
def _env(src: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def timed(command: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process, its stdout) of one run."""
    start = time.perf_counter()
    before = os.times()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=600)
    wall = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])}... failed: {done.stderr.decode()[-1500:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, done.stdout.decode()


def query_text(round_: int, n: int, variant: str) -> str:
    """A text no earlier search of this run used (so no query cache helps)."""
    rng = np.random.default_rng(abs(hash((round_, n, variant))) % 2**32)
    return f"a photo of a {' '.join(rng.choice(WORDS, 3))} {time.time_ns() % 10**9}"


SPLIT_PROBE = r"""
import os, sys, time
marks = [(time.perf_counter(), time.process_time())]
def mark():
    marks.append((time.perf_counter(), time.process_time()))
import xmodal.cli, xmodal.cli.library, xmodal.cli.output, xmodal.library
mark()
folder, query = sys.argv[1], sys.argv[2]
lib = xmodal.library.Library(folder)
record = lib._model_record(lib.catalog, None)
encoder = lib.encoder()
embed = getattr(encoder, "embed_queries", encoder.embed_texts)  # what a search encodes with
embed([query + " first"])
mark()
vector = embed([query])[0]
mark()
snapshot = lib._indexes.snapshot(lib.catalog, record)
mark()
scores, entries = snapshot.search(vector, 10)
lib.catalog.items_by_id((entries >> 20).tolist())
mark()
results = lib.search(query, k=10, min_score=-1.0)
mark()
sys.stdout.buffer.write(xmodal.cli.output.paths(results, raw=True)); sys.stdout.flush()
mark()
out = []
for n, (a, b) in enumerate(zip(marks, marks[1:])):
    if n != 5:  # the full search in between (its parts are timed above)
        out += [b[0] - a[0], b[1] - a[1]]
out[2] -= out[4]; out[3] -= out[5]  # model open = first query minus a second one
print("SPLIT", *out, marks[-1][0] - marks[0][0], marks[-1][1], file=sys.stderr)
if hasattr(xmodal.cli, "run"):
    os._exit(0)  # as the command line leaves now
"""
SPLIT_NAMES = ("imports", "model open", "text encode", "index open", "search", "output")


def split(src: Path, folder: Path, query: str, env_extra: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds of each part of a search in a new process (`SPLIT_NAMES`), then
    interpreter start + exit (the process's wall and CPU beyond the parts) and the totals."""
    start, before = time.perf_counter(), os.times()
    done = subprocess.run([sys.executable, "-c", SPLIT_PROBE, str(folder), query], env=_env(src, **env_extra),
                          capture_output=True, timeout=600)  # fmt: skip
    wall = time.perf_counter() - start
    line = [ln for ln in done.stderr.decode().splitlines() if ln.startswith("SPLIT")]
    if not line:
        raise RuntimeError(done.stderr.decode()[-2000:])
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    values = [float(x) for x in line[-1].split()[1:]]
    parts = {name: values[2 * n] for n, name in enumerate(SPLIT_NAMES)}
    parts |= {f"{name} CPU": values[2 * n + 1] for n, name in enumerate(SPLIT_NAMES)}
    parts |= {"start + exit": wall - values[12], "start + exit CPU": cpu - values[13], "total": wall, "total CPU": cpu}
    return parts


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cold_search(args, work: Path, model: Path, rclip: tuple[Path, Path] | None) -> dict:
    src = ROOT / "src"
    python = XMODAL_SEARCH
    cache = {"XMODAL_CACHE": str(work / "cache"), "OMP_WAIT_POLICY": "PASSIVE"}
    variants: dict[str, tuple] = {}
    for n in args.sizes:
        lib = ensure_library(work, model, n)
        variants[f"xmodal {n}"] = ("xmodal", n, lib, src)
        variants[f"xmodal {n} cached query"] = ("cached", n, lib, src)
        variants[f"xmodal {n} int8 query"] = ("int8", n, lib, src)
        variants[f"xmodal {n} own tower"] = ("own", n, lib, src)  # no query towers: the model's own text graph
        if args.baseline_src:
            twin = ensure_baseline_library(work, model, n, args.baseline_src)
            variants[f"baseline {n}"] = ("xmodal", n, twin, args.baseline_src)
        if rclip and n <= args.rclip_max:
            data = rclip_datadir(work, rclip[1], f"rclip-{n}")
            variants[f"rclip {n}"] = ("rclip", n, ensure_rclip_db(rclip[0], data, n), data)
    if args.only:
        kinds = set(args.only.split(","))
        variants = {
            k: v for k, v in variants.items() if v[0] in kinds or (k.startswith("baseline") and "baseline" in kinds)
        }
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    splits: dict[str, list[dict]] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms the OS cache and the int8/ORT caches
        load = os.getloadavg()[0]
        for name, (kind, n, where, tree) in variants.items():
            text = query_text(round_, n, name)
            if kind == "rclip":
                command = [str(rclip[0] / "bin" / "rclip"), "-n", "-f", "-t", "10", text]
                env, cwd = _env(None, RCLIP_DATADIR=str(tree)), where
            else:
                command, env, cwd = (
                    [*python, text, "-l", str(where), "-k", "10", "--format", "paths", "--min-score", "-1"],
                    _env(tree, **cache),
                    None,
                )
                if kind == "cached":
                    command[4] = "a photo of a dog on a beach"  # the same text every round: cached after round 0
                if kind == "int8":
                    env["XMODAL_QUERY_INT8"] = "1"
                if kind == "own":
                    env["XMODAL_CACHE"] = str(work / "cache-without-towers")
            wall, cpu, out = timed(command, env, cwd)
            if len(out.splitlines()) != 10:
                raise RuntimeError(f"{name}: {len(out.splitlines())} results")
            if round_:
                times[name].append(wall)
                cpus[name].append(cpu)
            if round_ and kind in ("xmodal", "int8", "own") and round_ <= args.split_rounds:
                extra = {**cache, "XMODAL_QUERY_INT8": "1" if kind == "int8" else "0"}
                if kind == "own":
                    extra["XMODAL_CACHE"] = str(work / "cache-without-towers")
                splits.setdefault(name, []).append(split(tree, where, query_text(round_, n, name + "s"), extra))
        print(f"round {round_} done, load average {load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    summary = {
        name: {"median_s": median(t), "best_s": min(t), "cpu_s": median(cpus[name])} for name, t in times.items()
    }
    split_summary = {name: {part: median([s[part] for s in rows]) for part in rows[0]} for name, rows in splits.items()}
    return {"cold": summary, "split": split_summary}


def warm_search(args, work: Path, model: Path) -> dict:
    """Searches answered by a resident server of the library (serve_library), from this process
    through the same client the command line uses, and as whole `xmodal search` processes."""
    from xmodal.cli.resident import resident_search
    from xmodal.serve.resident import ADDRESS_FILE

    out = {}
    env = _env(ROOT / "src", XMODAL_CACHE=str(work / "cache"), OMP_WAIT_POLICY="PASSIVE")
    for n in args.sizes:
        lib = ensure_ann_library(work, model, n, args.warm_index) if args.warm_index else ensure_library(work, model, n)
        (lib / ADDRESS_FILE).unlink(missing_ok=True)
        code = "import sys; from xmodal.serve.resident import serve_library; serve_library(sys.argv[1])"
        server = subprocess.Popen([sys.executable, "-c", code, str(lib)], env=env)
        try:
            deadline = time.monotonic() + 600
            while not (lib / ADDRESS_FILE).exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the resident server did not start")
                time.sleep(0.2)
            fresh, cached, cli = [], [], []
            resident_search(lib, {"text": "warm", "k": 10})
            for i in range(args.warm):
                text = f"{query_text(i, n, 'warm')} {i}"
                start = time.perf_counter()
                assert len(resident_search(lib, {"text": text, "k": 10, "min_score": -1.0})["hits"]) == 10
                fresh.append(time.perf_counter() - start)
                start = time.perf_counter()
                resident_search(lib, {"text": text, "k": 10, "min_score": -1.0})
                cached.append(time.perf_counter() - start)
                if i < args.warm // 4:
                    command = [*XMODAL_SEARCH, text + " cli", "-l", str(lib), "-k", "10", "--min-score", "-1"]
                    cli.append(timed(command, env)[0])
            out[n] = {
                "request_p50_ms": 1000 * median(fresh),
                "request_p95_ms": 1000 * float(np.percentile(fresh, 95)),
                "cached_request_p50_ms": 1000 * median(cached),
                "cli_process_p50_ms": 1000 * median(cli),
                "load": os.getloadavg()[0],
                "index": args.warm_index or "exact",
            }
            print(f"warm {n}: {out[n]}", flush=True)
        finally:
            server.terminate()
            server.wait(60)
    return out


def index_speed(args, work: Path, model: Path, rclip: tuple[Path, Path] | None) -> dict:
    """Images/s of a whole index command on 12 MP JPEGs: xmodal (fp32, int8) vs rclip (fp32)."""
    from ingest import ensure_photos

    photos = work / "photos12mp"
    ensure_photos(photos, args.index_photos)
    out: dict[str, dict] = {}
    env = _env(ROOT / "src", XMODAL_CACHE=str(work / "cache"), OMP_WAIT_POLICY="PASSIVE")
    runs: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.index_rounds):
        for precision in ("fp32", "int8"):
            lib = work / f"index-{precision}"
            shutil.rmtree(lib, ignore_errors=True)
            command = [sys.executable, "-m", "xmodal", "index", str(photos), "-l", str(lib), "-m", str(model),
                       "--precision", precision, "-q"]  # fmt: skip
            wall, cpu, _ = timed(command, env)
            runs.setdefault(f"xmodal {precision}", []).append((wall, cpu))
        if rclip:
            shutil.rmtree(work / "rclip-index", ignore_errors=True)
            data = rclip_datadir(work, rclip[1], "rclip-index")
            wall, cpu, _ = timed([str(rclip[0] / "bin" / "rclip"), "-f", "-t", "1", "anything"],
                                 _env(None, RCLIP_DATADIR=str(data)), photos)  # fmt: skip
            runs.setdefault("rclip fp32", []).append((wall, cpu))
        print(f"index round done, load average {os.getloadavg()[0]:.1f}", flush=True)
    for name, rows in runs.items():
        wall, cpu = min(rows)
        out[name] = {"images_per_s": args.index_photos / wall, "cores_busy": cpu / wall, "wall_s": wall}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--sizes", default="2000,20000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--split-rounds", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, help="an older tree's src/ to measure beside this one")
    parser.add_argument("--rclip", action="store_true", help="install rclip and measure it too")
    parser.add_argument("--rclip-max", type=int, default=20_000, help="largest library rclip is measured on")
    parser.add_argument("--warm", type=int, default=0, help="searches per size through a resident server")
    parser.add_argument(
        "--warm-index", default="", help="the resident server's libraries get this index (HNSW32,SQfp16)"
    )
    parser.add_argument("--index-photos", type=int, default=0, help="12 MP photos for the indexing comparison")
    parser.add_argument("--index-rounds", type=int, default=2)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument(
        "--only", default="", help="comma-separated variant kinds: xmodal,cached,int8,own,baseline,rclip"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--build-library", type=int, help=argparse.SUPPRESS)  # (in the tree on PYTHONPATH)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.build_library:
        ensure_library(args.work, ensure_model(args.work), args.build_library, args.out)
        return

    from xmodal.machine import describe_machine

    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XMODAL_CACHE", str(args.work / "cache"))
    print(describe_machine().summary(), f"load average {os.getloadavg()[0]:.1f}", flush=True)
    model = ensure_model(args.work)
    rclip = ensure_rclip(args.work, model) if args.rclip else None
    report: dict = {"machine": describe_machine().to_dict()}
    if not args.skip_cold:
        report.update(cold_search(args, args.work, model, rclip))
        for name, row in report["cold"].items():
            print(f"{name:32s} median {row['median_s']:.3f} s  best {row['best_s']:.3f} s  CPU {row['cpu_s']:.3f} s")
        for name, parts in report["split"].items():
            print(f"{name:18s} " + "  ".join(f"{k} {1000 * v:.0f}" for k, v in parts.items()) + "  (ms)")
    if args.warm:
        report["warm"] = warm_search(args, args.work, model)
    if args.index_photos:
        report["index"] = index_speed(args, args.work, model, rclip)
        for name, row in report["index"].items():
            print(f"index {name:12s} {row['images_per_s']:.2f} img/s, {row['cores_busy']:.2f} cores busy")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()

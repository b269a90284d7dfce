"""Search latency while the library is being indexed: idle vs during an index run, for a search
thread sharing the indexer's `Library` object and for a search loop in another process.

One run builds a photo folder, indexes part of it, then for each xmodal source tree measured
(this checkout, and optionally an older one with --baseline-src, e.g. a worktree of the commit
before readers stopped waiting) it:

  1. times searches on the idle library (p50 / p95 / max),
  2. starts an index run of the rest of the folder and times the same searches while it runs,
     from a thread of the indexing process (shared Library) and from another process,
  3. reports the writer's mean time per committed batch and its CPU share (process CPU seconds
     over wall seconds of the run: what the searches compete with on these cores).

    PYTHONPATH=src python benchmarks/concurrency.py [--photos 600] [--batch-size 16]
        [--baseline-src /path/to/old/src] [--json out.json]

Goal: no search waits for the writer — the max latency during indexing stays below the time of
one committed batch; the rest of the slow-down is CPU contention with the encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUERY = "a red circle at the top left"


def make_photos(folder: Path, n: int, seed: int) -> list[Path]:
    """`n` 320x240 JPEGs with a few shapes each (decode costs like small real photos), all distinct."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i:05d}.jpg"
        if not path.exists():
            rng = np.random.default_rng(seed + i)
            img = Image.new("RGB", (320, 240), tuple(int(c) for c in rng.integers(120, 250, 3)))
            draw = ImageDraw.Draw(img)
            for _ in range(3):
                x, y = (int(v) for v in rng.integers(0, 260, 2))
                draw.ellipse((x, y % 200, x + 50, y % 200 + 40), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
            img.save(path, quality=90)
        paths.append(path)
    return paths


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(values), "p50_ms": 1e3 * pick(0.5), "p95_ms": 1e3 * pick(0.95), "max_ms": 1e3 * max(values)}


# -- the measured side (runs with the xmodal of the tree under test) ----------------------------


def timed_searches(lib, until, pace: float) -> list[float]:
    """Search every `pace` seconds until `until()` is true; the latency of each search."""
    latencies = []
    while not until():
        start = time.perf_counter()
        lib.search(QUERY, k=10, min_score=-1)
        latencies.append(time.perf_counter() - start)
        time.sleep(max(0.0, pace - (time.perf_counter() - start)))
    return latencies


def search_loop(library: str, stop_file: str, out_file: str, pace: float) -> None:
    """Search until `stop_file` exists; write the latencies to `out_file` (another process)."""
    from xmodal.library import Library

    with Library(library) as lib:
        lib.search(QUERY, k=10, min_score=-1)  # warm: model loaded, index open
        Path(out_file + ".ready").touch()
        latencies = timed_searches(lib, lambda: os.path.exists(stop_file), pace)
    Path(out_file).write_text(json.dumps(latencies))


def measure(library: str, folders: list[str], model: str, batch_size: int, idle_seconds: float, pace: float) -> dict:
    """Idle latencies; then an index run of folders[0] with a search thread on the same Library,
    and one of folders[1] with a search loop in another process (one searcher at a time, paced)."""
    from xmodal.library import Library
    from xmodal.store import ingest as ingest_module

    config = (getattr(ingest_module, "EmbedConfig", None) or ingest_module.IngestConfig)(batch_size=batch_size)
    work = Path(tempfile.mkdtemp(prefix="xmodal-conc-"))
    result: dict = {}
    with Library(library) as lib:
        lib.search(QUERY, k=10, min_score=-1)
        end = time.monotonic() + idle_seconds
        result["idle"] = percentiles(timed_searches(lib, lambda: time.monotonic() > end, pace))

        done = threading.Event()
        shared: list[float] = []
        thread = threading.Thread(target=lambda: shared.extend(timed_searches(lib, done.is_set, pace)))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        thread.start()
        report = lib.index([folders[0]], model=model, config=config)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        done.set()
        thread.join()
        result["during_shared_library"] = percentiles(shared)

        stop = str(work / "stop")
        other = subprocess.Popen(
            [sys.executable, __file__, "--search-loop", library, stop, str(work / "other.json"), str(pace)],
            env=os.environ,
        )
        while not (work / "other.json.ready").exists():
            time.sleep(0.05)
        lib.index([folders[1]], model=model, config=config)
        Path(stop).touch()
        other.wait()
        result["during_other_process"] = percentiles(json.loads((work / "other.json").read_text()))
    commits = max(1, -(-report.encoded // batch_size))
    return {
        **result,
        "index_seconds": wall,
        "encoded": report.encoded,
        "batch_ms": 1e3 * wall / commits,
        "index_process_cpu_share": cpu / wall,
    }


# -- the orchestrating side -----------------------------------------------------------------------


def run_tree(src: str | None, args: argparse.Namespace, photos: Path, label: str) -> dict:
    import shutil

    library = Path(tempfile.mkdtemp(prefix=f"xmodal-conc-{label}-")) / "lib"
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    seed = f"from xmodal.library import Library\nwith Library({str(library)!r}) as lib: lib.index([{str(photos / 'base')!r}], model={args.model!r})"
    subprocess.run([sys.executable, "-c", seed], env=env, check=True)
    out = library.parent / "result.json"
    folders = [str(photos / "shared"), str(photos / "other")]
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from concurrency import measure; "
        f"json.dump(measure({str(library)!r}, {folders!r}, {args.model!r}, {args.batch_size}, "
        f"{args.idle_seconds}, {args.pace}), open({str(out)!r}, 'w'))"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    result = json.loads(out.read_text())
    shutil.rmtree(library.parent, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search-loop", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--photos", type=int, default=600, help="photos indexed during each measurement")
    parser.add_argument("--base", type=int, default=300, help="photos indexed before it")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default="xmodal-tiny-shapes")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between the starts of searches")
    parser.add_argument("--baseline-src", help="another xmodal source tree to measure the same way")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "xmodal-bench-concurrency")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.search_loop:
        library, stop, out, pace = args.search_loop
        search_loop(library, stop, out, float(pace))
        return
    from xmodal.machine import cpu_info

    make_photos(args.work / "base", args.base, 0)
    make_photos(args.work / "shared", args.photos, 100_000)
    make_photos(args.work / "other", args.photos, 200_000)
    print(f"CPU: {cpu_info().describe()}; load average {os.getloadavg()[0]:.1f}")
    trees = [("this checkout", None)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
    results = {}
    for label, src in trees:
        results[label] = result = run_tree(src, args, args.work, label.split()[0])
        print(
            f"\n{label}: indexed {result['encoded']} photos per run in {result['index_seconds']:.1f} s "
            f"({result['batch_ms']:.0f} ms per committed batch of {args.batch_size}; "
            f"indexing process CPU share {result['index_process_cpu_share']:.2f} of a core-second per second)"
        )
        print(f"{'searches':28} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>9}")
        for name in ("idle", "during_shared_library", "during_other_process"):
            row = result[name]
            print(f"{name:28} {row['n']:5d} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {row['max_ms']:9.1f}")
        worst = max(result["during_shared_library"]["max_ms"], result["during_other_process"]["max_ms"])
        verdict = "below" if worst < result["batch_ms"] else "NOT below"
        print(
            f"max latency during indexing {worst:.0f} ms: {verdict} one committed batch ({result['batch_ms']:.0f} ms)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

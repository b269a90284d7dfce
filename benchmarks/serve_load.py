"""Load on the HTTP server: N concurrent clients for S seconds against 127.0.0.1, with no index run
and while an index run (started over HTTP) is in progress. Goal: 0 errors in both; the p50 / p95 /
p99 latencies side by side say what indexing costs the people searching.

    PYTHONPATH=src python benchmarks/serve_load.py [--clients 50] [--seconds 20] [--rounds 2]
        [--photos 1000] [--json out.json]

Setup: a library of synth-shapes photos indexed with the shipped model, served by `xmodal serve` in
a process of its own (uvicorn on 127.0.0.1, default thread pool); this process is the load: one
asyncio task and one keep-alive connection per client, each sending its next request as soon as the
last one is answered. The mix is what the web page sends: text searches (k=48, queries varied so no
two in a row are alike) 70 %, "more like this" 15 %, grid thumbnails 15 %. Before each indexing
phase the library's folder gains new photos and POST /api/index starts a run; the script follows it
and reports the share of the phase it covered. Phases are interleaved (idle, indexing, idle, ...)
and each keeps its best round (lowest p95), as the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "pink", "black")
KINDS = ("circle", "square", "triangle", "star", "cross", "diamond")
PLACES = ("", " in the top left", " at the bottom", " in the centre", " on the right")
MIX = (("search", 0.70), ("like", 0.15), ("thumbnail", 0.15))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def make_library(work: Path, photos: int) -> tuple[Path, Path, float]:
    """synth-shapes photos under work/photos/images indexed into work/library; returns the folder,
    the library and the indexing rate in photos per second (to size the indexing phases)."""
    from xmodal.datasets import SynthConfig, generate_synth_shapes
    from xmodal.library import Library

    root = work / "photos" / "images"
    if not root.is_dir():
        generate_synth_shapes(work / "photos", SynthConfig(n=photos, seed=1))
    started = time.perf_counter()
    with Library(work / "library") as lib:
        report = lib.index([root], model="xmodal-tiny-shapes")
    seconds = time.perf_counter() - started
    return root, work / "library", (report.encoded or photos) / max(seconds, 1e-3)


def add_photos(root: Path, round_no: int, n: int) -> None:
    from xmodal.datasets import SynthConfig, generate_synth_shapes

    generate_synth_shapes(root / f"added-{round_no:02d}", SynthConfig(n=n, seed=1000 + round_no))


def start_server(library: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "XMODAL_MODEL_TTL": "0"}
    env.pop("XMODAL_API_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "xmodal", "serve", "--library", str(library), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/search", params={"q": "a red circle"}, timeout=10).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not answer within 120 s")


async def client(url: str, end: float, items: list[int], seed: int, out: list) -> None:
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < end:
            kind = rng.choices(kinds, weights)[0]
            if kind == "search":
                q = f"a {rng.choice(COLOURS)} {rng.choice(KINDS)}{rng.choice(PLACES)}"
                request = http.get("/api/search", params={"q": q, "k": 48})
            elif kind == "like":
                request = http.get("/api/search", params={"item": rng.choice(items), "k": 48})
            else:
                request = http.get(f"/api/items/{rng.choice(items)}/thumbnail", params={"size": 256})
            started = time.perf_counter()
            try:
                response = await request
                ok = response.status_code in (200, 304)
                detail = None if ok else f"{response.status_code} {response.text[:120]}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            out.append((kind, time.perf_counter() - started, ok, detail))


async def phase(url: str, clients: int, seconds: float, items: list[int], indexing: bool, seed: int) -> dict:
    out: list = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as control:
        if indexing:
            answer = await control.post("/api/index")
            if answer.status_code != 202:
                raise SystemExit(f"could not start an index run: {answer.status_code} {answer.text}")
        end = time.monotonic() + seconds
        started, wall_started = time.monotonic(), time.time()
        await asyncio.gather(*(client(url, end, items, seed * 1000 + i, out) for i in range(clients)))
        wall, wall_ended = time.monotonic() - started, time.time()
        run = (await control.get("/api/index")).json()
        if run["state"] == "running":  # stop it (its work is kept) so the next idle phase is idle
            await control.post("/api/index/cancel")
            while (await control.get("/api/index")).json()["state"] == "running":
                await asyncio.sleep(0.2)
    covered = 0.0
    if indexing:  # the share of the phase the run was going (from the run's own start and end times)
        run_end = run["finished_at"] if run["state"] != "running" else wall_ended
        covered = max(0.0, min(run_end, wall_ended) - max(run["started_at"], wall_started)) / (
            wall_ended - wall_started
        )
    latencies = [s for _, s, _, _ in out]
    by_kind = defaultdict(list)
    for kind, s, _, _ in out:
        by_kind[kind].append(s)
    errors = [d for _, _, ok, d in out if not ok]
    return {
        "indexing": indexing,
        "requests": len(out),
        "per_second": len(out) / wall,
        "errors": len(errors),
        "error_examples": errors[:5],
        "p50_ms": 1e3 * percentile(latencies, 0.50),
        "p95_ms": 1e3 * percentile(latencies, 0.95),
        "p99_ms": 1e3 * percentile(latencies, 0.99),
        "by_kind_p95_ms": {k: 1e3 * percentile(v, 0.95) for k, v in by_kind.items()},
        "index_covered": covered if indexing else None,
        "index_done": run.get("done") if indexing else None,
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--photos", type=int, default=1000, help="photos in the library before the load")
    parser.add_argument("--added", type=int, default=None, help="photos added before each indexing phase")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "xmodal-bench-serve")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from xmodal.machine import cpu_info

    print(f"CPU: {cpu_info().describe()}")
    print(f"load average before: {' / '.join(f'{v:.1f}' for v in os.getloadavg())} (1/5/15 min; a shared machine)")
    root, library, rate = make_library(args.work, args.photos)
    # Enough new photos that the run outlasts the phase: the load leaves it well under the whole CPU.
    added = args.added or max(500, int(0.8 * rate * args.seconds))
    print(
        f"library: {args.photos} photos (indexed at {rate:.0f} photos/s idle); {added} photos added per indexing phase"
    )
    server, url = start_server(library)
    try:
        items = [
            h["item_id"] for h in httpx.get(url + "/api/search", params={"q": "a shape", "k": 1000}).json()["hits"]
        ]
        results = []
        for round_no in range(1, args.rounds + 1):
            for indexing in (False, True):
                if indexing:
                    add_photos(root, round_no, added)
                row = asyncio.run(phase(url, args.clients, args.seconds, items, indexing, round_no))
                row["round"] = round_no
                results.append(row)
                covered = f"{100 * row['index_covered']:.0f} % ({row['index_done']} photos)" if indexing else ""
                print(
                    f"round {round_no} {'indexing' if indexing else 'idle':9} {row['requests']:6d} requests "
                    f"{row['per_second']:6.1f}/s errors {row['errors']}  p50 {row['p50_ms']:7.1f}  "
                    f"p95 {row['p95_ms']:7.1f}  p99 {row['p99_ms']:7.1f} ms  load {row['load_average']:.1f}  {covered}"
                )
                print("    p95 by kind: " + ", ".join(f"{k} {v:.0f} ms" for k, v in row["by_kind_p95_ms"].items()))
                for example in row["error_examples"]:
                    print(f"    error: {example}")
    finally:
        server.terminate()
        server.wait(30)
    best = {
        indexing: min((r for r in results if r["indexing"] == indexing), key=lambda r: r["p95_ms"])
        for indexing in (False, True)
    }
    idle, busy = best[False], best[True]
    print(f"\nbest rounds ({args.clients} clients x {args.seconds:g} s; ms):")
    print(f"{'':10} {'req/s':>7} {'errors':>7} {'p50':>8} {'p95':>8} {'p99':>8}")
    for name, row in (("idle", idle), ("indexing", busy)):
        print(
            f"{name:10} {row['per_second']:7.1f} {row['errors']:7d} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f}"
            f" {row['p99_ms']:8.1f}"
        )
    ratios = ", ".join(f"{q} x{busy[f'{q}_ms'] / idle[f'{q}_ms']:.2f}" for q in ("p50", "p95", "p99"))
    total_errors = sum(r["errors"] for r in results)
    print(f"indexing / idle: {ratios}; errors in all rounds: {total_errors}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_info().describe(), "rounds": results}, indent=2))


if __name__ == "__main__":
    main()

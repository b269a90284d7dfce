"""`xmodal search` output, byte for byte, against golden files: in a pipe (paths), as a table at 80
columns (long paths shortened in the middle, never wrapped), as TSV, JSON and -f.

The library is synthetic shapes indexed with the shipped model, with fixed file times, so the
output is the same on every machine. XMODAL_UPDATE_SNAPSHOTS=1 rewrites the golden files (after a
deliberate change of output or of the shipped model)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import xmodal
from xmodal.datasets import SynthConfig, generate_synth_shapes
from xmodal.library import Library

SNAPSHOTS = Path(__file__).parent / "snapshots"
WHEN = 1_718_452_800  # 2024-06-15 12:00 UTC
QUERY = "a red circle"


# A fixed folder: the table shortens paths in the middle, so their length must be the same everywhere.
ROOT = Path("/tmp/xmodal-cli-snapshots")


@pytest.fixture(scope="module")
def library() -> Iterator[tuple[Path, Path]]:
    root = ROOT
    shutil.rmtree(root, ignore_errors=True)
    try:
        root.mkdir(parents=True)
    except OSError as exc:
        pytest.skip(f"{root} cannot be created here ({exc.strerror})")
    generate_synth_shapes(root / "gen", SynthConfig(n=40, seed=21, image_size=96))
    photos = root / "photos" / "a-folder-with-a-rather-long-name-for-a-table" / "and-deeper-still"
    photos.mkdir(parents=True)
    for path in sorted((root / "gen" / "images").iterdir()):
        shutil.copy(path, photos / f"holiday-{path.name}")
        os.utime(photos / f"holiday-{path.name}", (WHEN, WHEN))
    with Library(root / "lib") as lib:
        lib.index([root / "photos"], model="xmodal-tiny-shapes")
    yield root, root / "lib"
    shutil.rmtree(root, ignore_errors=True)


def run_search(library: Path, *args: str, columns: int = 80) -> bytes:
    env = {
        **os.environ,
        "COLUMNS": str(columns),
        "TZ": "UTC",
        "PYTHONPATH": os.pathsep.join([str(Path(xmodal.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "xmodal", "search", QUERY, "-l", str(library), "-k", "5", *args]
    out = subprocess.run(command, env=env, capture_output=True, check=True)
    return out.stdout


def check(name: str, output: bytes, root: Path) -> None:
    """Compare with the golden file, score digits masked (CPUs round the last float digits
    differently; ranks, paths and layout must match exactly)."""
    text = output.decode()
    text = re.sub(r"(?<![\w.])(-?)0\.\d{4,}", lambda m: m.group(1) + "0.####", text)
    golden = SNAPSHOTS / name
    if os.environ.get("XMODAL_UPDATE_SNAPSHOTS") == "1":
        golden.write_text(text)
    assert text == golden.read_text(), f"output differs from {golden} (XMODAL_UPDATE_SNAPSHOTS=1 rewrites it)"


def test_search_in_a_pipe_prints_one_path_per_line(library):
    root, lib = library
    check("search_pipe.txt", run_search(lib), root)
    assert run_search(lib, "-f") == run_search(lib)


def test_search_table_fits_80_columns_without_wrapping(library):
    root, lib = library
    out = run_search(lib, "--format", "table")
    check("search_table_80.txt", out, root)
    lines = out.decode().splitlines()
    assert len(lines) == 6 and all(len(line) <= 80 for line in lines) and "…" in lines[1]


def test_search_tsv_and_json(library):
    root, lib = library
    check("search_tsv.txt", run_search(lib, "--format", "tsv"), root)
    check("search_json.txt", run_search(lib, "--json"), root)


def test_null_separated_paths_for_xargs(library):
    _, lib = library
    out = run_search(lib, "-f", "-0")
    assert out.count(b"\0") == 5 and b"\n" not in out

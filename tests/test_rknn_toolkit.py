"""Converting for Rockchip NPUs with the real rknn-toolkit2 and its simulator.

The toolkit lives in an environment of its own: $XMODAL_RKNN_TOOLKIT_PYTHON, else the one xmodal
makes in the user's cache folder (outside this run's temporary caches, so it is made once per
machine: about 1.5 GB and 1-2 minutes). Where it cannot be installed these tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from platformdirs import user_cache_dir
from typer.testing import CliRunner

import xmodal
from xmodal import settings
from xmodal.cli import app
from xmodal.errors import ModelFormatError
from xmodal.eval.datasets import ReadOptions, read_dataset
from xmodal.models import rknn
from xmodal.models.rknn_toolkit import (
    _MARKER,
    TOOLKIT_VERSION,
    RknnToolkitError,
    ToolkitWorker,
    environment_dir,
    environment_python,
    shared_worker,
    toolkit_python,
)

USER_CACHE = Path(user_cache_dir("xmodal"))


@pytest.fixture(scope="module")
def toolkit() -> Path:
    try:
        python = toolkit_python(cache_dir=USER_CACHE)
        shared_worker(python)  # starts it (and so checks it); conversions and sessions reuse it
    except RknnToolkitError as exc:
        pytest.skip(f"rknn-toolkit2 cannot be installed or run here: {exc}")
    os.environ["XMODAL_RKNN_TOOLKIT_PYTHON"] = str(python)  # what the rknn-sim runtime starts
    settings.configure()
    yield python
    os.environ.pop("XMODAL_RKNN_TOOLKIT_PYTHON", None)
    settings.configure()


@pytest.fixture(scope="module")
def converted(toolkit: Path, tmp_path_factory: pytest.TempPathFactory) -> rknn.RknnConversion:
    """The shipped model converted for rk3588 in fp16, into a copy of its folder (from a working
    directory of its own: the toolkit must leave nothing there)."""
    out = tmp_path_factory.mktemp("rknn") / "tiny-shapes-rknn"
    workdir = tmp_path_factory.mktemp("workdir")
    before = Path.cwd()
    os.chdir(workdir)
    try:
        result = rknn.convert_to_rknn("xmodal-tiny-shapes", rknn.RknnOptions(socs=("rk3588",)), out=out)
    finally:
        os.chdir(before)
    assert list(workdir.iterdir()) == []
    return result


def _report(conversion: rknn.RknnConversion, tower: str) -> rknn.TowerReport:
    return next(r for r in conversion.reports if r.tower == tower)


def test_the_environment_is_made_once_and_reused(toolkit: Path):
    folder = environment_dir(USER_CACHE)
    if toolkit != environment_python(folder):
        pytest.skip(f"the toolkit in use ({toolkit}) is not one xmodal made")
    before = {p.name: p.stat().st_mtime_ns for p in (folder / _MARKER, folder / "install.log")}
    assert toolkit_python(cache_dir=USER_CACHE) == toolkit
    after = {p.name: p.stat().st_mtime_ns for p in (folder / _MARKER, folder / "install.log")}
    assert after == before  # no pip run: nothing in the environment was touched
    recorded = json.loads((folder / _MARKER).read_text())
    assert f"rknn-toolkit2=={TOOLKIT_VERSION}" in recorded["requirements"]
    assert recorded["versions"]["toolkit"] == TOOLKIT_VERSION and recorded["versions"]["numpy"] == "1.26.4"


def test_the_shipped_model_converts_for_rk3588_verified_in_the_simulator(converted: rknn.RknnConversion):
    visual = _report(converted, "visual")
    assert visual.written and visual.cosine_min >= 0.999 and visual.probes >= 20
    folder = converted.folder / "visual" / "rknpu" / "rk3588"
    assert (folder / "model.rknn").stat().st_size > 10_000
    data = json.loads((folder / "report.json").read_text())
    assert data["toolkit_version"] == TOOLKIT_VERSION and data["soc"] == "rk3588" and data["precision"] == "fp16"
    assert data["status"] == "written" and data["cosine_min"] == visual.cosine_min
    assert data["operators"]["cpu"] == [] and data["operators"]["npu"]["Conv"] >= 1
    # mean/std are folded in: the graph takes uint8 RGB pixels, and says so to Immich
    assert data["build"]["mean"] == list(xmodal.load_model("xmodal-tiny-shapes").config.preprocess.mean)
    assert json.loads(data["build"]["custom_string"])["dims"] == [{}]

    # the textual graph's token handling is rewritten so that every operator runs on the NPU
    textual = _report(converted, "textual")
    assert textual.written and textual.cosine_min >= 0.999, textual.reasons
    assert textual.rewrite["applied"] and textual.rewrite["lookup"] == "one-hot MatMul"
    assert textual.cpu_operators == []
    assert (converted.folder / "textual" / "rknpu" / "rk3588" / "model.rknn").is_file()


def test_an_unconvertible_text_tower_is_reported_with_its_operators_and_left_on_onnx(
    toolkit: Path, tmp_path: Path, capfd: pytest.CaptureFixture
):
    out = tmp_path / "tiny"
    args = ["models", "rknn", "xmodal-tiny-shapes", "--out", str(out), "--tower", "textual", "--no-npu-rewrite"]
    run = CliRunner().invoke(app, [*args, "--json", "-q"])
    assert run.exit_code == 1, run.output  # nothing written
    (report,) = json.loads(run.stdout)
    assert report["status"] == "left on ONNX" and report["cosine_min"] >= 0.999  # it even computes right...
    cpu = [(op["type"], op["name"]) for op in report["operators"]["cpu"]]
    assert cpu == [("Cast", "/Cast"), ("Equal", "/Equal"), ("Not", "/Not"), ("Gather", "/tokens/Gather")]
    assert "4 operators would run on the board's CPU" in report["reasons"][0]  # ...but not on the NPU
    folder = out / "textual" / "rknpu" / "rk3588"
    assert not (folder / "model.rknn").exists()
    assert json.loads((folder / "report.json").read_text())["reasons"] == report["reasons"]

    # the simulator runtime runs that tower on ONNX Runtime, as Immich does, and says so
    texts = ["a red circle", "a small green star at the top left"]
    capfd.readouterr()
    npu = xmodal.load_model(out, runtime="rknn-sim:rk3588")
    embedded = npu.embed_texts(texts)
    warned = capfd.readouterr().err  # the CLI run above set up logging to stderr
    assert "no RKNN graph for rk3588" in warned and "Equal (/Equal)" in warned
    assert npu.precision == "onnx"  # neither tower has an NPU graph
    np.testing.assert_array_equal(embedded, xmodal.load_model(out).embed_texts(texts))


def test_rknn_sim_embeds_through_the_simulator_and_scores_beside_onnx(
    converted: rknn.RknnConversion, synth_shapes: Path, tmp_path: Path
):
    onnx_model = xmodal.load_model(converted.folder)
    npu_model = xmodal.load_model(converted.folder, runtime="rknn-sim")
    assert npu_model.name == f"{converted.folder.name}@rknn-sim:rk3588 (fp16)"
    assert npu_model.model_key != onnx_model.model_key  # caches keep the two apart
    dataset = read_dataset(synth_shapes, ReadOptions(split=None))
    images, texts = dataset.items[:8], dataset.texts[:8]
    assert np.sum(npu_model.embed_images(images) * onnx_model.embed_images(images), axis=1).min() >= 0.999
    assert np.sum(npu_model.embed_texts(texts) * onnx_model.embed_texts(texts), axis=1).min() >= 0.999

    # one table: the model on ONNX Runtime and on its NPU graphs in the simulator
    out = tmp_path / "eval"
    args = ["eval", "-m", str(converted.folder), "-d", str(synth_shapes), "--split", "all", "--limit", "40"]
    run = CliRunner().invoke(app, [*args, "--runtime", "onnxruntime", "--runtime", "rknn-sim", "--out", str(out), "-q"])
    assert run.exit_code == 0, run.output
    assert f"| Text→Image | {npu_model.name} |" in run.stdout
    onnx_run, npu_run = json.loads((out / "results.json").read_text())["results"]
    assert (onnx_run["model"], npu_run["model"]) == (converted.folder.name, npu_model.name)
    assert npu_run["precision"] == "fp16"
    for direction in ("t2i", "i2t"):
        ref, sim = onnx_run["directions"][direction], npu_run["directions"][direction]
        assert ref["queries"] == sim["queries"] > 0
        assert abs(sim["metrics"]["R@1"] - ref["metrics"]["R@1"]) <= 0.02


def test_int8_is_calibrated_on_the_photos_given_and_rebuilt_identically_for_the_simulator(
    toolkit: Path, synth_shapes: Path, tmp_path: Path
):
    dataset = read_dataset(synth_shapes, ReadOptions(split=None))
    calibration = rknn.CalibrationSet(images=dataset.items[:40], texts=dataset.texts[:40], source="synth shapes")
    options = rknn.RknnOptions(socs=("rk3588",), int8=True, towers=("visual",))
    result = rknn.convert_to_rknn("xmodal-tiny-shapes", options, out=tmp_path / "int8", calibration=calibration)
    (report,) = result.reports
    assert report.written and report.precision == "int8" and report.threshold == 0.99
    assert report.cosine_min >= 0.99 and report.probes == 24 + 10  # 10 photos held out of the 40 to check on
    assert report.calibration["samples"] == 30
    assert (result.folder / "visual" / "rknpu" / "rk3588" / "calibration.npz").is_file()

    npu_model = xmodal.load_model(result.folder, runtime="rknn-sim")
    assert npu_model.precision == "int8/onnx"
    held_out = dataset.items[30:40]
    cosines = np.sum(npu_model.embed_images(held_out) * xmodal.load_model(result.folder).embed_images(held_out), axis=1)
    assert cosines.min() >= 0.99


def test_a_graph_converted_from_another_onnx_file_is_refused(converted: rknn.RknnConversion, tmp_path: Path):
    copy = tmp_path / "changed"
    shutil.copytree(converted.folder, copy)
    with open(copy / "visual" / "model.onnx", "ab") as fp:
        fp.write(b"\0")  # a re-export in place changes the file; its RKNN graph is then stale
    with pytest.raises(ModelFormatError, match="was converted from another model.onnx; convert it again"):
        xmodal.load_model(copy, runtime="rknn-sim").embed_images([np.zeros((64, 64, 3), np.uint8)])


def test_a_worker_that_dies_fails_the_next_request_clearly(toolkit: Path):
    with ToolkitWorker(toolkit) as worker:
        os.kill(worker._process.pid, signal.SIGKILL)
        worker._process.wait()
        with pytest.raises(RknnToolkitError, match=r"worker \(.*\) exited with code -9"):
            worker.request({"op": "hello"})


def test_the_worker_does_not_outlive_a_killed_xmodal(toolkit: Path):
    code = (
        "import sys, time\n"
        "from xmodal.models.rknn_toolkit import ToolkitWorker\n"
        f"worker = ToolkitWorker({str(toolkit)!r})\n"
        "print(worker._process.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        worker_pid = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker_pid)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fp:
            return fp.read().split()[2] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False

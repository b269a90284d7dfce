"""RKNN pieces that need no toolkit: the worker protocol, failures that must be clear, reading the
toolkit's build log, the verdict on a built graph, and how the NPU runtimes are chosen."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import xmodal
from xmodal.errors import InvalidArgumentError, ModelFormatError
from xmodal.models import rknn
from xmodal.models.rknn_toolkit import RknnToolkitError, ToolkitWorker, toolkit_python
from xmodal.models.rknn_worker import read_frame, write_frame

FIXTURES = Path(__file__).parent / "fixtures" / "rknn"


def test_frames_carry_json_and_arrays_of_any_dtype_through_a_pipe():
    arrays = [
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32),
        np.zeros((0, 7), dtype=np.float16),
        np.array([[1, 255]], dtype=np.uint8),
        np.arange(6, dtype=np.int64)[::2],  # not contiguous
    ]
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        sender = threading.Thread(
            target=lambda: (write_frame(writer, {"op": "run", "x": [1, "é"]}, arrays), writer.close())
        )
        sender.start()  # frames larger than the pipe buffer need a concurrent reader
        header, got = read_frame(reader)
        sender.join()
        assert read_frame(reader) is None  # a clean end of stream
    assert header == {"op": "run", "x": [1, "é"]}
    for a, b in zip(arrays, got, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_a_stream_cut_inside_a_frame_is_an_error_not_a_short_read():
    buffer = io.BytesIO()
    write_frame(buffer, {"op": "run"}, [np.ones((4, 4), np.float32)])
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(buffer.getvalue()[:-5]))


def test_a_python_without_the_toolkit_fails_clearly():
    with pytest.raises(RknnToolkitError, match=r"cannot run rknn-toolkit2: No module named 'rknn'"):
        ToolkitWorker(sys.executable)
    with pytest.raises(RknnToolkitError, match="no such Python interpreter"):
        toolkit_python("/nonexistent/bin/python")


def test_the_build_log_gives_every_operator_and_where_it_runs():
    log = (FIXTURES / "textual_build_log.txt").read_text()
    operators = rknn.parse_layer_table(log)
    assert operators[0] == rknn.NpuOperator("InputOperator", "text", "INT32", "CPU")
    assert operators[-1].type == "OutputOperator"
    cpu = [(op.type, op.name) for op in operators if op.target == "CPU" and op.type not in rknn.LAYOUT_OPERATORS]
    assert cpu == [("Cast", "/Cast"), ("Equal", "/Equal"), ("Not", "/Not"), ("Gather", "/tokens/Gather")]
    assert len(operators) == 50 and sum(op.target == "NPU" for op in operators) == 42  # rows 0-49 of the table
    assert rknn.toolkit_errors(log) == ["Unkown op target: 0"] * 3


def _report(**changes) -> rknn.TowerReport:
    settings = rknn.BuildSettings("rk3588", "fp16", ["text"], [[1, 40]], ["int32"], None)
    values = dict(
        tower="textual",
        soc="rk3588",
        precision="fp16",
        written=False,
        reasons=[],
        build=settings,
        onnx_sha256="0" * 64,
        toolkit_version="2.5.0",
        threshold=0.999,
        cosine_min=0.9995,
        probes=20,
        operators=[rknn.NpuOperator("InputOperator", "text", "INT32", "CPU")],
    )
    return rknn.TowerReport(**{**values, **changes})


def test_the_verdict_names_each_reason_a_graph_is_not_written():
    assert rknn.verdict(_report(), frozenset()) == []
    low = rknn.verdict(_report(cosine_min=0.9981), frozenset())
    assert low == ["cosine with ONNX Runtime 0.998100 < 0.999 (lowest of 20 probes)"]
    gather = _report(operators=[rknn.NpuOperator("Gather", "/tokens/Gather", "FLOAT16", "CPU")])
    assert rknn.verdict(gather, frozenset()) == [
        "1 operators would run on the board's CPU, not the NPU: Gather (/tokens/Gather)"
    ]
    assert rknn.verdict(gather, frozenset({"Gather"})) == []
    placement = _report(toolkit_errors=["Unkown op target: 0"])  # logged for every CPU operator
    assert rknn.verdict(placement, frozenset()) == []
    other = _report(toolkit_errors=["dataconvert type -1 is unsupport in current!"])
    assert rknn.verdict(other, frozenset()) == [
        "the toolkit reported errors: dataconvert type -1 is unsupport in current!"
    ]


def test_reports_round_trip_through_json(tmp_path: Path):
    report = _report(written=True, rewrite={"applied": True, "vocab": 184})
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report.to_dict()))
    data = json.loads(path.read_text())
    assert data["status"] == "written" and data["format"] == rknn.REPORT_FORMAT
    assert data["operators"]["cpu"] == [] and data["operators"]["npu"] == {}
    assert rknn.TowerReport.from_dict(data, path) == report
    with pytest.raises(ModelFormatError, match="not an xmodal RKNN report"):
        rknn.TowerReport.from_dict({"tower": "visual"}, path)


def _fake_converted(folder: Path, socs: list[str]) -> None:
    for soc in socs:
        target = folder / "visual" / "rknpu" / soc
        target.mkdir(parents=True)
        (target / rknn.RKNN_FILE).write_bytes(b"not read by these checks")


def test_the_simulator_runtime_picks_the_soc_and_says_when_there_are_no_graphs(tmp_path: Path):
    shipped = xmodal.load_model("xmodal-tiny-shapes").config.folder
    folder = tmp_path / "model"
    shutil.copytree(shipped, folder)
    with pytest.raises(ModelFormatError, match="has no RKNN graphs .*`xmodal models rknn`"):
        xmodal.load_model(folder, runtime="rknn-sim")
    _fake_converted(folder, ["rk3566"])
    assert rknn.resolve_npu_runtime(folder, "rknn-sim") == ("rknn-sim", "rk3566")
    _fake_converted(folder, ["rk3588", "rk3576"])
    assert rknn.resolve_npu_runtime(folder, "rknn-sim") == ("rknn-sim", "rk3588")
    assert rknn.resolve_npu_runtime(folder, "rknn-sim:rk3576") == ("rknn-sim", "rk3576")
    with pytest.raises(InvalidArgumentError, match="rk3599"):
        rknn.resolve_npu_runtime(folder, "rknn-sim:rk3599")
    with pytest.raises(InvalidArgumentError, match="precision"):
        xmodal.load_model(folder, runtime="rknn-sim", precision="int8")


def test_the_board_runtime_needs_a_rockchip_board(tmp_path: Path):
    compatible = tmp_path / "compatible"
    compatible.write_bytes(b"radxa,rock-5b\x00rockchip,rk3588\x00")
    assert rknn.board_soc(compatible) == "rk3588"
    assert rknn.board_soc(tmp_path / "absent") is None
    if rknn.board_soc() is None:
        with pytest.raises(InvalidArgumentError, match="a Rockchip board"):
            rknn.resolve_npu_runtime(tmp_path, "rknn")


def test_an_environment_counts_as_installed_only_with_the_current_pins(tmp_path: Path):
    from xmodal.models import rknn_toolkit

    folder = tmp_path / "env"
    python = rknn_toolkit.environment_python(folder)
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    assert not rknn_toolkit._installed(folder)  # no marker: an interrupted or foreign install
    marker = folder / rknn_toolkit._MARKER
    marker.write_text(json.dumps({"requirements": ["rknn-toolkit2==2.3.0"]}))
    assert not rknn_toolkit._installed(folder)  # other pins: made again
    marker.write_text(json.dumps({"requirements": rknn_toolkit._all_requirements()}))
    assert rknn_toolkit._installed(folder)


def test_shipped_models_are_converted_into_a_copy(tmp_path: Path):
    with pytest.raises(xmodal.XmodalError, match=r"shipped inside xmodal; give an output folder \(--out DIR\)"):
        rknn.convert_to_rknn("xmodal-tiny-shapes")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("not a model")
    with pytest.raises(xmodal.XmodalError, match="is not a copy of xmodal-tiny-shapes"):
        rknn.convert_to_rknn("xmodal-tiny-shapes", out=tmp_path / "other")
    with pytest.raises(InvalidArgumentError, match="calibration"):
        rknn.convert_to_rknn("xmodal-tiny-shapes", rknn.RknnOptions(int8=True), out=tmp_path / "x")
    with pytest.raises(InvalidArgumentError, match="rk3599"):
        rknn.RknnOptions(socs=("rk3599",))


def test_calibration_comes_spread_over_a_photo_folder_or_from_a_dataset_with_its_captions(
    tmp_path: Path, synth_shapes: Path
):
    from PIL import Image

    from xmodal.cli.models import _calibration_set

    photos = tmp_path / "photos"
    (photos / "2024").mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(photos / "2024" / f"{i:02d}.jpg")
    (photos / "notes.txt").write_text("not a photo")
    picked = _calibration_set(str(photos), 4)
    assert [Path(p).name for p in picked.images] == ["00.jpg", "03.jpg", "06.jpg", "09.jpg"]
    assert list(picked.texts) == [] and picked.source == str(photos)

    data = _calibration_set(f"karpathy:{synth_shapes}", 5)
    assert len(data.images) == 5 and len(data.texts) == 5  # each image's first caption
    first = json.loads(synth_shapes.read_text())["images"][0]
    assert Path(data.images[0]).name == first["filename"] and data.texts[0] == first["sentences"][0]["raw"]

"""Inference runtimes behind one small Protocol, and the one place that picks a runtime.

ONNX Runtime is the default (fp32, and int8 through dynamic quantization of a cached copy of the
graph, checked against fp32 on probe inputs before first use on each CPU kind). OpenVINO, when
installed, runs the same ONNX files and uses bf16 on CPUs with AMX/AVX-512 BF16. Neither needs
torch. The RKNN runtimes run a tower's Rockchip NPU graph
(TOWER/rknpu/SOC/model.rknn, see xmodal.models.rknn): "rknn-sim" in Rockchip's simulator (the
toolkit in its own environment), "rknn" on a board's NPU through rknn-toolkit-lite2; a tower
without an NPU graph runs on ONNX Runtime, as Immich does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from xmodal.errors import InvalidArgumentError, ModelFormatError, PrecisionTooLowError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnxruntime", "openvino", "rknn-sim", "rknn")
NPU_RUNTIMES = ("rknn-sim", "rknn")  # also as KIND:SOC, e.g. "rknn-sim:rk3566"
PRECISIONS = ("fp32", "int8", "bf16")
MIN_INT8_COSINE = 0.99  # lowest cosine to fp32 an int8 graph may reach on the probe inputs

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


class EncoderSession(Protocol):
    """A loaded graph: named numpy inputs in, one (N, D) float32 output."""

    input_names: tuple[str, ...]
    input_dtypes: dict[str, np.dtype]
    path: Path  # the graph file the session runs

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class Int8Probe:
    """Deterministic inputs an int8 graph is checked on against its fp32 source before use."""

    tower: str  # for messages: "image tower" | "text tower"
    digest: str  # identifies the inputs in the record of the check
    embed: Callable[[EncoderSession], np.ndarray]  # the probe's L2-normalized (N, D) rows from a session


class OnnxRuntimeSession:
    """An onnxruntime.InferenceSession that casts inputs to the graph's dtypes and loops over
    the batch when the graph has a fixed batch of 1 (Immich's exports)."""

    def __init__(self, path: Path, threads: int | None = None, *, saved_optimized: bool = False, prepack: bool = True):
        import onnxruntime as ort

        _check_file(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if saved_optimized:  # a graph optimized for this CPU before (ORT or ONNX format): nothing to rewrite
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            if path.suffix == ".ort":
                options.add_session_config_entry("session.load_model_format", "ORT")
        if not prepack:  # weights used where they lie (a mapped external-data file), not copied into packed form
            options.add_session_config_entry("session.disable_prepacking", "1")
        # Idle worker threads sleep instead of spinning: the encoder shares the cores with decode
        # threads (library ingest) or other jobs, whose CPU spinning steals (benchmarks/ingest.py:
        # end to end +20-35 %; the encoder alone was not slower on the shared 2-core machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(path), options, providers=_ort_providers(ort))
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise ModelFormatError(path, f"not a loadable ONNX model: {_first_line(exc)}") from None
        inputs = self._session.get_inputs()
        self.input_names = tuple(i.name for i in inputs)
        self.input_dtypes = {i.name: _ORT_DTYPES.get(i.type, np.float32) for i in inputs}
        self._batch_one = any(i.shape and i.shape[0] == 1 for i in inputs)
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "embedding" if "embedding" in outputs else outputs[0]
        self.path = path

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {k: np.ascontiguousarray(v, dtype=self.input_dtypes[k]) for k, v in feeds.items()}
        n = len(next(iter(feeds.values())))
        if self._batch_one and n > 1:
            rows = [self._run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(n)]
            return np.concatenate(rows)
        return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = self._session.run([self._output], feeds)[0]
        return np.asarray(out, dtype=np.float32).reshape(len(out), -1)


class OpenVinoSession:
    """The same ONNX graph compiled by OpenVINO for the CPU, in fp32 or bf16."""

    def __init__(self, path: Path, precision: str, threads: int | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise InvalidArgumentError(
                "runtime", "openvino", "installing it first: pip install 'xmodal[openvino]'"
            ) from None
        _check_file(path)
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            model = ov.Core().read_model(str(path))
            self._compiled = ov.Core().compile_model(model, "CPU", config)
        except Exception as exc:  # openvino raises RuntimeError with long multi-line messages
            raise ModelFormatError(path, f"OpenVINO cannot load it: {_first_line(exc)}") from None
        self.input_names = tuple(_port_name(p) for p in self._compiled.inputs)
        self.input_dtypes = {_port_name(p): np.dtype(p.get_element_type().to_dtype()) for p in self._compiled.inputs}
        names = [_port_name(p) for p in self._compiled.outputs]
        self._output = self._compiled.outputs[names.index("embedding") if "embedding" in names else 0]
        self._local = threading.local()
        self.path = path

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:  # one infer request per thread: requests are not thread-safe
            request = self._local.request = self._compiled.create_infer_request()
        feeds = {k: np.ascontiguousarray(v, dtype=self.input_dtypes[k]) for k, v in feeds.items()}
        out = request.infer(feeds)[self._output]
        return np.asarray(out, dtype=np.float32).reshape(len(out), -1)


def _port_name(port) -> str:
    """The graph's own name of an OpenVINO port: after fusing a Cast, a port also carries the
    internal tensor name (e.g. '/Cast_output_0'); prefer the public one."""
    return sorted(port.get_names(), key=lambda n: (n.startswith("/"), len(n)))[0]


def _ort_providers(ort) -> list[str]:
    """CUDA first where this ONNX Runtime build has it (onnxruntime-gpu on a GPU machine, e.g. a
    Ray GPU worker), else the CPU; ONNX Runtime falls back to the CPU when no GPU is visible."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class RknnSession:
    """A tower's RKNN graph, fed like its ONNX graph: normalized images become the uint8 pixels a
    graph with folded mean/std takes; rows are run one at a time (the graphs have batch 1)."""

    def __init__(self, onnx_path: Path, report):
        from xmodal.models.config import PreprocessCfg
        from xmodal.models.preprocess import ImagePreprocessor

        self.report, self.settings = report, report.build
        self.path = onnx_path.parent / "rknpu" / report.soc / "model.rknn"
        self.input_names = tuple(self.settings.inputs)
        visual = self.settings.data_format is not None
        self.input_dtypes = {
            n: np.dtype(np.float32 if visual else d)
            for n, d in zip(self.input_names, self.settings.dtypes, strict=True)
        }
        folded = self.settings.folded
        self._pixels = (
            ImagePreprocessor(PreprocessCfg(mean=self.settings.mean, std=self.settings.std)) if folded else None
        )

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        from xmodal.models.rknn import npu_image_input

        if self.settings.data_format is not None:
            batch = [npu_image_input(self.settings, feeds[self.input_names[0]], preprocess=self._pixels)]
        else:
            batch = [np.ascontiguousarray(feeds[n], dtype=self.input_dtypes[n]) for n in self.input_names]
        return np.asarray(self._infer(batch), dtype=np.float32).reshape(len(batch[0]), -1)

    def _infer(self, batch: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class RknnSimulatorSession(RknnSession):
    """The graph rebuilt from the tower's ONNX file with the report's exact settings (and int8
    calibration samples) in Rockchip's simulator, which cannot load .rknn files itself."""

    def __init__(self, onnx_path: Path, report):
        from xmodal.models.rknn import CALIBRATION_FILE, file_sha256
        from xmodal.models.rknn_toolkit import shared_worker, toolkit_python

        super().__init__(onnx_path, report)
        calibration: list[np.ndarray] = []
        if report.calibration:
            path = self.path.with_name(CALIBRATION_FILE)
            if not path.is_file() or file_sha256(path) != report.calibration.get("sha256"):
                raise ModelFormatError(path, "missing or not the calibration set the RKNN graph was built with")
            with np.load(path) as data:
                calibration = [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[-1]))]
        log.info("building %s in the RKNN simulator (%s, %s)", self.path, report.soc, report.precision)
        self._worker = shared_worker(toolkit_python())
        reply, _ = self._worker.request(self.settings.request(onnx_path), calibration)
        self._handle = reply["handle"]

    def _infer(self, batch: list[np.ndarray]) -> np.ndarray:
        header = {"op": "run", "handle": self._handle, "data_format": self.settings.data_format}
        return self._worker.request(header, batch)[1][0]

    def __del__(self) -> None:
        try:  # frees the simulator's copy of the graph; the worker may already be gone at exit
            self._worker.request({"op": "release", "handle": self._handle})
        except Exception:
            pass


class RknnBoardSession(RknnSession):
    """The .rknn file on the NPU of the Rockchip board this runs on, through rknn-toolkit-lite2."""

    def __init__(self, onnx_path: Path, report):
        super().__init__(onnx_path, report)
        try:
            from rknnlite.api import RKNNLite
        except ImportError:
            raise InvalidArgumentError(
                "runtime", "rknn", "rknn-toolkit-lite2 on the board (pip install rknn-toolkit-lite2)"
            ) from None
        self._lite = RKNNLite()
        if self._lite.load_rknn(str(self.path)) != 0:
            raise ModelFormatError(self.path, "rknn-toolkit-lite2 cannot load it")
        multi_core = report.soc in ("rk3588", "rk3576")  # the SoCs with several NPU cores
        code = self._lite.init_runtime(core_mask=RKNNLite.NPU_CORE_AUTO) if multi_core else self._lite.init_runtime()
        if code != 0:
            raise ModelFormatError(self.path, f"the NPU runtime did not start (code {code}); is this an {report.soc}?")
        self._lock = threading.Lock()

    def _infer(self, batch: list[np.ndarray]) -> np.ndarray:
        rows = []
        with self._lock:
            for i in range(len(batch[0])):
                out = self._lite.inference(inputs=[b[i : i + 1] for b in batch], data_format=self.settings.data_format)
                if out is None:
                    raise ModelFormatError(self.path, "NPU inference failed")
                rows.append(np.asarray(out[0], dtype=np.float32).reshape(1, -1))
        return np.concatenate(rows)


def npu_session(path: Path, runtime: str, threads: int | None = None) -> EncoderSession:
    """The RKNN graph of the tower `path` for runtime KIND:SOC, or its ONNX graph when the tower
    has none (the report says why)."""
    from xmodal.models.rknn import RKNN_FILE, file_sha256, read_report, rknn_dir

    kind, _, soc = runtime.partition(":")
    report = read_report(path, soc)
    if report is None or not report.written or not (rknn_dir(path, soc) / RKNN_FILE).is_file():
        why = "never converted" if report is None else "; ".join(report.reasons) or "no model.rknn"
        log.warning("%s: no RKNN graph for %s (%s); it runs on ONNX Runtime", path.parent.name, soc, why)
        return OnnxRuntimeSession(path, threads)
    if file_sha256(path) != report.onnx_sha256:
        raise ModelFormatError(
            rknn_dir(path, soc) / RKNN_FILE, f"was converted from another {path.name}; convert it again"
        )
    return RknnSimulatorSession(path, report) if kind == "rknn-sim" else RknnBoardSession(path, report)


def create_session(
    path: Path, *, runtime: str, precision: str, threads: int | None = None, probe: Int8Probe | None = None
) -> EncoderSession:
    """Open `path` with the runtime and precision asked for; the one place runtimes are chosen.

    int8 needs a probe: the quantized copy is refused (PrecisionTooLowError) when its embeddings
    of the probe fall below MIN_INT8_COSINE to fp32 on this CPU.
    """
    if runtime.partition(":")[0] in NPU_RUNTIMES:
        return npu_session(path, runtime, threads)
    if precision not in PRECISIONS:
        raise InvalidArgumentError("precision", precision, PRECISIONS)
    if runtime not in RUNTIMES:
        raise InvalidArgumentError("runtime", runtime, RUNTIMES)
    if runtime == "auto":
        runtime = "openvino" if precision == "bf16" else "onnxruntime"
    match runtime, precision:
        case "onnxruntime", "fp32":
            return OnnxRuntimeSession(path, threads)
        case "onnxruntime", "int8":
            if probe is None:
                raise InvalidArgumentError("probe", None, "probe inputs to check the int8 graph on")
            return _checked_int8_session(path, probe, threads)
        case "openvino", ("fp32" | "bf16"):
            return OpenVinoSession(path, precision, threads)
    raise InvalidArgumentError(
        "runtime/precision", f"{runtime}/{precision}", "onnxruntime with fp32|int8, openvino with fp32|bf16"
    )


def _checked_int8_session(path: Path, probe: Int8Probe, threads: int | None) -> OnnxRuntimeSession:
    """The int8 copy of `path` with the weight range this CPU computes exactly, once its lowest
    cosine to fp32 on the probe is known (measured once per CPU kind, then read from the cache)."""
    from xmodal.models.quantize import checked_cosine, cpu_int8, quantized_copy

    cpu = cpu_int8()
    copy = quantized_copy(path, reduce_range=cpu.saturates)
    opened: list[OnnxRuntimeSession] = []  # a recorded refusal opens no session at all

    def measure() -> float:
        opened.append(OnnxRuntimeSession(copy, threads))
        reference = probe.embed(OnnxRuntimeSession(path, threads))
        return float(np.min(np.sum(reference * probe.embed(opened[0]), axis=1)))

    cosine = checked_cosine(copy, probe.digest, measure, cpu)
    if cosine < MIN_INT8_COSINE:
        raise PrecisionTooLowError(path, probe.tower, "int8", cosine, MIN_INT8_COSINE, cpu.kind)
    return opened[0] if opened else OnnxRuntimeSession(copy, threads)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ModelFormatError(path, "missing file")
    if path.stat().st_size == 0:
        raise ModelFormatError(path, "empty file (0 bytes)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__

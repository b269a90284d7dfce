"""The RKNN toolkit worker: a small server that runs inside the toolkit's own Python environment.

rknn-toolkit2 pins numpy and onnx versions xmodal's environment cannot have, so xmodal starts this
script with the toolkit's interpreter (`python -I rknn_worker.py LOG`) and talks to it over its
stdin/stdout. Each message is one frame: a 4-byte big-endian length, a JSON header, then the raw
bytes of the numpy arrays the header lists (dtype and shape each). Requests:

    hello                               -> versions
    build {onnx, soc, precision, inputs, shapes, ...} + calibration arrays (int8; one per input)
                                        -> handle, the toolkit's build log, the NPU rewrite summary
    run {handle, data_format} + one batch per input
                                        -> the first output, (N, D) float32 (simulated row by row)
    release {handle}, exit

The toolkit's C library writes its log to file descriptors 1 and 2, so the protocol moves to a
duplicate of stdout and both descriptors are pointed at LOG; the worker works in a temporary
folder of its own, where the toolkit leaves its debug files. Paths in requests are absolute. Every failure is answered with
{"ok": false, "error": ...}; the worker only stops on `exit` or when its stdin closes.

Needs only the standard library, numpy, onnx and rknn-toolkit2 (never xmodal itself).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np

_HEADER = struct.Struct("!I")
_LOG_LIMIT = 4 << 20  # bytes of build log sent back
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read_frame(stream) -> tuple[dict, list[np.ndarray]] | None:
    """One (header, arrays) frame from a binary stream, or None at end of stream."""
    raw = _read_exact(stream, _HEADER.size)
    if raw is None:
        return None
    body = _read_exact(stream, _HEADER.unpack(raw)[0])
    if body is None:
        raise EOFError("stream ended inside a frame header")
    header = json.loads(body)
    arrays = []
    for spec in header.pop("arrays", []):
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        data = _read_exact(stream, size) if size else b""
        if data is None:
            raise EOFError("stream ended inside an array")
        arrays.append(np.frombuffer(data, dtype=dtype).reshape(shape))
    return header, arrays


def write_frame(stream, header: dict, arrays: list[np.ndarray] = ()) -> None:
    """Write one frame: header JSON (with the arrays' dtypes and shapes) then the arrays' bytes."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    header = {**header, "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]}
    body = json.dumps(header).encode()
    stream.write(_HEADER.pack(len(body)) + body)
    for a in arrays:
        stream.write(a.tobytes())
    stream.flush()


def _read_exact(stream, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            if left == n:
                return None
            raise EOFError(f"stream ended after {n - left} of {n} bytes")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Worker:
    """Holds the built graphs (one RKNN object each, simulator initialised) by handle."""

    def __init__(self, log_path: str, log_fd: int):
        self.log_path = log_path
        self.log_fd = log_fd
        self.graphs: dict[int, object] = {}
        self.next_handle = 1
        self.scratch = Path(tempfile.mkdtemp(prefix="xmodal-rknn-worker-"))

    def hello(self, request: dict, arrays: list) -> tuple[dict, list]:
        from rknn.api import RKNN  # fails here, clearly, when the toolkit or one of its imports is missing

        RKNN(verbose=False).release()

        return {
            "toolkit": metadata.version("rknn-toolkit2"),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "executable": sys.executable,
        }, []

    def build(self, request: dict, arrays: list) -> tuple[dict, list]:
        from rknn.api import RKNN

        os.ftruncate(self.log_fd, 0)
        started = time.perf_counter()
        onnx_path, rewrite = self._graph_to_build(request)
        rknn = RKNN(verbose=True)
        try:
            self._check(
                rknn.config(
                    target_platform=request["soc"],
                    mean_values=[[float(v) * 255 for v in request["mean"]]] if request.get("mean") else None,
                    std_values=[[float(v) * 255 for v in request["std"]]] if request.get("std") else None,
                    custom_string=request.get("custom_string"),
                    quantized_algorithm=request.get("quantized_algorithm") or "normal",
                ),
                "config",
            )
            self._check(
                rknn.load_onnx(str(onnx_path), inputs=request["inputs"], input_size_list=request["shapes"]),
                "load_onnx",
            )
            dataset = self._dataset(arrays) if request["precision"] == "int8" else None
            hybrid = bool(request.get("auto_hybrid")) and dataset is not None
            self._check(rknn.build(do_quantization=dataset is not None, dataset=dataset, auto_hybrid=hybrid), "build")
            if request.get("export"):
                self._check(rknn.export_rknn(request["export"]), "export_rknn")
            self._check(rknn.init_runtime(), "init_runtime (simulator)")
        except Exception:
            rknn.release()
            raise
        handle = self.next_handle
        self.next_handle += 1
        self.graphs[handle] = rknn
        return {"handle": handle, "rewrite": rewrite, "seconds": time.perf_counter() - started, "log": self._log()}, []

    def run(self, request: dict, arrays: list) -> tuple[dict, list]:
        rknn = self.graphs.get(request["handle"])
        if rknn is None:
            raise ValueError(f"no built graph has handle {request['handle']!r}")
        rows = []
        for i in range(len(arrays[0])):
            inputs = [np.ascontiguousarray(batch[i : i + 1]) for batch in arrays]
            outputs = rknn.inference(inputs=inputs, data_format=request.get("data_format"))
            if outputs is None:
                raise RuntimeError("the simulator returned no output")
            rows.append(np.asarray(outputs[0], dtype=np.float32).reshape(1, -1))
        os.ftruncate(self.log_fd, 0)  # inference logs are not kept
        return {}, [np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)]

    def release(self, request: dict, arrays: list) -> tuple[dict, list]:
        rknn = self.graphs.pop(request["handle"], None)
        if rknn is not None:
            rknn.release()
        return {}, []

    def _graph_to_build(self, request: dict) -> tuple[Path, dict | None]:
        """The ONNX file to build: the source, or its NPU rewrite when asked and possible."""
        if not request.get("rewrite"):
            return Path(request["onnx"]), None
        import onnx

        npu_graph = _load_sibling("npu_graph")
        try:
            model, summary = npu_graph.fuse_token_lookups(onnx.load(request["onnx"]), request["shapes"][0])
        except npu_graph.GraphRewriteError as exc:
            return Path(request["onnx"]), {"applied": False, "reason": str(exc)}
        path = self.scratch / f"rewritten-{self.next_handle}.onnx"
        onnx.save(model, str(path))
        return path, {"applied": True, **summary.to_dict()}

    def _dataset(self, inputs: list[np.ndarray]) -> str:
        """A toolkit dataset file: one line per calibration sample, one .npy file per input."""
        if not inputs or not len(inputs[0]):
            raise ValueError("int8 needs calibration samples")
        folder = Path(tempfile.mkdtemp(dir=self.scratch))
        lines = []
        for i in range(len(inputs[0])):
            paths = []
            for k, batch in enumerate(inputs):
                paths.append(folder / f"{i}-{k}.npy")
                np.save(paths[-1], batch[i : i + 1])
            lines.append(" ".join(map(str, paths)))
        listing = folder / "dataset.txt"
        listing.write_text("\n".join(lines) + "\n")
        return str(listing)

    def _check(self, code: int, step: str) -> None:
        if code != 0:
            raise RuntimeError(f"{step} returned {code}")

    def _log(self) -> str:
        sys.stdout.flush()
        sys.stderr.flush()
        with open(self.log_path, "rb") as fp:
            fp.seek(max(0, os.fstat(fp.fileno()).st_size - _LOG_LIMIT))
            return _ANSI.sub("", fp.read().decode("utf-8", "replace"))


def _load_sibling(name: str):
    """Import a module that lies beside this file (this script's folder is not on sys.path)."""
    spec = importlib.util.spec_from_file_location(f"xmodal_rknn_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _error_text(exc: BaseException, log: str) -> str:
    """The exception's last line plus the toolkit's distinct error lines (its exceptions carry a
    whole traceback as their message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("  ")]
    message = re.sub(r"^\w+(Error|Exception): ", "", lines[-1]) if lines else type(exc).__name__
    errors = []
    for line in log.splitlines():
        text = line[2:].strip()
        if line.startswith("E ") and text not in errors and "Traceback" not in text and "toolkit2 version" not in text:
            errors.append(text)
    return "\n".join([message] + [e for e in errors[-6:] if message not in e])


def _die_with_parent() -> None:
    """Linux: end this worker when xmodal's process ends, even in the middle of a long build."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent is already gone
        sys.exit(0)


def main() -> int:
    _die_with_parent()
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb")
    log_fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    worker = Worker(sys.argv[1], log_fd)
    os.chdir(worker.scratch)  # the toolkit writes debug files (check*.onnx) to the working directory
    try:
        return serve(worker, proto_in, proto_out)
    finally:
        shutil.rmtree(worker.scratch, ignore_errors=True)


def serve(worker: Worker, proto_in, proto_out) -> int:
    """Answer requests until `exit` or the end of the input stream."""
    while True:
        frame = read_frame(proto_in)
        if frame is None:
            return 0
        request, arrays = frame
        op = request.get("op")
        if op == "exit":
            write_frame(proto_out, {"ok": True})
            return 0
        handler = getattr(worker, op, None) if op in ("hello", "build", "run", "release") else None
        try:
            if handler is None:
                raise ValueError(f"unknown request {op!r}")
            reply, out = handler(request, arrays)
            write_frame(proto_out, {"ok": True, **reply}, out)
        except Exception as exc:
            log = worker._log() if op == "build" else ""
            traceback.print_exc()
            write_frame(proto_out, {"ok": False, "error": _error_text(exc, log), "log": log[-20000:]})


if __name__ == "__main__":
    sys.exit(main())

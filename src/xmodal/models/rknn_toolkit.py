"""Rockchip's rknn-toolkit2 in an environment of its own, and the bridge to it.

The toolkit pins numpy <= 1.26.4 and onnx <= 1.18, which xmodal's own environment cannot hold, so
xmodal makes a virtual environment for it under the cache folder (once, with pip, exact versions
below; `XMODAL_RKNN_TOOLKIT_PYTHON` or `--toolkit-python` name an existing one instead) and runs
the toolkit there in a worker process (`rknn_worker.py`) that it talks to over pipes: JSON headers
and numpy arrays, one request at a time. Any failure of the worker, its start or its requests
raises `RknnToolkitError` with what the toolkit said.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from xmodal import settings
from xmodal.errors import XmodalError
from xmodal.models.rknn_worker import read_frame, write_frame
from xmodal.progress import NullProgress, Progress

log = logging.getLogger(__name__)

TOOLKIT_VERSION = "2.5.0"
# The toolkit is installed without its declared dependencies (it asks for torch <= 2.4, which has
# no wheel here); these are the versions it was verified with. torch is imported by the toolkit's
# quantizer; the CPU build is enough. The toolkit imports pkg_resources, which setuptools 81
# dropped; 80.9 still has it and satisfies torch's setuptools >= 77.
REQUIREMENTS = (
    "numpy==1.26.4",
    "onnx==1.18.0",
    "onnxruntime==1.26.0",
    "protobuf==4.25.4",
    "psutil==7.2.2",
    "ruamel.yaml==0.19.1",
    "scipy==1.17.1",
    "tqdm==4.70.1",
    "opencv-python-headless==4.11.0.86",
    "fast-histogram==0.14",
    "setuptools==80.9.0",
)
TORCH_REQUIREMENT = "torch==2.13.0"
TOOLKIT_REQUIREMENT = f"rknn-toolkit2=={TOOLKIT_VERSION}"
WORKER_SCRIPT = Path(__file__).with_name("rknn_worker.py")
_MARKER = "xmodal-rknn-toolkit.json"


class RknnToolkitError(XmodalError):
    """The RKNN toolkit could not be installed, started, or did not do what was asked; `log` holds
    the toolkit's log of a failed build."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


def environment_dir(cache_dir: Path | None = None) -> Path:
    """Where xmodal keeps its toolkit environment: CACHE/rknn-toolkit/VERSION-pyXY."""
    tag = f"{TOOLKIT_VERSION}-py{sys.version_info.major}{sys.version_info.minor}"
    return (cache_dir or settings.current().cache_dir) / "rknn-toolkit" / tag


def environment_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def toolkit_python(
    explicit: str | os.PathLike | None = None, progress: Progress | None = None, *, cache_dir: Path | None = None
) -> Path:
    """The Python interpreter that has rknn-toolkit2: `explicit`, else $XMODAL_RKNN_TOOLKIT_PYTHON,
    else xmodal's own environment under `cache_dir` (default: the cache folder), made on first use
    (a few minutes; reused afterwards)."""
    chosen = explicit or settings.current().rknn_toolkit_python
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise RknnToolkitError(f"{path}: no such Python interpreter (the toolkit Python given)")
        return path
    folder = environment_dir(cache_dir)
    if _installed(folder):
        return environment_python(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder.parent / ".install.lock"):
        if not _installed(folder):  # another process may have made it while we waited
            _create_environment(folder, progress or NullProgress())
    return environment_python(folder)


def _installed(folder: Path) -> bool:
    marker = folder / _MARKER
    if not marker.is_file() or not environment_python(folder).exists():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("requirements") == _all_requirements()


def _all_requirements() -> list[str]:
    return [*REQUIREMENTS, TORCH_REQUIREMENT, TOOLKIT_REQUIREMENT]


@contextmanager
def _file_lock(path: Path):
    with open(path, "a+") as fp:
        fcntl.flock(fp, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(fp, fcntl.LOCK_UN)


def _create_environment(folder: Path, progress: Progress) -> None:
    """Build the environment in a temporary folder beside `folder`, check it, then move it into
    place: an interrupted install leaves nothing that looks finished."""
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    install_log = staging / "install.log"
    steps = [
        ("virtual environment", [sys.executable, "-m", "venv", str(staging)]),
        ("toolkit dependencies", _pip(staging, *REQUIREMENTS)),
        ("torch (CPU)", _pip(staging, TORCH_REQUIREMENT)),
        (f"rknn-toolkit2 {TOOLKIT_VERSION}", _pip(staging, "--no-deps", TOOLKIT_REQUIREMENT)),
    ]
    log.warning("creating the RKNN toolkit environment in %s (once; about 1.5 GB, a few minutes)", folder)
    progress.start("RKNN toolkit environment (once)", len(steps) + 1)
    try:
        for what, command in steps:
            _run_logged(command, install_log, what)
            progress.advance()
        python = environment_python(staging)
        with ToolkitWorker(python) as worker:  # the real check: the worker starts and imports the toolkit
            versions = {k: v for k, v in worker.versions.items() if k != "executable"}
        progress.advance()
        (staging / _MARKER).write_text(
            json.dumps({"requirements": _all_requirements(), "versions": versions}, indent=2)
        )
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("RKNN toolkit environment ready: %s", folder)


def _pip(env: Path, *args: str) -> list[str]:
    return [str(environment_python(env)), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]


def _run_logged(command: list[str], install_log: Path, what: str) -> None:
    with open(install_log, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        tail = install_log.read_text(errors="replace").strip().splitlines()[-6:]
        raise RknnToolkitError(
            f"installing {what} for the RKNN toolkit failed (exit code {code}): "
            + " | ".join(line.strip() for line in tail)
            + " — name an environment that has rknn-toolkit2 with --toolkit-python or XMODAL_RKNN_TOOLKIT_PYTHON"
        )


class ToolkitWorker:
    """One worker process running rknn-toolkit2 in `python`; thread-safe, one request at a time.

    Use as a context manager, or call close(); a worker that dies raises RknnToolkitError with the
    end of its log on the next request.
    """

    def __init__(self, python: str | os.PathLike):
        self.python = Path(python)
        fd, log_path = tempfile.mkstemp(prefix="xmodal-rknn-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_path)
        self._lock = threading.Lock()
        with open(self.log_path, "ab") as log_file:
            try:
                self._process = subprocess.Popen(
                    [str(self.python), "-I", str(WORKER_SCRIPT), str(self.log_path)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                )
            except OSError as exc:
                self.log_path.unlink(missing_ok=True)
                raise RknnToolkitError(f"{self.python}: cannot start the RKNN toolkit worker: {exc}") from None
        try:
            self.versions: dict[str, Any] = self.request({"op": "hello"})[0]
        except RknnToolkitError as exc:
            self.close()
            raise RknnToolkitError(f"{self.python} cannot run rknn-toolkit2: {exc}") from None
        self.toolkit_version = str(self.versions.get("toolkit"))
        if self.toolkit_version != TOOLKIT_VERSION:
            log.warning(
                "rknn-toolkit2 %s in %s; xmodal is tested with %s", self.toolkit_version, python, TOOLKIT_VERSION
            )

    def request(self, header: dict, arrays: list[np.ndarray] = ()) -> tuple[dict, list[np.ndarray]]:
        """Send one request, wait for its answer; raises RknnToolkitError when it failed."""
        with self._lock:
            if self._process.poll() is not None:
                raise RknnToolkitError(self._death())
            try:
                write_frame(self._process.stdin, header, arrays)
                frame = read_frame(self._process.stdout)
            except (BrokenPipeError, EOFError, OSError):
                frame = None
            if frame is None:
                self._process.wait(timeout=30)
                raise RknnToolkitError(self._death())
        reply, out = frame
        if not reply.pop("ok", False):
            raise RknnToolkitError(
                str(reply.get("error") or "the toolkit worker reported a failure"), reply.get("log", "")
            )
        return reply, out

    def _death(self) -> str:
        code = self._process.poll()
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-8:] if self.log_path.exists() else []
        said = " | ".join(line.strip() for line in tail if line.strip()) or "no output"
        return f"the RKNN toolkit worker ({self.python}) exited with code {code}: {said}"

    def close(self) -> None:
        """Ask the worker to exit (kill it if it does not) and remove its log."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            try:
                with self._lock:
                    write_frame(process.stdin, {"op": "exit"})
                    read_frame(process.stdout)
                process.wait(timeout=10)
            except (OSError, EOFError, subprocess.TimeoutExpired, ValueError):
                process.kill()
                process.wait()
        for stream in (getattr(process, "stdin", None), getattr(process, "stdout", None)):
            if stream is not None:
                stream.close()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ToolkitWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: dict[Path, ToolkitWorker] = {}
_shared_lock = threading.Lock()


def shared_worker(python: Path) -> ToolkitWorker:
    """One long-lived worker per toolkit Python for this process (simulator sessions share it)."""
    with _shared_lock:
        worker = _shared.get(python)
        if worker is None or worker._process.poll() is not None:
            worker = _shared[python] = ToolkitWorker(python)
        return worker


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        for worker in _shared.values():
            worker.close()
        _shared.clear()

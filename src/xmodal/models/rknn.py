"""Rockchip NPU graphs (RKNN) of a model folder: convert, verify before writing, find them again.

Layout (Immich's): TOWER/rknpu/SOC/model.rknn for TOWER visual and textual, and beside each file
xmodal's `report.json` (toolkit version, SoC, precision, the exact build settings, cosines against
ONNX Runtime on probe inputs, where every operator runs) and, for int8 graphs, `calibration.npz`
(the samples the quantizer saw, so the simulator can rebuild the very same graph).

Every converted graph runs in Rockchip's simulator on probe inputs before anything is written. It
is written only when its embeddings match ONNX Runtime (cosine >= 0.999 for fp16, >= 0.99 for
int8, the lowest over all probes), the toolkit reported no error of its own, and no computing
operator was left to the board's CPU (unless allowed). Otherwise the report says why, names the
operators, and the tower stays on its ONNX graph, which is what Immich then uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.errors import InvalidArgumentError, MediaError, ModelFormatError, XmodalError
from xmodal.media.image import ImageInput
from xmodal.models.preprocess import resize_for_model
from xmodal.progress import NullProgress, Progress

log = logging.getLogger(__name__)

SOCS = ("rk3566", "rk3568", "rk3576", "rk3588")  # the SoCs Immich ships RKNN graphs for
TOWERS = ("visual", "textual")
MIN_COSINE = {"fp16": 0.999, "int8": 0.99}
INT8_ALGORITHMS = ("normal", "mmse", "kl_divergence")
# Operators the compiler places on the CPU that move no data: the graph's ends and reshapes.
LAYOUT_OPERATORS = frozenset({"InputOperator", "OutputOperator", "Reshape"})
# The toolkit logs this error for each operator it placed on the CPU; those are judged by the
# operator table instead.
_CPU_PLACEMENT_ERROR = "Unkown op target"
RKNN_FILE, REPORT_FILE, CALIBRATION_FILE = "model.rknn", "report.json", "calibration.npz"
REPORT_FORMAT = 1
PROBE_IMAGES = 24
PROBE_CAPTIONS = (
    "a photo of a dog",
    "two cats sleeping on a red sofa",
    "a small red circle at the top left",
    "a bowl of fruit on a wooden table",
    "people walking on a beach at sunset",
    "a snowy mountain under a blue sky",
    "a man riding a bicycle in the city",
    "a plate of pasta with tomato sauce",
    "a green star",
    "an old black and white photograph of a street",
    "children playing football in a park",
    "a close-up of a yellow flower",
    "a train crossing a bridge over a river",
    "a birthday cake with candles",
    "a laptop and a cup of coffee on a desk",
    "a large blue square at the centre",
    "the quick brown fox jumps over the lazy dog",
    "a boat on a calm lake at dawn",
    "a crowded market with colourful stalls",
    "a black circle",
)


@dataclass(frozen=True)
class NpuOperator:
    """One row of the compiler's layer table: where an operator of the built graph runs."""

    type: str
    name: str
    dtype: str
    target: str  # "NPU" or "CPU"


@dataclass
class BuildSettings:
    """Everything the toolkit is asked for one graph; stored in the report so the simulator can
    rebuild exactly the graph that was written."""

    soc: str
    precision: str  # "fp16" or "int8"
    inputs: list[str]
    shapes: list[list[int]]
    dtypes: list[str]  # numpy dtype of each input as the NPU graph takes it
    data_format: str | None  # "nhwc" / "nchw" for images, None for token ids
    mean: list[float] | None = None  # folded into the graph: it takes uint8 RGB pixels
    std: list[float] | None = None
    rewrite: bool = False  # the text tower's token handling rewritten for the NPU (npu_graph)
    custom_string: str | None = None
    quantized_algorithm: str = "normal"  # int8: the toolkit's calibration (normal, mmse, kl_divergence)
    auto_hybrid: bool = False  # int8: the toolkit keeps layers in fp16 where int8 loses too much

    def request(self, onnx: Path, export: Path | None = None) -> dict:
        return {
            "op": "build",
            "onnx": str(Path(onnx).absolute()),  # the worker runs in a folder of its own
            "export": str(Path(export).absolute()) if export else None,
            **{k: v for k, v in asdict(self).items() if k not in ("dtypes", "data_format")},
        }

    @property
    def folded(self) -> bool:
        return self.mean is not None


@dataclass
class TowerReport:
    """What one conversion of one tower for one SoC did and found (the report.json beside it)."""

    tower: str
    soc: str
    precision: str
    written: bool
    reasons: list[str]
    build: BuildSettings
    onnx_sha256: str
    toolkit_version: str
    threshold: float
    cosine_min: float | None = None
    cosine_mean: float | None = None
    probes: int = 0
    operators: list[NpuOperator] = field(default_factory=list)
    toolkit_errors: list[str] = field(default_factory=list)
    rewrite: dict | None = None
    calibration: dict | None = None
    seconds: float = 0.0
    created: str = ""
    xmodal_version: str = ""

    @property
    def cpu_operators(self) -> list[NpuOperator]:
        """Operators that compute on the board's CPU (layout-only ones excluded)."""
        return [op for op in self.operators if op.target == "CPU" and op.type not in LAYOUT_OPERATORS]

    @property
    def status(self) -> str:
        return "written" if self.written else "left on ONNX"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = REPORT_FORMAT
        data["status"] = self.status
        data["operators"] = {
            "npu": dict(Counter(op.type for op in self.operators if op.target == "NPU")),
            "cpu": [asdict(op) for op in self.cpu_operators],
            "all": [asdict(op) for op in self.operators],
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> TowerReport:
        try:
            values = {k: v for k, v in data.items() if k not in ("format", "status")}
            values["build"] = BuildSettings(**values["build"])
            values["operators"] = [NpuOperator(**op) for op in (values.get("operators") or {}).get("all", [])]
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(source, f"not an xmodal RKNN report ({exc})") from None


@dataclass
class CalibrationSet:
    """Samples for int8 quantization: images (the user's photos or a dataset's) and captions."""

    images: Sequence[ImageInput] = ()
    texts: Sequence[str] = ()
    source: str = ""


@dataclass(frozen=True)
class RknnOptions:
    """How to convert: SoCs, precision per tower and what the verification accepts."""

    socs: tuple[str, ...] = ("rk3588",)
    int8: bool = False  # the visual tower in int8 (needs calibration images)
    int8_text: bool = False  # the textual tower in int8 too (calibrated with captions)
    fold_preprocess: bool = True  # mean/std in the graph: it takes uint8 RGB pixels
    npu_rewrite: bool = True  # rewrite the text tower's token handling for the NPU when possible
    allow_cpu: frozenset[str] = frozenset()  # operator types accepted on the board's CPU
    towers: tuple[str, ...] = TOWERS
    int8_algorithm: str = "normal"  # the toolkit's calibration: normal (min/max), mmse, kl_divergence
    int8_hybrid: bool = False  # let the toolkit keep the layers int8 hurts most in fp16

    def __post_init__(self) -> None:
        if self.int8_algorithm not in INT8_ALGORITHMS:
            raise InvalidArgumentError("int8 algorithm", self.int8_algorithm, INT8_ALGORITHMS)
        bad = [s for s in self.socs if s not in SOCS]
        if bad or not self.socs:
            raise InvalidArgumentError("soc", ",".join(bad) or "(none)", SOCS)
        bad = [t for t in self.towers if t not in TOWERS]
        if bad or not self.towers:
            raise InvalidArgumentError("tower", ",".join(bad) or "(none)", TOWERS)

    def precision(self, tower: str) -> str:
        return "int8" if (self.int8 if tower == "visual" else self.int8_text) else "fp16"


@dataclass
class RknnConversion:
    """The folder that holds the graphs and one report per tower and SoC."""

    folder: Path
    reports: list[TowerReport]

    @property
    def written(self) -> list[TowerReport]:
        return [r for r in self.reports if r.written]


# -- the folder layout ------------------------------------------------------------------------


def rknn_dir(onnx_path: Path, soc: str) -> Path:
    """Where the RKNN graph of the tower whose ONNX graph is `onnx_path` lives for `soc`."""
    return onnx_path.parent / "rknpu" / soc


def read_report(onnx_path: Path, soc: str) -> TowerReport | None:
    """The report of a tower's conversion for `soc`, or None if it was never converted."""
    path = rknn_dir(onnx_path, soc) / REPORT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFormatError(path, f"unreadable RKNN report: {exc}") from None
    return TowerReport.from_dict(data, path)


def converted_socs(folder: Path) -> list[str]:
    """SoCs for which some tower of the model folder has an RKNN graph."""
    return [s for s in SOCS if any((folder / t / "rknpu" / s / RKNN_FILE).is_file() for t in TOWERS)]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- conversion -------------------------------------------------------------------------------


def convert_to_rknn(
    model: str | Path,
    options: RknnOptions = RknnOptions(),
    *,
    out: Path | None = None,
    calibration: CalibrationSet | None = None,
    toolkit_python: str | Path | None = None,
    progress: Progress | None = None,
) -> RknnConversion:
    """Convert the towers of `model` (a name or folder) to RKNN for each SoC of `options`.

    Writes into the model folder itself, or into a copy at `out` (needed for shipped models and
    the hub cache). Each graph is verified in the simulator first (see the module docstring); the
    returned reports say what was written and why anything was not.
    """
    from xmodal.models.config import load_model_config
    from xmodal.models.encoder import Encoder
    from xmodal.models.registry import resolve_model
    from xmodal.models.rknn_toolkit import shared_worker
    from xmodal.models.rknn_toolkit import toolkit_python as find_toolkit

    progress = progress or NullProgress()
    if (options.int8 or options.int8_text) and calibration is None:
        raise InvalidArgumentError("calibration", None, "calibration images (and captions) for int8")
    if options.int8 and calibration is not None and not calibration.images:
        raise InvalidArgumentError("calibration", calibration.source, "at least one calibration image for int8")
    source, name = resolve_model(model)
    folder = _target_folder(source, name, out)
    encoder = Encoder(load_model_config(folder), name)
    python = find_toolkit(toolkit_python, progress)
    probes = _Probes.make(encoder, calibration)
    reports = []
    worker = shared_worker(python)  # kept for later conversions and simulator sessions of this process
    progress.start(f"{name}: RKNN graphs", len(options.socs) * len(options.towers))
    for soc in options.socs:
        for tower in options.towers:
            converter = _TowerConversion(worker, encoder, tower, soc, options, probes)
            reports.append(converter.run())
            progress.advance()
    return RknnConversion(folder, reports)


def _target_folder(source: Path, name: str, out: Path | None) -> Path:
    """The model folder to write into: `source` itself, or a copy of it at `out`."""
    from huggingface_hub import constants

    from xmodal.models.registry import shipped_root

    if out is None:
        where = {shipped_root(): "shipped inside xmodal", Path(constants.HF_HUB_CACHE): "in the Hugging Face cache"}
        for root, what in where.items():
            if source.resolve().is_relative_to(root.resolve()):
                raise XmodalError(
                    f"{name} is {what}; give an output folder (--out DIR) for a copy with its RKNN graphs"
                )
        return source
    out = Path(out).expanduser()
    if out.exists():
        if out.resolve() == source.resolve() or _same_graphs(source, out):
            return out
        raise XmodalError(f"{out} exists and is not a copy of {name}; choose another output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        staging = Path(tmp) / "model"
        shutil.copytree(source, staging)  # follows the hub cache's symlinks: real files in the copy
        staging.rename(out)
    return out


def _same_graphs(a: Path, b: Path) -> bool:
    for tower in TOWERS:
        pa, pb = a / tower / "model.onnx", b / tower / "model.onnx"
        if not pb.is_file() or pa.stat().st_size != pb.stat().st_size or file_sha256(pa) != file_sha256(pb):
            return False
    return True


@dataclass
class _Probes:
    """Inputs every graph is checked on, and the int8 calibration samples."""

    images: np.ndarray  # uint8 (N, S, S, 3), resized for the model
    tokens: Any  # TokenBatch of the probe captions
    calibration_images: np.ndarray | None
    calibration_tokens: Any
    calibration_source: str

    @classmethod
    def make(cls, encoder, calibration: CalibrationSet | None) -> _Probes:
        size = encoder.image_size
        images = synthetic_images(PROBE_IMAGES, size)
        cal_images, cal_tokens, source = None, None, ""
        if calibration is not None:
            source = calibration.source
            pixels = []
            for item in calibration.images:
                try:
                    pixels.append(resize_image(encoder, item))
                except MediaError as exc:  # a bad photo is left out, the rest calibrate
                    log.warning("calibration: skipped %s", exc)
            if pixels:
                held_out = min(16, len(pixels) // 4)  # checked on, never calibrated with
                cal_images = np.stack(pixels[: len(pixels) - held_out])
                if held_out:
                    images = np.concatenate([np.stack(pixels[len(pixels) - held_out :]), images])
            texts = list(calibration.texts) or list(PROBE_CAPTIONS)
            cal_tokens = encoder.tokenize(texts)
        return cls(images, encoder.tokenize(list(PROBE_CAPTIONS)), cal_images, cal_tokens, source)


def resize_image(encoder, item: ImageInput) -> np.ndarray:
    """An image decoded and resized (cropped) for the model: uint8 RGB (S, S, 3)."""
    return np.asarray(resize_for_model(encoder.decode(item).image, encoder.config.preprocess), dtype=np.uint8)


def synthetic_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Deterministic photo-like test images: colour gradients with blobs, bars and grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        angle = rng.uniform(0, np.pi)
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = a + (b - a) * (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
        for _ in range(rng.integers(2, 6)):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
            if rng.random() < 0.5:
                inside = (np.abs(xx - cx) < r) & (np.abs(yy - cy) < r / 3)
            img[inside] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 6, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


class _TowerConversion:
    """Build one tower for one SoC, check it in the simulator, write it or leave it on ONNX."""

    def __init__(self, worker, encoder, tower: str, soc: str, options: RknnOptions, probes: _Probes):
        self.worker, self.encoder, self.tower, self.soc = worker, encoder, tower, soc
        self.options, self.probes = options, probes
        self.onnx = encoder.config.visual_path if tower == "visual" else encoder.config.textual_path
        self.precision = options.precision(tower)
        self.session = encoder.session(tower)

    def run(self) -> TowerReport:
        from xmodal import __version__

        settings = self.settings()
        report = TowerReport(
            tower=self.tower,
            soc=self.soc,
            precision=self.precision,
            written=False,
            reasons=[],
            build=settings,
            onnx_sha256=file_sha256(self.onnx),
            toolkit_version=self.worker.toolkit_version,
            threshold=MIN_COSINE[self.precision],
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            xmodal_version=__version__,
        )
        calibration = self.calibration(settings) if self.precision == "int8" else None
        with tempfile.TemporaryDirectory(prefix=f".{self.soc}.", dir=self.onnx.parent) as tmp:
            staging = Path(tmp) / self.soc
            staging.mkdir()
            self.build_and_check(report, settings, calibration, staging)
            if report.written and calibration is not None:
                np.savez_compressed(staging / CALIBRATION_FILE, *calibration)
                report.calibration = {
                    "file": CALIBRATION_FILE,
                    "samples": int(len(calibration[0])),
                    "sha256": file_sha256(staging / CALIBRATION_FILE),
                    "source": self.probes.calibration_source,
                }
            self.publish(report, staging)
        log.info("%s %s %s: %s %s", self.tower, self.soc, self.precision, report.status, "; ".join(report.reasons))
        return report

    def settings(self) -> BuildSettings:
        settings = self._settings()
        if self.precision == "int8":
            settings.quantized_algorithm = self.options.int8_algorithm
            settings.auto_hybrid = self.options.int8_hybrid
        return settings

    def _settings(self) -> BuildSettings:
        from xmodal.models.rknn_toolkit import TOOLKIT_VERSION

        names = list(self.session.input_names)
        if self.tower == "visual":
            size = self.encoder.image_size
            cfg = self.encoder.config.preprocess
            fold = self.options.fold_preprocess
            return BuildSettings(
                soc=self.soc,
                precision=self.precision,
                inputs=names[:1],
                shapes=[[1, 3, size, size]],
                dtypes=["uint8" if fold else "float32"],
                data_format="nhwc" if fold else "nchw",
                mean=list(cfg.mean) if fold else None,
                std=list(cfg.std) if fold else None,
                custom_string=json.dumps(
                    {"dims": [{}], "xmodal": {"input": "uint8 RGB NHWC", "toolkit": TOOLKIT_VERSION}}
                )
                if fold
                else None,
            )
        length = self.encoder.config.text.context_length
        dtypes = [np.dtype(self.session.input_dtypes[n]).name for n in names]
        return BuildSettings(
            soc=self.soc,
            precision=self.precision,
            inputs=names,
            shapes=[[1, length] for _ in names],
            dtypes=dtypes,
            data_format=None,
            rewrite=self.options.npu_rewrite and len(names) == 1,
        )

    def calibration(self, settings: BuildSettings) -> list[np.ndarray]:
        if self.tower == "visual":
            pixels = self.probes.calibration_images
            if pixels is None:
                raise InvalidArgumentError("calibration", self.probes.calibration_source, "calibration images for int8")
            return [npu_image_input(settings, pixels, to_npu_layout=False, preprocess=self.encoder.preprocess)]
        return token_inputs(settings, self.probes.calibration_tokens)

    def build_and_check(self, report: TowerReport, settings: BuildSettings, calibration, staging: Path) -> None:
        from xmodal.models.rknn_toolkit import RknnToolkitError

        request = settings.request(self.onnx, export=staging / RKNN_FILE)
        try:
            reply, _ = self.worker.request(request, calibration or [])
        except RknnToolkitError as exc:
            report.operators, report.toolkit_errors = parse_layer_table(exc.log), toolkit_errors(exc.log)
            report.reasons.append(f"the toolkit could not build it: {exc}")
            return
        report.seconds = round(float(reply["seconds"]), 2)
        report.rewrite = reply.get("rewrite")
        report.operators, report.toolkit_errors = parse_layer_table(reply["log"]), toolkit_errors(reply["log"])
        try:
            cosines = self.check(settings, reply["handle"])
        finally:
            self.worker.request({"op": "release", "handle": reply["handle"]})
        report.probes, report.cosine_min, report.cosine_mean = len(cosines), float(cosines.min()), float(cosines.mean())
        report.reasons += verdict(report, self.options.allow_cpu)
        report.written = not report.reasons

    def check(self, settings: BuildSettings, handle: int) -> np.ndarray:
        """Cosine of every probe's simulator embedding with ONNX Runtime's."""
        if self.tower == "visual":
            normalized = self.encoder.preprocess.normalize(self.probes.images)
            reference = self.encoder.embed_pixels(normalized)
            inputs = [npu_image_input(settings, normalized, preprocess=self.encoder.preprocess)]
        else:
            reference = self.encoder.embed_tokens(self.probes.tokens)
            inputs = token_inputs(settings, self.probes.tokens)
        _, (simulated,) = self.worker.request(
            {"op": "run", "handle": handle, "data_format": settings.data_format}, inputs
        )
        return np.sum(_unit(simulated) * reference, axis=1)

    def publish(self, report: TowerReport, staging: Path) -> None:
        """Move the staged folder into TOWER/rknpu/SOC; a failed conversion keeps an earlier
        verified graph of the same ONNX file and removes one made from another."""
        final = rknn_dir(self.onnx, self.soc)
        if not report.written:
            (staging / RKNN_FILE).unlink(missing_ok=True)
            earlier = read_report(self.onnx, self.soc) if (final / REPORT_FILE).is_file() else None
            if (
                earlier
                and earlier.written
                and earlier.onnx_sha256 == report.onnx_sha256
                and (final / RKNN_FILE).is_file()
            ):
                report.reasons.append(f"kept the earlier verified graph in {final}")
                return
        (staging / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2))
        final.parent.mkdir(parents=True, exist_ok=True)
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)


def verdict(report: TowerReport, allow_cpu: frozenset[str]) -> list[str]:
    """Why a built, simulated graph may not be written (empty: it may)."""
    reasons = []
    if report.cosine_min is not None and not report.cosine_min >= report.threshold:
        reasons.append(
            f"cosine with ONNX Runtime {report.cosine_min:.6f} < {report.threshold} (lowest of {report.probes} probes)"
        )
    refused = [op for op in report.cpu_operators if op.type not in allow_cpu]
    if refused:
        names = ", ".join(f"{op.type} ({op.name})" for op in refused[:12]) + (" ..." if len(refused) > 12 else "")
        reasons.append(f"{len(refused)} operators would run on the board's CPU, not the NPU: {names}")
    other = [e for e in report.toolkit_errors if _CPU_PLACEMENT_ERROR not in e]
    if other:
        reasons.append("the toolkit reported errors: " + " | ".join(dict.fromkeys(other)))
    return reasons


# -- inputs as the NPU graph takes them -----------------------------------------------------------


def npu_image_input(settings: BuildSettings, normalized: np.ndarray, *, preprocess, to_npu_layout: bool = True):
    """The visual tower's normalized (N, 3, S, S) input as the NPU graph takes it: uint8 RGB pixels
    (NHWC to feed, NCHW for calibration files) when mean/std are folded in, else unchanged."""
    if not settings.folded:
        return np.ascontiguousarray(normalized, dtype=np.float32)
    pixels = normalized if normalized.dtype == np.uint8 else preprocess.pixels(normalized)
    return pixels if to_npu_layout else np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))


def token_inputs(settings: BuildSettings, tokens) -> list[np.ndarray]:
    """Token ids (and attention mask, for graphs that take one) in the graph's integer type."""
    arrays = {"attention_mask": tokens.attention_mask}
    return [
        np.ascontiguousarray(arrays.get(name, tokens.ids), dtype=dtype)
        for name, dtype in zip(settings.inputs, settings.dtypes, strict=True)
    ]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# -- the toolkit's log ----------------------------------------------------------------------------

_LAYER_ROW = re.compile(
    r"^D RKNN: \[[^\]]*\]\s+\d+\s+(?P<type>\S+)\s+(?P<dtype>\S+)\s+(?P<target>CPU|NPU|GPU)\s+\S+\s+\S+\s+\S+\s+\S+\s+(?P<full>.+?)\s*$"
)


def parse_layer_table(log_text: str) -> list[NpuOperator]:
    """The operators of the compiler's "Network Layer Information Table" (verbose build log)."""
    start = log_text.find("Network Layer Information Table")
    if start < 0:
        return []
    operators = []
    for line in log_text[start:].splitlines()[1:]:
        if "Information Table" in line:
            break
        match = _LAYER_ROW.match(line.strip())
        if match:
            full = match["full"]
            name = full.split(":", 1)[1] if ":" in full else full
            operators.append(NpuOperator(match["type"], name, match["dtype"], match["target"]))
    return operators


def toolkit_errors(log_text: str) -> list[str]:
    """The toolkit's error lines (its C compiler's `E RKNN: [time] ...` and Python `E step: ...`)."""
    errors = []
    for line in log_text.splitlines():
        if line.startswith("E "):
            text = re.sub(r"^E RKNN: \[[^\]]*\]\s*", "", line).removeprefix("E ").strip()
            if text and "Traceback" not in text and "toolkit2 version" not in text:
                errors.append(text)
    return errors


# -- runtimes -------------------------------------------------------------------------------------


def board_soc(compatible: Path = Path("/proc/device-tree/compatible")) -> str | None:
    """The Rockchip SoC this machine is (from its device tree), or None elsewhere."""
    try:
        text = compatible.read_bytes().decode("ascii", "replace")
    except OSError:
        return None
    return next((soc for soc in SOCS if soc in text), None)


def resolve_npu_runtime(folder: Path, runtime: str) -> tuple[str, str]:
    """("rknn-sim" | "rknn", SoC) for a runtime of the form KIND or KIND:SOC on a model folder.

    Without a SoC: the simulator takes the only converted one, else rk3588; the board its own."""
    kind, _, soc = runtime.partition(":")
    if soc:
        if soc not in SOCS:
            raise InvalidArgumentError("runtime SoC", soc, SOCS)
        return kind, soc
    if kind == "rknn":
        found = board_soc()
        if found is None:
            raise InvalidArgumentError("runtime", runtime, "a Rockchip board for 'rknn' (use 'rknn-sim' elsewhere)")
        return kind, found
    converted = converted_socs(folder)
    if not converted:
        raise ModelFormatError(
            folder, "has no RKNN graphs (TOWER/rknpu/SOC/model.rknn); make them with `xmodal models rknn`"
        )
    if len(converted) == 1 or "rk3588" in converted:
        return kind, converted[0] if len(converted) == 1 else "rk3588"
    raise InvalidArgumentError("runtime", runtime, [f"{kind}:{s}" for s in converted])


def npu_precision(folder: Path, soc: str) -> str:
    """What each tower runs as on `soc`: "fp16", "int8", or per tower "int8/fp16", "fp16/onnx"."""
    labels = []
    for tower in TOWERS:
        report = read_report(folder / tower / "model.onnx", soc)
        on_npu = (
            report is not None
            and report.written
            and (rknn_dir(folder / tower / "model.onnx", soc) / RKNN_FILE).is_file()
        )
        labels.append(report.precision if on_npu else "onnx")
    return labels[0] if labels[0] == labels[1] else "/".join(labels)


def graphs_signature(folder: Path, soc: str) -> bytes:
    """Identifies the RKNN graphs of both towers for caches (their reports name build and sources)."""
    parts = []
    for tower in TOWERS:
        path = rknn_dir(folder / tower / "model.onnx", soc) / REPORT_FILE
        parts.append(path.read_bytes() if path.is_file() else b"-")
    return b"\0".join(parts)

"""Load one model in a fresh Python process and report its load time and resident memory.

Run by `xmodal.eval.cost.probe_model` as `python -m xmodal.eval.model_probe REQUEST_JSON`; prints
one JSON line. A fresh process is the honest measure: the memory a model adds is what its process
holds at its high-water mark over what the same process held with the libraries imported and the
input batch allocated, untouched by other models, caches or earlier allocations of a parent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    """A `VmXxx:  N kB` line of /proc/self/status in bytes (Linux), else None."""
    if _STATUS.is_file():
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def current_rss_bytes() -> int | None:
    """Resident memory now (Linux), else None."""
    return _status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Restart the resident high-water mark from the current RSS (Linux); False where not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int | None:
    """The process's resident high-water mark. Linux: VmHWM, this process image's own. Elsewhere
    getrusage's ru_maxrss, which may include what the parent held when it started this process."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def probe(request: dict) -> dict:
    """Load the model of `request` (folder, precision, runtime, threads), embed one image batch
    and one text batch of the run's size, and measure what that took."""
    import numpy as np
    import onnxruntime  # noqa: F401  (the runtime's own libraries are the baseline, not the model)

    from xmodal.models import load_model
    from xmodal.models.config import load_model_config

    if request["precision"] == "bf16":
        import openvino  # noqa: F401

    size = load_model_config(Path(request["folder"])).preprocess.size
    pixels = np.random.default_rng(0).standard_normal((request["batch_size"], 3, size, size), dtype=np.float32)
    texts = list(request["texts"])
    import_peak = peak_rss_bytes()  # may exceed the RSS now: imports allocate and free
    baseline = current_rss_bytes()
    exact = baseline is not None and reset_peak_rss()
    if not exact:
        baseline = import_peak  # the model's share below is then a lower bound
    started = time.perf_counter()
    encoder = load_model(
        request["folder"], precision=request["precision"], runtime=request["runtime"], threads=request["threads"]
    )
    encoder.load()
    load_s = time.perf_counter() - started
    after_load = current_rss_bytes()
    encoder.embed_pixels(pixels)
    encoder.embed_texts(texts, request.get("language"), batch_size=len(texts))
    peak = peak_rss_bytes()  # since the baseline where `exact`
    known = peak is not None and baseline is not None
    return {
        "load_s": load_s,
        "baseline_rss_bytes": baseline,
        "after_load_rss_bytes": after_load,
        "peak_rss_bytes": max(peak, import_peak or 0) if peak is not None else None,  # the whole process
        "model_rss_bytes": peak - baseline if known else None,
        "model_rss_exact": exact,
    }


def main() -> None:
    print(json.dumps(probe(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()

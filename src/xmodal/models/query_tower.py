"""A faster text tower for search queries: the int8 copy of an fp32 model's text graph, saved as
ONNX Runtime's optimized graph for this CPU — used only where its embeddings stay within cosine
0.999 of the fp32 tower on probe texts, measured once per model and CPU kind.

Why: a one-shot `xmodal search` spends most of its time opening and running the text tower (a
ViT-B/32 text graph is 253 MB in fp32). The int8 copy is 140 MB, opens in ~60 % of the CPU time and
encodes a query ~3x faster (BENCHMARKS.md); the saved optimized graph skips the graph rewrites at
each open. Indexed content keeps the model's own towers: only queries use this one, and only
where it agrees with fp32. `prepare` (run by index runs, never by searches) makes and checks it;
`ready_path` is what a search asks, costing a stat and a small JSON read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from xmodal import settings
from xmodal.machine import cpu_info

log = logging.getLogger(__name__)

MIN_COSINE = 0.999
PROBE_TEXTS = (
    "a dog",
    "a photo of a cat sleeping on a red sofa",
    "sunset over the sea with a sailing boat",
    "two children playing football in a park",
    "a bowl of fruit on a wooden kitchen table",
    "snowy mountains above a lake at dawn",
    "a crowded street market at night with lanterns",
    "close-up of a yellow flower with a bee",
    "an old black and white portrait of a man with a hat",
    "a plate of pasta with tomato sauce and basil",
    "the eiffel tower",
    "a blurry photo taken from a moving train window showing fields, trees and a small village in the distance",
    "receipt",
    "a screenshot of a chat conversation",
    "birthday cake with candles",
    "a red circle",
)


def _folder(textual: Path) -> Path:
    """Where the query tower of this text graph lives for this CPU kind."""
    stat = textual.stat()
    cpu = cpu_info()
    key = f"{textual.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{cpu.model}|{','.join(cpu.flags)}"
    return settings.current().cache_dir / "query-tower" / hashlib.sha256(key.encode()).hexdigest()[:20]


def ready_path(textual: Path) -> Path | None:
    """The checked query tower of this fp32 text graph, or None (not prepared, or it disagreed)."""
    folder = _folder(textual)
    try:
        verdict = json.loads((folder / "verdict.json").read_text())
    except (OSError, ValueError):
        return None
    graph = folder / "model.ort"
    return graph if verdict.get("ok") and graph.is_file() else None


def prepare(encoder) -> dict:
    """Make the int8 optimized copy of `encoder`'s fp32 text tower, compare it with fp32 on the
    probe texts and record the verdict (once per model and CPU kind). Returns the verdict."""
    textual = encoder.config.textual_path
    folder = _folder(textual)
    try:
        return json.loads((folder / "verdict.json").read_text())
    except (OSError, ValueError):
        pass
    import onnxruntime as ort

    from xmodal.models.quantize import quantized_copy

    folder.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # not its note that the saved graph suits this CPU only: so it is keyed
    tmp = folder / f".model.{os.getpid()}.ort"
    options.optimized_model_filepath = str(tmp)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(quantized_copy(textual)), options, providers=["CPUExecutionProvider"])
    os.replace(tmp, folder / "model.ort")
    reference = encoder.embed_texts(list(PROBE_TEXTS))
    quick = encoder.embed_tokens(encoder.tokenize(list(PROBE_TEXTS)), session=open_session(folder / "model.ort"))
    cosine = float(np.min(np.sum(reference * quick, axis=1)))
    verdict = {"ok": cosine >= MIN_COSINE, "min_cosine": round(cosine, 6), "probe_texts": len(PROBE_TEXTS)}
    (folder / "verdict.json").write_text(json.dumps(verdict))
    log.info("%s: int8 query tower %s (lowest cosine to fp32 %.5f on %d probe texts)", encoder.name,
             "used" if verdict["ok"] else "not used", cosine, len(PROBE_TEXTS))  # fmt: skip
    return verdict


def open_session(graph: Path, threads: int | None = None):
    """An ONNX Runtime session of a saved optimized (ORT format) graph: no rewrites at open."""
    from xmodal.models.runtime import OnnxRuntimeSession

    return OnnxRuntimeSession(graph, threads, saved_optimized=True)

"""Faster text towers for search queries, made once per model and CPU kind by index runs and only
used where they agree with the model's own fp32 tower on probe texts:

* "mapped" (fp32, used by default): the text graph saved as ONNX Runtime's optimized graph with its
  weights in a separate file, which ONNX Runtime maps instead of reading, opened without rewrites
  or weight prepacking. A one-shot `xmodal search` spent most of its time opening the text tower
  (a ViT-B/32 text graph is 253 MB): parsing, optimizing and copying the weights cost ~0.7 s of CPU
  here, the mapped copy ~35 ms; its encode costs ~1.3x (unpacked weights), a net gain of ~4x for a
  process that embeds one query (BENCHMARKS.md). Same arithmetic: cosine >= 0.99999.
* "int8" (opt-in, XMODAL_QUERY_INT8=1): the int8 copy saved as an optimized ORT-format graph; opens
  and encodes faster still, but only within cosine 0.999 of fp32, so near ties can swap.

A long-lived process (a resident server) keeps the model's own prepacked fp32 tower, which encodes
fastest once open. Indexed content always keeps the model's own towers. `prepare` (run by index
runs, never by searches) makes and checks a kind; `ready_path` is what a search asks, costing a
stat and a small JSON read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from xmodal import settings
from xmodal.machine import cpu_info
from xmodal.models.quantize import PROBE_TEXTS  # the probe texts every precision check uses

log = logging.getLogger(__name__)

KINDS = ("mapped", "int8")
MIN_COSINE = {"mapped": 0.99999, "int8": 0.999}
MAPPED_MIN_BYTES = 64 << 20  # smaller text graphs open quickly as they are; their encode would only slow down
GRAPH = {"mapped": "mapped/model.onnx", "int8": "model.ort"}
VERDICT = {"mapped": "mapped.json", "int8": "verdict.json"}


def _folder(textual: Path) -> Path:
    """Where the query tower of this text graph lives for this CPU kind."""
    stat = textual.stat()
    cpu = cpu_info()
    key = f"{textual.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{cpu.model}|{','.join(cpu.flags)}"
    return settings.current().cache_dir / "query-tower" / hashlib.sha256(key.encode()).hexdigest()[:20]


def ready_path(textual: Path, kind: str = "int8") -> Path | None:
    """The checked query tower of this kind for this fp32 text graph, or None (not prepared, or it
    disagreed with fp32)."""
    folder = _folder(textual)
    try:
        verdict = json.loads((folder / VERDICT[kind]).read_text())
    except (OSError, ValueError):
        return None
    graph = folder / GRAPH[kind]
    return graph if verdict.get("ok") and graph.is_file() else None


def wanted(textual: Path, kind: str) -> bool:
    """Whether this kind of query tower is worth making for this text graph."""
    if kind == "int8":
        return settings.current().query_int8
    return textual.stat().st_size >= MAPPED_MIN_BYTES


def prepare(encoder, kind: str = "int8") -> dict:
    """Make the query tower of this kind from `encoder`'s fp32 text tower, compare it with fp32 on
    the probe texts and record the verdict (once per model and CPU kind). Returns the verdict."""
    textual = encoder.config.textual_path
    folder = _folder(textual)
    try:
        return json.loads((folder / VERDICT[kind]).read_text())
    except (OSError, ValueError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "int8":
        _save_int8(textual, folder)
    else:
        _save_mapped(textual, folder)
    graph = folder / GRAPH[kind]
    reference = encoder.embed_texts(list(PROBE_TEXTS))
    quick = encoder.embed_tokens(encoder.tokenize(list(PROBE_TEXTS)), session=open_session(graph, kind=kind))
    cosine = float(np.min(np.sum(reference * quick, axis=1)))
    verdict = {"ok": cosine >= MIN_COSINE[kind], "min_cosine": round(cosine, 6), "probe_texts": len(PROBE_TEXTS)}
    (folder / VERDICT[kind]).write_text(json.dumps(verdict))
    log.info("%s: %s query tower %s (lowest cosine to fp32 %.6f on %d probe texts)", encoder.name, kind,
             "used" if verdict["ok"] else "not used", cosine, len(PROBE_TEXTS))  # fmt: skip
    return verdict


def _optimizing(saved: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # not its note that the saved graph suits this CPU only: so it is keyed
    options.optimized_model_filepath = str(saved)
    return options


def _save_int8(textual: Path, folder: Path) -> None:
    import onnxruntime as ort

    from xmodal.models.quantize import cpu_int8, quantized_copy

    tmp = folder / f".model.{os.getpid()}.ort"
    options = _optimizing(tmp)
    options.add_session_config_entry("session.save_model_format", "ORT")
    copy = quantized_copy(textual, reduce_range=cpu_int8().saturates)  # the weight range this CPU computes exactly
    ort.InferenceSession(str(copy), options, providers=["CPUExecutionProvider"])
    os.replace(tmp, folder / GRAPH["int8"])


def _save_mapped(textual: Path, folder: Path) -> None:
    """The optimized graph and, beside it, its weights (the file names the graph refers to), made
    in a scratch folder and moved into place whole."""
    import onnxruntime as ort

    final = folder / Path(GRAPH["mapped"]).parent
    scratch = folder / f".mapped.{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    options = _optimizing(scratch / "model.onnx")
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.weights")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(textual), options, providers=["CPUExecutionProvider"])
    shutil.rmtree(final, ignore_errors=True)  # one left by a run killed before its verdict
    os.replace(scratch, final)


def open_session(graph: Path, threads: int | None = None, kind: str = "int8"):
    """An ONNX Runtime session of a saved optimized graph: no rewrites at open; a mapped one's
    weights are used where they lie (no prepacking)."""
    from xmodal.models.runtime import OnnxRuntimeSession

    return OnnxRuntimeSession(graph, threads, saved_optimized=True, prepack=kind != "mapped")

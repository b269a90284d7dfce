"""Write the ONNX graphs exact search scores blocks with (src/xmodal/store/index/graphs/).

    scores = queries @ cast_to_float32(vectors).T + bias;  values, indices = TopK(scores, k)

One graph per storage dtype (float16, float32). They are tiny and shipped with xmodal, so searching
needs ONNX Runtime only; this script (which needs the `onnx` package) is how they were made, and
tests/test_vector_index.py checks the shipped files are what it makes.

    python scripts/make_scan_graphs.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

GRAPHS = Path(__file__).resolve().parents[1] / "src" / "xmodal" / "store" / "index" / "graphs"


def scan_graph(storage: str) -> bytes:
    """The serialized scoring graph for vectors stored as `storage` ("fp16" or "fp32")."""
    from onnx import TensorProto, checker, helper

    dtype = {"fp16": TensorProto.FLOAT16, "fp32": TensorProto.FLOAT}[storage]
    nodes = []
    rows = "vectors"
    if storage != "fp32":
        nodes.append(helper.make_node("Cast", ["vectors"], ["rows"], to=TensorProto.FLOAT))
        rows = "rows"
    nodes += [
        helper.make_node("Gemm", ["queries", rows], ["raw"], transB=1),
        helper.make_node("Add", ["raw", "bias"], ["scores"]),
        helper.make_node("TopK", ["scores", "k"], ["values", "indices"], axis=1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes,
        f"xmodal_exact_scan_{storage}",
        [
            helper.make_tensor_value_info("vectors", dtype, ["rows", "dim"]),
            helper.make_tensor_value_info("queries", TensorProto.FLOAT, ["queries", "dim"]),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["bias"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("values", TensorProto.FLOAT, ["queries", "k"]),
            helper.make_tensor_value_info("indices", TensorProto.INT64, ["queries", "k"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="xmodal")
    model.ir_version = 8
    checker.check_model(model)
    return model.SerializeToString()


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for storage in ("fp16", "fp32"):
        path = GRAPHS / f"scan_{storage}.onnx"
        data = scan_graph(storage)
        if check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(str(path))
        else:
            path.write_bytes(data)
            print(f"wrote {path} ({len(data)} bytes)")
    if stale:
        print("out of date: " + ", ".join(stale))
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())

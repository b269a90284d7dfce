"""The text-tower rewrite for NPUs: the same embeddings as the original graph, without the integer
operators Rockchip's NPU lacks (runs on ONNX Runtime here; the toolkit tests build it for the NPU)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import xmodal
from xmodal.models.npu_graph import GraphRewriteError, fuse_token_lookups

CAPTIONS = ["a red circle", "a small green star at the top left", "two blue squares at the bottom right", ""]


def _run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: ids[i : i + 1]})[0] for i in range(len(ids))])


def test_shipped_text_tower_becomes_one_npu_lookup_with_the_same_embeddings():
    encoder = xmodal.load_model("xmodal-tiny-shapes")
    original = onnx.load(str(encoder.config.textual_path))
    length = encoder.config.text.context_length
    rewritten, summary = fuse_token_lookups(original, [1, length])

    ids = encoder.tokenize(CAPTIONS).ids.astype(np.int32)
    np.testing.assert_allclose(_run(rewritten, ids), _run(original, ids), atol=1e-6)
    ops = Counter(n.op_type for n in rewritten.graph.node)
    assert not {"Equal", "Not"} & set(ops)
    assert ops["Gather"] == Counter(n.op_type for n in original.graph.node)["Gather"] - 1  # the lookup is gone
    int64_casts = [n for n in rewritten.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.INT64]
    assert all(not set(n.input) & {"text"} for n in int64_casts)  # the ids themselves are never cast to int64
    assert summary.lookup == "one-hot MatMul" and summary.vocab == 184
    assert summary.tables == ["tokens.weight"]
    assert len(summary.columns) == 2  # the pad mask, and the attention bias made from it
    assert summary.removed["Equal"] == 1 and summary.removed["Not"] == 1
    assert [d.dim_value for d in rewritten.graph.input[0].type.tensor_type.shape.dim] == [1, length]


def _lookup_graph(vocab: int, extra_input: bool = False) -> onnx.ModelProto:
    """ids -> mean of the table rows of non-pad tokens (pad id 0): the pattern of a text tower."""
    rng = np.random.default_rng(0)
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", 6])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", 6]))
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Equal", ["ids64", "zero"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["keep_bool"]),
        helper.make_node("Cast", ["keep_bool"], ["keep"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["table", "ids64"], ["rows"], axis=0),
        helper.make_node("Unsqueeze", ["keep", "last"], ["keep3"]),
        helper.make_node("Mul", ["rows", "keep3"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["keep", "axis1"], ["count"], keepdims=1),
        helper.make_node("Div", ["summed", "count"], ["embedding"]),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal((vocab, 8)).astype(np.float32), "table"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    graph = helper.make_graph(
        nodes, "text", inputs, [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 8])], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_large_vocabulary_keeps_one_gather_with_the_mask_folded_into_its_table():
    original = _lookup_graph(vocab=5000)
    rewritten, summary = fuse_token_lookups(original, [1, 6])
    ids = np.array([[4999, 17, 3, 0, 0, 0], [1, 2048, 2049, 4095, 7, 0]], dtype=np.int32)
    np.testing.assert_allclose(_run(rewritten, ids), _run(original, ids), atol=1e-6)
    ops = Counter(n.op_type for n in rewritten.graph.node)
    assert summary.lookup == "Gather" and ops["Gather"] == 1  # ids above 2048 are not exact in float16
    assert "Equal" not in ops and "Not" not in ops
    assert summary.columns == ["keep"]


def test_graphs_that_are_not_a_per_position_function_of_the_ids_are_refused_with_the_reason():
    argmax = _lookup_graph(vocab=100)
    argmax.graph.node.append(helper.make_node("ArgMax", ["ids"], ["eot"], axis=1))
    argmax.graph.output.append(helper.make_tensor_value_info("eot", TensorProto.INT64, ["batch", 1]))
    with pytest.raises(GraphRewriteError, match="ArgMax"):
        fuse_token_lookups(argmax, [1, 6])
    with pytest.raises(GraphRewriteError, match="2 inputs"):
        fuse_token_lookups(_lookup_graph(vocab=100, extra_input=True), [1, 6])


def test_a_transformers_clip_text_tower_is_refused_naming_the_operator(clip_model_dir):
    # its ids are reshaped to a computed shape and, for end-of-text pooling, fed to ArgMax
    model = onnx.load(str(clip_model_dir / "textual" / "model.onnx"))
    with pytest.raises(GraphRewriteError, match=r"the token ids feed (Reshape|ArgMax) \("):
        fuse_token_lookups(model, [1, 77])

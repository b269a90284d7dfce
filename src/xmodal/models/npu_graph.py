"""ONNX rewrite that moves a text tower's token handling onto operators an NPU has.

A textual graph takes token ids and starts with integer work: it casts the ids to int64, compares
them with the pad id to build an attention mask, and looks rows up in the embedding table (Gather).
Rockchip's NPU runs none of that; its compiler places those operators on the board's CPU. Each of
them depends on one position's id alone, so their results can be tabulated per vocabulary entry:
`fuse_token_lookups` evaluates the id-only elementwise subgraph on every id once, appends each float
tensor it hands to the rest of the graph as one more column of the embedding table, and makes the
single remaining lookup a one-hot matrix product (float operators the NPU runs) when every id is
exact in float16 (vocabularies of up to 2048 entries); larger vocabularies keep one Gather.

This module needs only numpy and onnx: it also runs inside the RKNN toolkit's own environment.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Vocabularies up to this size have every id exact in float16 (the NPU's float type).
ONE_HOT_MAX_VOCAB = 2048
_ELEMENTWISE = frozenset(
    {
        "Abs", "Add", "And", "Cast", "Clip", "Div", "Equal", "Greater", "GreaterOrEqual", "Identity",
        "Less", "LessOrEqual", "Max", "Min", "Mul", "Neg", "Not", "Or", "Sign", "Sub", "Where", "Xor",
    }
)  # fmt: skip
_BOOLEAN = frozenset({"And", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "Or", "Xor"})
_PREFIX = "xmodal_npu/"


class GraphRewriteError(Exception):
    """The graph's token handling is not a per-position function of the ids (the reason says why)."""


@dataclass
class RewriteSummary:
    """What `fuse_token_lookups` changed, for the conversion report."""

    vocab: int
    lookup: str  # "one-hot MatMul" or "Gather"
    tables: list[str] = field(default_factory=list)  # embedding tables merged into the lookup
    columns: list[str] = field(default_factory=list)  # id-only float tensors tabulated as columns
    removed: dict[str, int] = field(default_factory=dict)  # operator type -> count removed

    def to_dict(self) -> dict:
        return {
            "vocab": self.vocab,
            "lookup": self.lookup,
            "tables": self.tables,
            "columns": self.columns,
            "removed": self.removed,
        }


def fuse_token_lookups(model: onnx.ModelProto, shape: list[int]) -> tuple[onnx.ModelProto, RewriteSummary]:
    """A copy of the one-input textual `model`, its input fixed to `shape` (e.g. [1, 77]), whose
    token-id handling is one table lookup; raises GraphRewriteError when that is not possible."""
    model = _with_fixed_input(model, shape)
    graph = model.graph
    ids = graph.input[0].name
    constants = _constants(graph)
    closure, derived = _id_closure(graph, ids, constants)
    lookups, columns, shapes = _frontier(graph, ids, derived, closure, constants)
    if not lookups:
        raise GraphRewriteError("the token ids feed no embedding table lookup (Gather)")
    vocab = {constants[n.input[0]].shape[0] for n in lookups}
    if len(vocab) != 1:
        raise GraphRewriteError(f"the token ids index tables of different sizes {sorted(vocab)}")
    size = vocab.pop()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    values = _evaluate(graph, ids, closure, constants, [n.input[1] for n in lookups] + columns, size, opset)
    blocks = [np.take(constants[n.input[0]], values[n.input[1]][0].astype(np.int64), axis=0) for n in lookups]
    blocks += [values[c][0].astype(np.float32)[:, None] for c in columns]
    table = np.concatenate([b.astype(np.float32) for b in blocks], axis=1)
    new_nodes, new_inits = _lookup_nodes(ids, table, size)
    offset = 0
    for node in lookups:
        width = constants[node.input[0]].shape[1]
        new_nodes += _slice(f"{_PREFIX}rows", offset, offset + width, node.output[0], None, new_inits)
        offset += width
    for name in columns:
        new_nodes += _slice(f"{_PREFIX}rows", offset, offset + 1, name, shape, new_inits)
        offset += 1
    for node in shapes:
        new_nodes.append(_constant_node(node.output[0], np.asarray(shape, dtype=np.int64)))
    removed = set(map(id, closure)) | set(map(id, lookups)) | set(map(id, shapes))
    summary = RewriteSummary(
        vocab=size,
        lookup="one-hot MatMul" if size <= ONE_HOT_MAX_VOCAB else "Gather",
        tables=[n.input[0] for n in lookups],
        columns=columns,
        removed=dict(Counter(n.op_type for n in graph.node if id(n) in removed)),
    )
    kept = [n for n in graph.node if id(n) not in removed]
    del graph.node[:]
    graph.node.extend(new_nodes + kept)
    graph.initializer.extend(new_inits)
    _prune(graph)
    onnx.checker.check_model(model)
    return model, summary


def _with_fixed_input(model: onnx.ModelProto, shape: list[int]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if len(model.graph.input) != 1:
        names = [i.name for i in model.graph.input]
        raise GraphRewriteError(
            f"the graph takes {len(names)} inputs {names}; only a single token-id input is rewritten"
        )
    tensor = model.graph.input[0].type.tensor_type
    if tensor.elem_type not in (TensorProto.INT32, TensorProto.INT64):
        raise GraphRewriteError(f"input {model.graph.input[0].name!r} is not integer token ids")
    del tensor.shape.dim[:]
    for d in shape:
        tensor.shape.dim.add().dim_value = int(d)
    return model


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _id_closure(graph: onnx.GraphProto, ids: str, constants: dict) -> tuple[list, dict[str, int]]:
    """The elementwise nodes computed from the ids and scalar constants alone, and the element type
    of each tensor they make."""
    types, closure = {ids: graph.input[0].type.tensor_type.elem_type}, []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type not in _ELEMENTWISE or not any(i in types for i in inputs):
            continue
        if all(i in types or (i in constants and constants[i].size == 1) for i in inputs):
            closure.append(node)
            if node.op_type == "Cast":
                kind = helper.get_attribute_value(node.attribute[0])
            elif node.op_type in _BOOLEAN:
                kind = TensorProto.BOOL
            else:
                kind = next(types[i] for i in inputs if i in types)
            types.update({out: kind for out in node.output})
    return closure, types


def _frontier(graph, ids: str, derived: dict[str, int], closure: list, constants: dict):
    """What the rest of the graph takes from the id-only subgraph: table lookups, float tensors to
    tabulate, and Shape nodes (static once the input shape is fixed)."""
    in_closure = set(map(id, closure))
    lookups, columns, shapes = [], [], []
    for name in sorted(set(derived) & {o.name for o in graph.output}):
        raise GraphRewriteError(f"the graph output {name!r} is computed from the token ids alone")
    for node in graph.node:
        if id(node) in in_closure:
            continue
        for position, name in enumerate(node.input):
            if name not in derived:
                continue
            table = constants.get(node.input[0]) if node.input else None
            if (
                node.op_type == "Gather"
                and position == 1
                and _axis(node) == 0
                and table is not None
                and table.ndim == 2
            ):
                lookups.append(node)
            elif node.op_type == "Shape":
                shapes.append(node)
            elif derived[name] == TensorProto.FLOAT:
                if name not in columns:
                    columns.append(name)
            else:
                raise GraphRewriteError(
                    f"the token ids feed {node.op_type} ({node.name or node.output[0]}), which is not a per-position "
                    "function of them"
                )
    return lookups, columns, shapes


def _axis(node: onnx.NodeProto) -> int:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)


def _evaluate(graph, ids: str, closure: list, constants: dict, wanted: list[str], vocab: int, opset: int) -> dict:
    """The id-only subgraph run on ids 0..vocab-1 (one row): name -> (1, vocab) array."""
    from onnx.reference import ReferenceEvaluator

    elem = graph.input[0].type.tensor_type.elem_type
    feed = np.arange(vocab, dtype=helper.tensor_dtype_to_np_dtype(elem))[None]
    computed = [w for w in dict.fromkeys(wanted) if w != ids]
    values = {ids: feed}
    if computed:
        used = {i for n in closure for i in n.input if i in constants}
        sub = helper.make_graph(
            list(closure),
            "token_ids",
            [helper.make_tensor_value_info(ids, elem, [1, vocab])],
            [helper.make_tensor_value_info(w, TensorProto.UNDEFINED, None) for w in computed],
            [numpy_helper.from_array(np.asarray(constants[n]), n) for n in sorted(used)],
        )
        submodel = helper.make_model(sub, opset_imports=[helper.make_opsetid("", opset)])
        results = ReferenceEvaluator(submodel).run(None, {ids: feed})
        values.update({name: np.asarray(v) for name, v in zip(computed, results, strict=True)})
    return values


def _lookup_nodes(ids: str, table: np.ndarray, vocab: int) -> tuple[list, list]:
    """Nodes computing `rows` = table[ids] (shape ids.shape + (K,)): one-hot MatMul or Gather."""
    inits = [numpy_helper.from_array(table, f"{_PREFIX}table")]
    if vocab > ONE_HOT_MAX_VOCAB:
        return [helper.make_node("Gather", [f"{_PREFIX}table", ids], [f"{_PREFIX}rows"], axis=0)], inits
    inits += [
        numpy_helper.from_array(np.arange(vocab, dtype=np.float32).reshape(1, 1, vocab), f"{_PREFIX}vocab"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), f"{_PREFIX}one"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{_PREFIX}last_axis"),
    ]
    p = _PREFIX
    nodes = [
        helper.make_node("Cast", [ids], [f"{p}ids"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [f"{p}ids", f"{p}last_axis"], [f"{p}ids_column"]),
        helper.make_node("Sub", [f"{p}ids_column", f"{p}vocab"], [f"{p}offset"]),
        helper.make_node("Abs", [f"{p}offset"], [f"{p}distance"]),
        helper.make_node("Sub", [f"{p}one", f"{p}distance"], [f"{p}closeness"]),
        helper.make_node("Relu", [f"{p}closeness"], [f"{p}one_hot"]),  # 1 at the id, 0 elsewhere
        helper.make_node("MatMul", [f"{p}one_hot", f"{p}table"], [f"{p}rows"]),
    ]
    return nodes, inits


def _slice(rows: str, start: int, end: int, out: str, shape: list[int] | None, inits: list) -> list:
    """Columns [start, end) of the lookup result as tensor `out` (reshaped to `shape` if given)."""
    tag = f"{_PREFIX}{start}_{end}"
    inits += [
        numpy_helper.from_array(np.array([start], dtype=np.int64), f"{tag}/start"),
        numpy_helper.from_array(np.array([end], dtype=np.int64), f"{tag}/end"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{tag}/axis"),
    ]
    target = out if shape is None else f"{tag}/columns"
    nodes = [helper.make_node("Slice", [rows, f"{tag}/start", f"{tag}/end", f"{tag}/axis"], [target])]
    if shape is not None:
        inits.append(numpy_helper.from_array(np.asarray(shape, dtype=np.int64), f"{tag}/shape"))
        nodes.append(helper.make_node("Reshape", [target, f"{tag}/shape"], [out]))
    return nodes


def _constant_node(out: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], value=numpy_helper.from_array(value))


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers nothing reads any more (repeat until stable)."""
    while True:
        needed = {o.name for o in graph.output} | {i for n in graph.node for i in n.input}
        dead = [n for n in graph.node if not any(o in needed for o in n.output)]
        for node in dead:
            graph.node.remove(node)
        if not dead:
            break
    unused = [init for init in graph.initializer if init.name not in needed]
    for init in unused:
        graph.initializer.remove(init)

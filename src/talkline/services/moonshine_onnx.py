"""The graph work of the Moonshine conversion (``moonshine_convert`` says what and why):
ORT files to standard ONNX, weight arithmetic folded, the merged decoder split, int8."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic


def convert_files(source: Path, out: Path) -> None:
    """Write ``MODEL_FILES`` into ``out`` from moonshine-cpp's files in ``source``."""
    with tempfile.TemporaryDirectory() as scratch:
        encoder = fold_constants(ort_to_onnx(source / "encoder_model.ort", Path(scratch)))
        _quantize(encoder, out / "encoder.onnx", Path(scratch))
        merged = fold_constants(ort_to_onnx(source / "decoder_model_merged.ort", Path(scratch)))
        first, cached = split_merged_decoder(merged)
        _quantize(first, out / "decoder_first.onnx", Path(scratch))
        _quantize(cached, out / "decoder_cached.onnx", Path(scratch))
    shutil.copyfile(source / "tokenizer.bin", out / "tokenizer.bin")


def ort_to_onnx(path: Path, scratch: Path) -> onnx.ModelProto:
    """An ORT-format model as standard ONNX, read by ONNX Runtime itself, not optimized."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.optimized_model_filepath = str(scratch / f"{path.stem}.onnx")
    ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    model = onnx.load(options.optimized_model_filepath)
    model.graph.name = path.stem
    return _tidy_opsets(model)


def _tidy_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """Only the operator sets the nodes use, in a fixed order."""
    used = {node.domain for node in _all_nodes(model.graph)}
    kept = sorted((o.domain, o.version) for o in model.opset_import if o.domain in used)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in kept)
    return model


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes = list(graph.node)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                nodes.extend(_all_nodes(attribute.g))
    return nodes


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the top-level nodes computed from weights alone by their results.

    ONNX Runtime evaluates them (so the arithmetic is exactly its own); the results become
    initializers and the nodes go.
    """
    graph = model.graph
    known = {init.name for init in graph.initializer}
    foldable: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "If" and all(name in known for name in node.input if name):
            foldable.append(node)
            known.update(node.output)
    if not foldable:
        return model
    values = _evaluate(graph, foldable)
    kept = [node for node in graph.node if node not in foldable]
    needed = _names_used(kept) | {output.name for output in graph.output}
    initializers = [init for init in graph.initializer if init.name in needed]
    initializers += [
        numpy_helper.from_array(value, name) for name, value in values.items() if name in needed
    ]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return model


def _evaluate(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> dict[str, np.ndarray]:
    produced = [name for node in nodes for name in node.output]
    inputs = {name for node in nodes for name in node.input}
    sub = helper.make_graph(
        nodes,
        "fold",
        [],
        [onnx.ValueInfoProto(name=name) for name in produced],  # types: ORT infers them
        [init for init in graph.initializer if init.name in inputs],
    )
    model = helper.make_model(sub, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options)
    return dict(zip(produced, session.run(produced, {}), strict=True))


def _names_used(nodes: list[onnx.NodeProto]) -> set[str]:
    """Every value name the nodes (and their subgraphs) read."""
    names: set[str] = set()
    for node in nodes:
        names.update(node.input)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                names |= _names_used(list(attribute.g.node))
    return names


def split_merged_decoder(merged: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The merged decoder's two branches as models: (first step, steps with a cache).

    The first step outputs every layer's cross-attention keys and values; the cached
    steps take them as inputs and output only the self-attention cache (the merged model's
    ``present.*.encoder.*`` are empty placeholders there).
    """
    (branch_node,) = [node for node in merged.graph.node if node.op_type == "If"]
    branches = {attribute.name: attribute.g for attribute in branch_node.attribute}
    outputs = list(merged.graph.output)
    first = _branch_model(merged, branches["else_branch"], "decoder_first", outputs)
    own = [output for output in outputs if ".encoder." not in output.name]
    cached = _branch_model(merged, branches["then_branch"], "decoder_cached", own)
    return first, cached


def _branch_model(
    merged: onnx.ModelProto,
    branch: onnx.GraphProto,
    name: str,
    outputs: list[onnx.ValueInfoProto],
) -> onnx.ModelProto:
    outer = merged.graph
    wanted = {output.name for output in outputs}
    nodes = _needed_nodes(list(branch.node), wanted)
    used = _names_used(nodes)
    inputs = [value for value in outer.input if value.name in used]
    initializers = [init for init in [*outer.initializer, *branch.initializer] if init.name in used]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=list(merged.opset_import))
    model.ir_version = merged.ir_version
    return fold_constants(model)


def _needed_nodes(nodes: list[onnx.NodeProto], wanted: set[str]) -> list[onnx.NodeProto]:
    """The nodes the wanted outputs depend on, in their original order."""
    needed = set(wanted)
    kept: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    return kept[::-1]


def _quantize(model: onnx.ModelProto, path: Path, scratch: Path) -> None:
    """Dynamic int8 quantization of the matrix multiplications' and embedding's weights.

    The encoder's convolutions stay float: quantized, they garble the audio features.
    """
    staged = scratch / f"{path.stem}.float.onnx"
    onnx.save(model, staged)
    quantize_dynamic(
        staged, path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"]
    )
    staged.unlink()

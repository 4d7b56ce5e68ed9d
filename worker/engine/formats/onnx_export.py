"""Save a pruned ONNX model: the user's own graph, unchanged, with the pruned tensors written back
into the initializers (or Constant nodes) they were loaded from. Same nodes, same inputs and
outputs (names, dynamic batch), same opset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from worker.engine.errors import UnsupportedModelError
from worker.engine.formats.model import LoadedModel
from worker.engine.formats.onnx_import import OnnxSource


def save_onnx(loaded: LoadedModel, module: torch.nn.Module, path: Path) -> None:
    sources: dict[str, OnnxSource] = loaded.save_state
    model = onnx.load(str(loaded.source_path), load_external_data=False)
    state = module.state_dict()
    values: dict[str, np.ndarray] = {}
    rewired: list[tuple[OnnxSource, str, np.ndarray]] = []
    for tensor_name, source in sources.items():
        if tensor_name not in state:
            raise UnsupportedModelError(f"pruned module lost tensor {tensor_name!r}; cannot write the ONNX model")
        tensor = state[tensor_name].detach().cpu()
        if source.kind == "computed" and torch.equal(tensor, source.original):
            continue  # folded from a subgraph and untouched: the graph still computes it
        array = tensor.t() if source.transpose else tensor
        array = array.contiguous().numpy().reshape(source.shape).astype(source.dtype)
        if source.kind == "computed":
            rewired.append((source, tensor_name, array))
        elif source.name in values and not np.array_equal(values[source.name], array):
            raise UnsupportedModelError(f"ONNX tensor {source.name!r} is shared by several layers that were "
                                        f"pruned differently (one is {tensor_name!r}); cannot write it back")
        else:
            values[source.name] = array
    initializers = {t.name: t for t in model.graph.initializer}
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    for name, array in values.items():
        if name in initializers:
            initializers[name].CopyFrom(numpy_helper.from_array(array, name))
        elif name in constants:
            for attr in constants[name].attribute:
                if attr.name == "value":
                    attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
        else:
            raise UnsupportedModelError(f"ONNX tensor {name!r} vanished from the source graph")
    # A changed tensor the graph used to compute (e.g. an expanded zero bias) becomes a new
    # initializer feeding the same node input; the old subgraph is left dead, outputs are unchanged.
    existing = set(initializers) | {o for n in model.graph.node for o in n.output}
    by_output = {n.output[0]: n for n in model.graph.node if n.output}
    for source, tensor_name, array in rewired:
        name = f"zerodata.{tensor_name}"
        while name in existing:
            name += "_"
        existing.add(name)
        model.graph.initializer.append(numpy_helper.from_array(array, name))
        by_output[source.node_output].input[source.input_index] = name
    onnx.save(model, str(path))

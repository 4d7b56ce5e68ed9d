"""What a checked model file says about itself, read from metadata only (nothing is loaded or run).

Prunable layers are 3x3 convolutions with groups=1 (the pattern-pruning targets); params count
trainable parameters (BatchNorm running statistics excluded) in every format.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import onnx

from worker.engine.safety.pickle_scan import Call, Global, PersistentId


@dataclass
class ModelFacts:
    format: str
    params: int | None
    conv3x3_layers: list[str] = field(default_factory=list)
    input_shape: list[int] | None = None
    warnings: list[str] = field(default_factory=list)


def _ints(sizes: list) -> list[int | None]:
    return [s.get("as_int") if isinstance(s, dict) else None for s in sizes]


def _batch_one(dims: list[int | None], facts: ModelFacts, what: str) -> list[int] | None:
    """Shape with a symbolic batch dimension read as 1; None if any other dim is symbolic."""
    if not dims:
        return None
    if any(d is None or d <= 0 for d in dims[1:]):
        facts.warnings.append(f"{what} has symbolic dimensions beyond the batch; give input_shape in the job config")
        return None
    return [1 if dims[0] is None or dims[0] <= 0 else dims[0], *dims[1:]]


def pt2_facts(program: dict, weights_config: dict) -> ModelFacts:
    facts = ModelFacts("pt2", 0)
    entries = weights_config.get("config", {})
    shapes = {fqn: _ints(meta["tensor_meta"]["sizes"]) for fqn, meta in entries.items() if meta.get("tensor_meta")}
    facts.params = sum(math.prod(shapes[fqn]) for fqn, meta in entries.items()
                       if meta.get("is_param") and fqn in shapes and None not in shapes[fqn])
    graph_module = program["graph_module"]
    arg_to_parameter = {}
    user_inputs = []
    for spec in graph_module["signature"]["input_specs"]:
        if "parameter" in spec:
            arg_to_parameter[spec["parameter"]["arg"]["name"]] = spec["parameter"]["parameter_name"]
        elif "user_input" in spec and "as_tensor" in spec["user_input"]["arg"]:
            user_inputs.append(spec["user_input"]["arg"]["as_tensor"]["name"])
    for node in graph_module["graph"]["nodes"]:
        if node["target"] not in ("torch.ops.aten.conv2d.default", "torch.ops.aten.convolution.default"):
            continue
        args = {entry.get("name"): entry.get("arg", {}) for entry in node["inputs"]}
        weight = args.get("weight", {}).get("as_tensor", {}).get("name")
        parameter = arg_to_parameter.get(weight)
        groups = args.get("groups", {}).get("as_int", 1)
        if parameter and groups == 1 and shapes.get(parameter, [])[2:] == [3, 3]:
            facts.conv3x3_layers.append(parameter.removesuffix(".weight"))
    tensor_values = graph_module["graph"].get("tensor_values", {})
    if len(user_inputs) != 1:
        facts.warnings.append(f"the model takes {len(user_inputs)} tensor inputs; only single-input models are compressed")
    elif user_inputs[0] in tensor_values:
        facts.input_shape = _batch_one(_ints(tensor_values[user_inputs[0]]["sizes"]), facts, "the input")
    return facts


def _onnx_layer_name(node: onnx.NodeProto, weight_name: str) -> str:
    if weight_name.endswith(".weight") and not weight_name.startswith("onnx::"):
        return weight_name.removesuffix(".weight")
    scopes = [s for s in node.name.strip("/").split("/")[:-1] if s]
    if not scopes:
        return node.name or weight_name
    if len(scopes) > 1 and not scopes[-1].startswith(scopes[-2]):
        return f"{scopes[-2]}.{scopes[-1]}"
    return scopes[-1]


def onnx_facts(model: onnx.ModelProto) -> ModelFacts:
    facts = ModelFacts("onnx", 0)
    graph = model.graph
    initializers = {t.name: list(t.dims) for t in graph.initializer}
    running_stats = {name for node in graph.node if node.op_type == "BatchNormalization" for name in node.input[3:5]}
    facts.params = sum(math.prod(dims) for name, dims in initializers.items() if name not in running_stats)
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        dims = initializers[node.input[1]]
        if attrs.get("group", 1) == 1 and len(dims) == 4 and dims[2:] == [3, 3]:
            facts.conv3x3_layers.append(_onnx_layer_name(node, node.input[1]))
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        facts.warnings.append(f"the model takes {len(inputs)} inputs; only single-input models are compressed")
    else:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
        facts.input_shape = _batch_one(dims, facts, f"input {inputs[0].name!r}")
    return facts


# ---- TorchScript: walk the symbolically evaluated data.pkl ----

def _tensor_shape(value: Any) -> list[int] | None:
    """Shape of a `_rebuild_tensor_v2(storage, offset, size, stride, ...)` call, else None."""
    if isinstance(value, Call) and value.func == Global("torch._utils", "_rebuild_tensor_v2") \
            and len(value.args) >= 3 and isinstance(value.args[0], PersistentId) \
            and isinstance(value.args[2], tuple) and all(type(d) is int for d in value.args[2]):
        return list(value.args[2])
    return None


_CLASS_BLOCK = re.compile(r"^class (\w+)\(Module\):\n((?:  .*\n?|\n)*)", re.MULTILINE)
_NAME_LIST = re.compile(r'^  __(parameters|buffers)__ = \[(.*)\]', re.MULTILINE)
_GROUPS_FINAL = re.compile(r"^  groups : Final\[int\] = (\d+)", re.MULTILINE)


def torchscript_class_info(code_files: dict[str, str]) -> dict[str, dict]:
    """Per TorchScript class `__torch__.a.b.Name`: its parameter names and conv groups, from code/."""
    info = {}
    for path, text in code_files.items():
        module = path.split("code/", 1)[-1].removesuffix(".py").replace("/", ".")
        for match in _CLASS_BLOCK.finditer(text):
            body = match.group(2)
            lists = {kind: re.findall(r'"([^"]*)"', names) for kind, names in _NAME_LIST.findall(body)}
            groups = _GROUPS_FINAL.search(body)
            conv_call = re.search(r"torch\._convolution\(([^\n]*)\)", body)
            if groups is None and conv_call:
                parts = [p.strip() for p in re.sub(r"\[[^\]]*\]", "[]", conv_call.group(1)).split(",")]
                groups_arg = parts[8] if len(parts) > 8 else ""
                groups_value = int(groups_arg) if groups_arg.isdigit() else None
            else:
                groups_value = int(groups.group(1)) if groups else None
            info[f"{module}.{match.group(1)}"] = {"parameters": lists.get("parameters"), "groups": groups_value}
    return info


def torchscript_facts(root: Any, classes: dict[str, dict], traced_inputs: Any) -> ModelFacts:
    facts = ModelFacts("torchscript", 0)
    pending: list[tuple[str, Any]] = [("", root)]
    seen: set[int] = set()
    while pending:
        path, module = pending.pop()
        if id(module) in seen or not isinstance(module, Call) or not isinstance(module.state, dict):
            continue
        seen.add(id(module))
        cls = module.func
        qualified = f"{cls.module}.{cls.name}" if isinstance(cls, Global) else ""
        known = classes.get(qualified, {})
        parameters = known.get("parameters")
        if parameters is None:
            facts.warnings.append(f"no parameter list for {qualified or path}; counted every tensor but BN statistics")
            parameters = [k for k in module.state if k not in ("running_mean", "running_var", "num_batches_tracked")]
        children = []
        for key, value in module.state.items():
            shape = _tensor_shape(value)
            if shape is not None and key in parameters:
                facts.params += math.prod(shape)
            elif isinstance(value, Call) and isinstance(value.state, dict):
                children.append((f"{path}.{key}" if path else str(key), value))
        pending.extend(reversed(children))  # depth-first in declaration order
        weight = _tensor_shape(module.state.get("weight"))
        groups = module.state.get("groups", known.get("groups"))
        if isinstance(cls, Global) and cls.name == "Conv2d" and weight and len(weight) == 4 and weight[2:] == [3, 3] \
                and (groups == 1 or (groups is None and weight[1] > 1)):
            facts.conv3x3_layers.append(path)
    facts.input_shape = _traced_input_shape(traced_inputs)
    if facts.input_shape is None:
        facts.warnings.append("the TorchScript file records no traced input; give input_shape in the job config")
    return facts


def _traced_input_shape(traced: Any) -> list[int] | None:
    """traced_inputs.pkl: restore_type_tag({'forward': restore_type_tag([tensor, ...], ...)}, ...)."""
    pending = [traced]
    for _ in range(16):
        if not pending:
            return None
        value = pending.pop(0)
        shape = _tensor_shape(value)
        if shape is not None:
            return shape
        if isinstance(value, Call):
            pending.extend(value.args)
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value[:1])
    return None

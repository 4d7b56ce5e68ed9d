"""ONNX -> torch: a small converter into an FX GraphModule for the operators real CNNs use.

Conv / BatchNormalization / Gemm / MatMul-by-a-constant become real `nn.Conv2d` / `nn.BatchNorm*d`
/ `nn.Linear` modules (named after the initializer or the node scope, e.g. `layer1.0.conv1`);
every other supported op is a `call_function` on `onnx_ops`. Nodes whose inputs are all constant
are folded at conversion time. Each module tensor remembers the ONNX initializer (or Constant node)
it came from, so saving writes pruned weights back into the user's own graph (see onnx_export).
Anything else is refused with an `UnsupportedModelError` naming the op and the node.
"""
from __future__ import annotations

import keyword
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import fx, nn

from worker.engine import archive_safety
from worker.engine.errors import CorruptModelError, UnsupportedModelError
from worker.engine.formats import onnx_ops as ops
from worker.engine.formats import onnx_shapes as shapes
from worker.engine.formats.model import LoadedModel
from worker.engine.formats.onnx_names import (HALF_ELEM_TYPES, attribute_value, identifier, is_half,
                                                normalise_attrs, numpy_dtype, scope_path, to_torch)
from worker.engine.formats.precision import precision_warning

MAX_ONNX_BYTES = 2 * 1024**3  # protobuf's own limit

# op_type -> (function, names of the inputs in order; attrs pass through as keyword arguments)
_FUNCTIONS = {
    "Add": ops.add, "Sub": ops.sub, "Mul": ops.mul, "Div": ops.div, "Pow": ops.pow_, "Relu": ops.relu,
    "Sigmoid": ops.sigmoid, "Tanh": ops.tanh, "Exp": ops.exp, "Log": ops.log, "Sqrt": ops.sqrt,
    "Neg": ops.neg, "Abs": ops.abs_, "Reciprocal": ops.reciprocal, "Erf": ops.erf, "Floor": ops.floor,
    "Ceil": ops.ceil, "Identity": ops.identity, "Dropout": ops.identity, "HardSwish": ops.hard_swish,
    "LeakyRelu": ops.leaky_relu, "Elu": ops.elu, "HardSigmoid": ops.hard_sigmoid, "Gelu": ops.gelu,
    "Clip": ops.clip, "Max": ops.variadic_max, "Min": ops.variadic_min, "Sum": ops.variadic_sum,
    "Softmax": ops.softmax, "Softplus": ops.softplus, "Equal": ops.equal, "Less": ops.less,
    "Greater": ops.greater, "Not": ops.not_, "Where": ops.where,
    "Shape": ops.shape, "Flatten": ops.flatten, "Reshape": ops.reshape, "Transpose": ops.transpose,
    "Squeeze": ops.squeeze, "Unsqueeze": ops.unsqueeze, "Concat": ops.concat, "Slice": ops.slice_,
    "Gather": ops.gather, "ConstantOfShape": ops.constant_of_shape, "Cast": ops.cast, "CastLike": ops.cast_like, "Expand": ops.expand,
    "Split": ops.split, "Pad": ops.pad, "GlobalAveragePool": ops.global_average_pool,
    "GlobalMaxPool": ops.global_max_pool, "AveragePool": ops.average_pool, "MaxPool": ops.max_pool,
    "ReduceMean": ops.reduce_mean, "ReduceSum": ops.reduce_sum, "ReduceMax": ops.reduce_max,
    "MatMul": ops.matmul, "Gemm": ops.gemm, "PRelu": ops.prelu, "LogSoftmax": ops.log_softmax,
    "Resize": ops.resize, "ConvTranspose": ops.conv_transpose, "LayerNormalization": ops.layer_normalization,
    "InstanceNormalization": ops.instance_normalization,
}
_MODULE_OPS = {"Conv", "BatchNormalization", "Gemm", "MatMul", "Constant"}
# Inputs that the op functions take as Python ints/lists: constants go in as values, not buffers, so
# torch.export sees fixed sizes (a buffer's values are data to it), and shape values go in as they are.
_LIST_INPUTS = {"Reshape": {1}, "Expand": {1}, "ConstantOfShape": {0}, "Slice": {1, 2, 3, 4}, "Squeeze": {1},
                "Unsqueeze": {1}, "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1}, "Split": {1},
                "Pad": {1, 2, 3}, "Resize": {2, 3}}
_INTEGER_TYPES = {6, 7}  # ONNX int32, int64
SUPPORTED_OPS = sorted(set(_FUNCTIONS) | _MODULE_OPS)


@dataclass
class OnnxSource:
    """Where one module tensor lives in the ONNX file and how to turn it back."""

    name: str  # initializer name, or the output name of a Constant node / folded subgraph
    kind: str  # "initializer" | "constant" | "computed" (folded at load: rewired only if changed)
    node_output: str = ""  # first output of the consuming node, to find it again when rewiring
    input_index: int = 0
    original: torch.Tensor | None = None  # kept for "computed" tensors to tell whether they changed
    transpose: bool = False  # stored as B (K x N) while nn.Linear holds N x K
    shape: tuple[int, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))


def load_onnx(path: Path) -> LoadedModel:
    archive_safety.check_onnx_file(path, MAX_ONNX_BYTES)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CorruptModelError(f"{path.name} is not a readable ONNX model: {exc}") from exc
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise UnsupportedModelError(f"initializer {tensor.name!r} keeps its data in an external file; "
                                        "upload a self-contained .onnx")
    converter = _Converter(model)
    module = converter.convert()
    module.eval()
    warnings = []
    if converter.conv_count and not converter.bn_count:
        warnings.append("this ONNX graph has no BatchNormalization nodes (torch.onnx folds them into the "
                        "convolutions by default), so bn-inversion has no statistics to match; for the best accuracy "
                        "upload the .pt2, or keep them in the export: torch.onnx.export(..., dynamo=True, "
                        "optimize=False) or, with the legacy exporter, do_constant_folding=False")
    if converter.stored_dtypes or converter.half_input:
        names = {str(d) for d in converter.stored_dtypes.values()} | set(converter.half_input)
        warnings.append(precision_warning(names, len(converter.stored_dtypes)))
    return LoadedModel(module=module, format="onnx", input_shape=converter.input_shape, source_path=path,
                       warnings=warnings, save_state=converter.sources)


class _Converter:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.constants = nn.Module()
        self.env: dict[str, fx.Node] = {}
        self.consts: dict[str, torch.Tensor] = {}
        self.const_kind: dict[str, str] = {}
        self.sources: dict[str, OnnxSource] = {}
        self.leaf_paths: set[str] = set()
        self.ranks, self.elem_types, self.leading = self._value_types()
        self.input_shape: tuple[int, ...] | None = None
        # The input's batch size when the graph fixes it (torch.onnx.export's default: 1); reshape targets that
        # start with it follow the runtime batch instead (see _follows_batch).
        self.static_batch: int | None = None
        self.conv_count = self.bn_count = 0
        self.shape_values: set[str] = set()  # runtime values held as Python ints/lists (see onnx_shapes)
        # Half-precision tensors (name -> numpy dtype) and inputs: the module computes in float32 (to_torch), the
        # saver writes each tensor back in its stored dtype.
        self.stored_dtypes: dict[str, np.dtype] = {}
        self.half_input: list[str] = []  # the input's dtype name when it is half precision

    # -- driver ---------------------------------------------------------------------------------
    def convert(self) -> fx.GraphModule:
        g = self.model.graph
        if self.model.functions:
            raise UnsupportedModelError("the ONNX model defines local functions; zerodata supports plain graphs only")
        for tensor in g.initializer:
            array = numpy_helper.to_array(tensor)
            self.consts[tensor.name] = to_torch(array)
            self.const_kind[tensor.name] = "initializer"
            if is_half(array):
                self.stored_dtypes[tensor.name] = array.dtype
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise UnsupportedModelError(f"the ONNX graph takes {len(inputs)} inputs; zerodata handles single-input models")
        self._placeholder(inputs[0])
        for index, node in enumerate(g.node):
            self._node(index, node)
        outputs = [self._runtime(o.name) for o in g.output]
        self.graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
        self.root.add_module("onnx_constants", self.constants)
        module = fx.GraphModule(self.root, self.graph, class_name="OnnxModule")
        return module

    def _placeholder(self, value: onnx.ValueInfoProto) -> None:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type not in (onnx.TensorProto.FLOAT, *HALF_ELEM_TYPES):
            raise UnsupportedModelError(f"input {value.name!r} is not float32, float16 or bfloat16 (ONNX element "
                                        f"type {tensor_type.elem_type}); zerodata compresses floating-point models")
        if tensor_type.elem_type in HALF_ELEM_TYPES:
            self.half_input = [str(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))]
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        self.static_batch = dims[0] if dims and dims[0] else None
        if len(dims) == 4 and all(d is not None for d in dims[1:]):
            self.input_shape = (dims[0] or 1, *dims[1:])
        name = identifier(value.name, "input")
        self.env[value.name] = self.graph.placeholder(name)

    def _node(self, index: int, node: onnx.NodeProto) -> None:
        where = f"node {node.name or index!r}"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedModelError(f"ONNX op {node.domain}::{node.op_type} ({where}) is not supported")
        attrs = {a.name: attribute_value(a) for a in node.attribute}
        inputs = [self._value(name) for name in node.input]
        if node.op_type == "Constant":
            self._constant(node, attrs)
        elif node.op_type == "Conv":
            self._conv(node, inputs, attrs, where)
        elif node.op_type == "BatchNormalization":
            self._batch_norm(node, inputs, attrs, where)
        elif node.op_type in ("Gemm", "MatMul") and self._linear(node, inputs, attrs):
            pass
        elif node.op_type in _FUNCTIONS:
            self._function(node, inputs, attrs, where)
        else:
            raise UnsupportedModelError(
                f"ONNX op {node.op_type} ({where}) is not supported; supported ops: {', '.join(SUPPORTED_OPS)}")

    # -- values ---------------------------------------------------------------------------------
    def _value(self, name: str):
        if name == "":
            return None
        if name in self.env:
            return self.env[name]
        if name in self.consts:
            return self.consts[name]
        raise CorruptModelError(f"ONNX value {name!r} is used before it is defined")

    def _runtime(self, name: str) -> fx.Node:
        value = self._value(name)
        return value if isinstance(value, fx.Node) else self._const_node(name, value)

    def _const_node(self, name: str, tensor: torch.Tensor) -> fx.Node:
        attr = identifier(name, "const")
        while hasattr(self.constants, attr):
            attr += "_"
        self.constants.register_buffer(attr, tensor)
        return self.graph.get_attr(f"onnx_constants.{attr}")

    def _arg(self, name: str, value):
        """A function argument: graph nodes as they are, constants as buffers (the graph keeps no tensors)."""
        return self._const_node(name, value) if isinstance(value, torch.Tensor) else value

    def _set_outputs(self, node: onnx.NodeProto, value) -> None:
        target = self.consts if isinstance(value, torch.Tensor) else self.env
        target[node.output[0]] = value

    # -- handlers -------------------------------------------------------------------------------
    def _constant(self, node, attrs) -> None:
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in attrs:
                value = attrs[key]
                tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
                self.consts[node.output[0]] = tensor
                self.const_kind[node.output[0]] = "constant"
                stored = next((a.t.data_type for a in node.attribute if a.name == "value"), None)
                if stored in HALF_ELEM_TYPES:
                    self.stored_dtypes[node.output[0]] = onnx.helper.tensor_dtype_to_np_dtype(stored)
                return
        raise UnsupportedModelError(f"Constant node {node.name!r} has an unsupported value kind {list(attrs)}")

    def _function(self, node, inputs, attrs, where) -> None:
        fn = _FUNCTIONS[node.op_type]
        attrs = normalise_attrs(node.op_type, attrs, where, self.opset)
        if node.op_type == "Cast" and attrs.get("to") in HALF_ELEM_TYPES:
            attrs["to"] = onnx.TensorProto.FLOAT  # the module computes in float32
        if node.op_type == "Split":
            attrs["_outputs"] = len(node.output)
        if node.op_type in ("MaxPool",) and len(node.output) > 1 and node.output[1]:
            raise UnsupportedModelError(f"MaxPool with an Indices output ({where}) is not supported")
        if node.op_type == "CastLike" and not isinstance(inputs[0], fx.Node) and node.input[1] in self.elem_types:
            inputs = [inputs[0], torch.empty(0, dtype=self.elem_types[node.input[1]])]  # only its dtype matters
        if node.op_type == "Clip" and len(inputs) > 1:
            inputs = inputs + [None] * (3 - len(inputs))
        if self._computes_a_shape(node, attrs):
            self._shape_function(node, inputs, attrs)
            return
        if all(not isinstance(v, fx.Node) for v in inputs):
            result = fn(*inputs, **attrs)  # constant folding
            if isinstance(result, tuple):
                for name, value in zip(node.output, result):
                    self.consts[name] = value
            else:
                self.consts[node.output[0]] = result
            return
        if self._follows_batch(node, inputs):
            fn = ops.reshape_batch_first
        list_inputs = _LIST_INPUTS.get(node.op_type, set())
        args = tuple(self._function_arg(name, value, i in list_inputs) for i, (name, value) in enumerate(zip(node.input, inputs)))
        call = self.graph.call_function(fn, args, attrs)
        if node.op_type == "Split":
            for i, name in enumerate(node.output):
                self.env[name] = self.graph.call_function(_getitem, (call, i))
        else:
            self.env[node.output[0]] = call

    def _follows_batch(self, node, inputs) -> bool:
        """A Reshape of a runtime tensor whose first size is the graph's fixed batch to a stored target that
        starts with it too (`torch.flatten(x, 1)` exported at batch 1 becomes Reshape(x, [1, 512])): its first size
        follows the batch the engine runs (64 synthetic inputs at a time). At the fixed batch nothing changes."""
        if node.op_type != "Reshape" or self.static_batch is None or len(inputs) < 2:
            return False
        target = inputs[1]
        return (isinstance(inputs[0], fx.Node) and self.leading.get(node.input[0]) == self.static_batch
                and isinstance(target, torch.Tensor) and target.numel() > 1
                and int(target.reshape(-1)[0]) == self.static_batch)

    def _function_arg(self, name: str, value, as_list: bool):
        if isinstance(value, torch.Tensor) and as_list:
            return value.tolist()
        if name in self.shape_values and not as_list:
            return self.graph.call_function(shapes.to_tensor, (value,))
        return self._arg(name, value)

    def _computes_a_shape(self, node, attrs) -> bool:
        """Shape of a runtime tensor, or integer arithmetic on such a shape."""
        if node.op_type == "Shape":
            return node.input[0] in self.env
        if node.op_type == "Cast" and attrs.get("to") not in _INTEGER_TYPES:
            return False
        return node.op_type in shapes.FUNCTIONS and any(name in self.shape_values for name in node.input)

    def _shape_function(self, node, inputs, attrs) -> None:
        args = tuple(shapes.as_shape_value(v) if isinstance(v, torch.Tensor) else v for v in inputs)
        self.env[node.output[0]] = self.graph.call_function(shapes.FUNCTIONS[node.op_type], args, attrs)
        self.shape_values.add(node.output[0])

    def _conv(self, node, inputs, attrs, where) -> None:
        x, weight, bias = (inputs + [None, None])[:3]
        if not isinstance(x, fx.Node):
            raise UnsupportedModelError(f"Conv {where} has a constant input")
        if not isinstance(weight, torch.Tensor) or (bias is not None and not isinstance(bias, torch.Tensor)):
            raise UnsupportedModelError(f"Conv {where} computes its weights in the graph; zerodata needs them stored")
        if weight.dim() != 4:
            raise UnsupportedModelError(f"Conv {where} is {weight.dim() - 2}-D; zerodata handles 2-D convolutions")
        kernel = tuple(weight.shape[2:])
        strides = tuple(attrs.get("strides", [1, 1]))
        dilations = tuple(attrs.get("dilations", [1, 1]))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        auto_pad = attrs.get("auto_pad", "NOTSET")
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if strides != (1, 1):
                raise UnsupportedModelError(f"Conv {where}: auto_pad={auto_pad} with stride {strides} is not supported")
            total = [d * (k - 1) for d, k in zip(dilations, kernel)]
            low = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
            pads = [low[0], low[1], total[0] - low[0], total[1] - low[1]]
        elif auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        groups = int(attrs.get("group", 1))
        symmetric = pads[0] == pads[2] and pads[1] == pads[3]
        if not symmetric:
            x = self.graph.call_function(ops.conv_pad, (x, pads))
        conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], kernel, stride=strides,
                         padding=(pads[0], pads[1]) if symmetric else 0, dilation=dilations,
                         groups=groups, bias=bias is not None, device="meta")
        self.conv_count += 1
        tensors = {"weight": (1, weight)}
        if bias is not None:
            tensors["bias"] = (2, bias)
        self._install(node, conv, tensors, x, "conv")

    def _batch_norm(self, node, inputs, attrs, where) -> None:
        x, scale, bias, mean, var = (inputs + [None] * 5)[:5]
        if attrs.get("training_mode", 0) or any(node.output[1:]):
            raise UnsupportedModelError(f"BatchNormalization {where} is in training mode")
        if not all(isinstance(t, torch.Tensor) for t in (scale, bias, mean, var)):
            raise UnsupportedModelError(f"BatchNormalization {where} computes its parameters in the graph")
        rank = self.ranks.get(node.input[0])
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 5: nn.BatchNorm3d}.get(rank, nn.BatchNorm2d)
        bn = cls(mean.numel(), eps=float(attrs.get("epsilon", 1e-5)),
                 momentum=1.0 - float(attrs.get("momentum", 0.9)), device="meta")
        self.bn_count += 1
        tensors = {"weight": (1, scale), "bias": (2, bias), "running_mean": (3, mean), "running_var": (4, var)}
        self._install(node, bn, tensors, x, "bn")

    def _linear(self, node, inputs, attrs) -> bool:
        """Gemm / MatMul by a stored 2-D matrix -> nn.Linear; False if it must stay a function."""
        a, b = inputs[0], inputs[1]
        c = inputs[2] if len(inputs) > 2 else None
        if not isinstance(a, fx.Node) or not isinstance(b, torch.Tensor) or b.dim() != 2:
            return False
        trans_b = bool(attrs.get("transB", 0)) if node.op_type == "Gemm" else False
        out_features = b.shape[0] if trans_b else b.shape[1]
        if node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or self.ranks.get(node.input[0], 2) != 2:
                return False
            if c is not None and (not isinstance(c, torch.Tensor)
                                  or attrs.get("beta", 1.0) != 1.0 or c.numel() != out_features
                                  or c.dim() > 2):
                return False
        weight = b if trans_b else b.t()
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=c is not None, device="meta")
        tensors = {"weight": (1, weight.contiguous())}
        if c is not None:
            tensors["bias"] = (2, c.reshape(-1))
        self._install(node, linear, tensors, a, "linear", transpose_weight=not trans_b)
        return True

    def _install(self, node, module: nn.Module, tensors: dict, x: fx.Node, kind: str,
                 transpose_weight: bool = False) -> None:
        path = self._module_path(node, node.input[1], kind)
        for attr, (input_index, tensor) in tensors.items():
            onnx_name = node.input[input_index]
            value = tensor.detach().clone().float()
            if attr in ("weight", "bias"):
                setattr(module, attr, nn.Parameter(value, requires_grad=False))
            else:
                module.register_buffer(attr, value)
            original = self.consts[onnx_name]
            kind_of = self.const_kind.get(onnx_name, "computed")
            self.sources[f"{path}.{attr}"] = OnnxSource(
                onnx_name, kind_of, node_output=node.output[0], input_index=input_index,
                original=value.clone() if kind_of == "computed" else None,
                transpose=transpose_weight and attr == "weight",
                shape=tuple(original.shape),
                dtype=self.stored_dtypes.get(onnx_name, np.dtype(numpy_dtype(original))))
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_buffer("num_batches_tracked", torch.tensor(0))
        _set_module(self.root, path, module)
        self.leaf_paths.add(path)
        self.env[node.output[0]] = self.graph.call_module(path, (x,))

    def _module_path(self, node, weight_name: str, kind: str) -> str:
        candidates = []
        if weight_name.endswith(".weight"):
            candidates.append(weight_name[: -len(".weight")])
        scoped = scope_path(node.name)
        if scoped:
            candidates.append(scoped)
        candidates.append(f"{kind}_{len(self.leaf_paths)}")
        for path in candidates:
            if self._free(path):
                return path
        base, i = candidates[-1], 1
        while not self._free(f"{base}_{i}"):
            i += 1
        return f"{base}_{i}"

    def _free(self, path: str) -> bool:
        parts = path.split(".")
        if not all(p and (p.isidentifier() and not keyword.iskeyword(p) or p.isdigit())
                   and not hasattr(nn.Module, p) and p != "onnx_constants" for p in parts):
            return False
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts))}
        return not any(p == path or p in prefixes or p.startswith(path + ".") for p in self.leaf_paths)

    def _value_types(self) -> tuple[dict[str, int], dict[str, torch.dtype], dict[str, int]]:
        """Rank, dtype and static first size of every value ONNX shape inference can tell."""
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception:
            return {}, {}, {}
        ranks, dtypes, leading = {}, {}, {}
        g = inferred.graph
        for value in list(g.value_info) + list(g.input) + list(g.output):
            tensor_type = value.type.tensor_type
            if tensor_type.HasField("shape"):
                ranks[value.name] = len(tensor_type.shape.dim)
                if tensor_type.shape.dim and tensor_type.shape.dim[0].HasField("dim_value"):
                    leading[value.name] = tensor_type.shape.dim[0].dim_value
            if tensor_type.elem_type in HALF_ELEM_TYPES:
                dtypes[value.name] = torch.float32  # computed in float32 here
            elif tensor_type.elem_type in ops.DTYPES:
                dtypes[value.name] = ops.DTYPES[tensor_type.elem_type]
        return ranks, dtypes, leading


def _getitem(value, index):
    return value[index]


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent = root
    parts = path.split(".")
    for part in parts[:-1]:
        if part not in parent._modules:
            parent.add_module(part, nn.Module())
        parent = parent._modules[part]
    parent.add_module(parts[-1], module)

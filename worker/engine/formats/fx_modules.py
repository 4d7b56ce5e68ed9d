"""Turn functional aten conv / batch-norm / linear calls in an FX graph into real `nn.Conv2d`,
`nn.BatchNorm*d` and `nn.Linear` submodules that own the very same tensors.

`torch.export` programs (and TorchScript converted through torch.export) call
`aten.conv2d(x, get_attr(weight), ...)`; the algorithm finds layers with `named_modules()` and
captures activations with hooks, so every such call becomes `call_module` on a module placed at
the weight's owner path (`layer1.0.conv1.weight` -> module `layer1.0.conv1`): parameter names
stay exactly as they were, and re-exporting the module gives back the same program.
"""
from __future__ import annotations

import operator

import torch
from torch import fx, nn

from worker.engine.errors import UnsupportedModelError

aten = torch.ops.aten

# (op, index of the `training` argument or None) for every inference batch-norm variant export emits.
_BATCH_NORM_TUPLE_OPS = {
    aten._native_batch_norm_legit_no_training.default,
    aten._native_batch_norm_legit.default,
    aten.native_batch_norm.default,
}
_CONV_OPS = {aten.conv2d.default, aten.conv2d.padding, aten.convolution.default, aten._convolution.default}


def bind_args(node: fx.Node) -> dict:
    """The node's arguments by schema name, defaults filled in."""
    schema = node.target._schema
    bound = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            bound[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            bound[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
        else:
            bound[arg.name] = None
    return bound


def lift_layers_to_modules(gm: fx.GraphModule) -> list[str]:
    """Rewrite `gm` in place; returns warnings for layers left functional (shared or computed weights)."""
    _drop_guards(gm)
    lifter = _Lifter(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _CONV_OPS:
            lifter.conv(node)
        elif node.target is aten.batch_norm.default or node.target in _BATCH_NORM_TUPLE_OPS:
            lifter.batch_norm(node)
        elif node.target is aten.linear.default:
            lifter.linear(node)
        elif node.target in (aten.addmm.default, aten.mm.default):
            lifter.matmul(node)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    _order_modules_by_graph(gm)
    return lifter.warnings


def _order_modules_by_graph(gm: fx.GraphModule) -> None:
    """Reorder every container's children by first use in the graph, so `named_modules()` walks the
    layers in execution order whatever order the source file stored them in."""
    first_use: dict[str, int] = {}
    for index, node in enumerate(gm.graph.nodes):
        if node.op in ("call_module", "get_attr"):
            parts = node.target.split(".")
            for depth in range(1, len(parts) + 1):
                first_use.setdefault(".".join(parts[:depth]), index)
    for path, container in list(gm.named_modules()):
        prefix = f"{path}." if path else ""
        keys = list(container._modules)
        keys.sort(key=lambda k: first_use.get(prefix + k, len(first_use) + 1))
        container._modules = type(container._modules)((k, container._modules[k]) for k in keys)


def _drop_guards(gm: fx.GraphModule) -> None:
    # The unlifted program checks input shapes with a `_guards_fn` call; re-exporting adds its own guards.
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            gm.graph.erase_node(node)
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")


class _Lifter:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.warnings: list[str] = []
        self.claimed: set[str] = set()
        self.uses: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                self.uses[node.target] = self.uses.get(node.target, 0) + len(node.users)

    # -- the three layer kinds ----------------------------------------------------------------
    def conv(self, node: fx.Node) -> None:
        a = bind_args(node)
        weight, bias = a["weight"], a["bias"]
        if node.target in (aten.convolution.default, aten._convolution.default) and (
                a["transposed"] or any(a["output_padding"] or [])):
            return
        tensor = self._tensor(weight)
        if tensor is None or tensor.dim() != 4 or (bias is not None and self._tensor(bias) is None):
            self._functional(node, "conv", weight)
            return
        out_ch, in_per_group, kh, kw = tensor.shape
        groups = int(a["groups"])
        padding = a["padding"]
        module = nn.Conv2d(in_per_group * groups, out_ch, (kh, kw), stride=tuple(a["stride"]),
                           padding=padding if isinstance(padding, str) else tuple(padding),
                           dilation=tuple(a["dilation"]), groups=groups, bias=bias is not None, device="meta")
        self._install(node, module, {"weight": weight, "bias": bias}, (a["input"],))

    def batch_norm(self, node: fx.Node) -> None:
        a = bind_args(node)
        if a.get("training"):
            weight = a["weight"]
            name = weight.target.rpartition(".")[0] if isinstance(weight, fx.Node) else node.name
            raise UnsupportedModelError(f"batch norm {name!r} was exported in training mode (it normalises with "
                                        "batch statistics); call model.eval() before torch.export")
        mean, var = a["running_mean"], a["running_var"]
        if self._tensor(mean) is None or self._tensor(var) is None:
            self._functional(node, "batch norm", mean)
            return
        weight, bias = a["weight"], a["bias"]
        affine = weight is not None and bias is not None
        if affine and (self._tensor(weight) is None or self._tensor(bias) is None):
            self._functional(node, "batch norm", weight)
            return
        rank = _rank(a["input"])
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 5: nn.BatchNorm3d}.get(rank, nn.BatchNorm2d)
        momentum = a["momentum"]
        module = cls(self._tensor(mean).numel(), eps=float(a["eps"]),
                     momentum=0.1 if momentum is None else float(momentum), affine=affine, device="meta")
        tensors = {"running_mean": mean, "running_var": var}
        if affine:
            tensors.update(weight=weight, bias=bias)
        if node.target in _BATCH_NORM_TUPLE_OPS:
            # Only output 0 (the normalised tensor) may be used in inference programs.
            users = list(node.users)
            if not all(u.target is operator.getitem and u.args[1] == 0 for u in users):
                self._functional(node, "batch norm", mean)
                return
            self._install(node, module, tensors, (a["input"],), replace=users)
        else:
            self._install(node, module, tensors, (a["input"],))

    def linear(self, node: fx.Node) -> None:
        a = bind_args(node)
        weight, bias = a["weight"], a["bias"]
        tensor = self._tensor(weight)
        if tensor is None or tensor.dim() != 2 or (bias is not None and self._tensor(bias) is None):
            self._functional(node, "linear", weight)
            return
        module = nn.Linear(tensor.shape[1], tensor.shape[0], bias=bias is not None, device="meta")
        self._install(node, module, {"weight": weight, "bias": bias}, (a["input"],))

    def matmul(self, node: fx.Node) -> None:
        """Decomposed linear: addmm(bias, x, t(weight)) or mm(x, t(weight))."""
        a = bind_args(node)
        if node.target is aten.addmm.default:
            if a["beta"] != 1 or a["alpha"] != 1:
                return
            bias, x, transposed = a["self"], a["mat1"], a["mat2"]
        else:
            bias, x, transposed = None, a["self"], a["mat2"]
        if not (isinstance(transposed, fx.Node) and len(transposed.users) == 1 and (
                transposed.target is aten.t.default
                or (transposed.target is aten.permute.default and list(transposed.args[1]) == [1, 0]))):
            return
        weight = transposed.args[0]
        tensor = self._tensor(weight)
        if tensor is None or tensor.dim() != 2 or (bias is not None and (
                self._tensor(bias) is None or self._tensor(bias).dim() != 1)):
            return
        module = nn.Linear(tensor.shape[1], tensor.shape[0], bias=bias is not None, device="meta")
        self._install(node, module, {"weight": weight, "bias": bias}, (x,))
        self.gm.graph.erase_node(transposed)
        if not weight.users:
            self.gm.graph.erase_node(weight)

    # -- helpers ------------------------------------------------------------------------------
    def _tensor(self, node) -> torch.Tensor | None:
        """The tensor behind a get_attr node used by this op alone, else None."""
        if not isinstance(node, fx.Node) or node.op != "get_attr" or self.uses.get(node.target, 0) != 1:
            return None
        value = _fetch(self.gm, node.target)
        return value if isinstance(value, torch.Tensor) else None

    def _functional(self, node: fx.Node, kind: str, weight) -> None:
        name = weight.target if isinstance(weight, fx.Node) and weight.op == "get_attr" else node.name
        self.warnings.append(f"{kind} {name!r} has shared or computed weights: left as is, not pruned")

    def _install(self, node: fx.Node, module: nn.Module, tensors: dict, args: tuple, replace=None) -> None:
        attrs = {name: n for name, n in tensors.items() if n is not None}
        path = self._module_path(attrs)
        for attr, source in attrs.items():
            value = _fetch(self.gm, source.target)
            if attr in ("weight", "bias"):
                param = value if isinstance(value, nn.Parameter) else nn.Parameter(value, requires_grad=False)
                setattr(module, attr, param)
            else:
                module.register_buffer(attr, value)
        tracked = f"{path}.num_batches_tracked"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            # Modules are built on "meta" (no wasted init); the step counter must be real.
            counter = _fetch(self.gm, tracked) if _exists(self.gm, tracked) else torch.tensor(0)
            module.register_buffer("num_batches_tracked", counter)
        _set_module(self.gm, path, module)
        self.claimed.add(path)
        with self.gm.graph.inserting_before(node):
            call = self.gm.graph.call_module(path, args)
        call.meta = dict(node.meta)
        for old in replace or [node]:
            if old is not node:
                call.meta = dict(old.meta)
            old.replace_all_uses_with(call)
            if old is not node:
                self.gm.graph.erase_node(old)
        self.gm.graph.erase_node(node)
        for source in attrs.values():
            if not source.users:
                self.gm.graph.erase_node(source)

    def _module_path(self, attrs: dict) -> str:
        """The owner path of the tensors if they all live on one plain module we can replace."""
        owners = {n.target.rpartition(".")[0] for n in attrs.values()}
        names = {n.target.rpartition(".")[2] for n in attrs.values()}
        if len(owners) == 1 and names == set(attrs):
            owner = owners.pop()
            if owner and owner not in self.claimed and _replaceable(self.gm, owner, set(attrs)):
                return owner
        base = "lifted_" + next(iter(attrs.values())).target.replace(".", "_")
        path, i = base, 1
        while _exists(self.gm, path):
            path, i = f"{base}_{i}", i + 1
        return path


def _rank(node) -> int | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def _fetch(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _exists(root: nn.Module, target: str) -> bool:
    try:
        _fetch(root, target)
        return True
    except AttributeError:
        return False


def _replaceable(root: nn.Module, owner: str, attrs: set[str]) -> bool:
    """A plain container holding only these tensors (+ the BN counter) and no children."""
    module = _fetch(root, owner)
    if type(module) is not nn.Module or list(module.children()):
        return False
    own = {n for n, _ in module.named_parameters(recurse=False)} | {n for n, _ in module.named_buffers(recurse=False)}
    return own <= attrs | {"num_batches_tracked"}


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent = root
    parts = path.split(".")
    for part in parts[:-1]:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    if parts[-1] in parent._modules:
        parent._modules[parts[-1]] = module  # same slot: named_modules() keeps the graph's order
    else:
        parent.add_module(parts[-1], module)

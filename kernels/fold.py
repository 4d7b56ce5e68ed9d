"""Fold eval-mode BatchNorm into the convolution before it, on an exported (unlifted) FX graph.

conv(x, W, b) followed by BN(gamma, beta, mean, var, eps) equals conv(x, W * s, (b - mean) * s + beta)
with s = gamma / sqrt(var + eps) per output channel. Zeros of W stay zeros, so pattern sparsity survives.
"""
from __future__ import annotations

import operator

import torch
from torch import fx

aten = torch.ops.aten
CONV_TARGETS = (aten.conv2d.default, aten.convolution.default)
BN_TARGETS = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)


def attr_tensor(gm: fx.GraphModule, node) -> torch.Tensor | None:
    """The tensor a get_attr node points at (None for a None argument); raises for computed tensors."""
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise ValueError(f"{node} is not a stored tensor")
    value = gm
    for part in node.target.split("."):
        value = getattr(value, part)
    return value.detach()


def conv_weight_and_bias(gm: fx.GraphModule, conv: fx.Node) -> tuple[torch.Tensor, torch.Tensor | None]:
    return attr_tensor(gm, conv.args[1]), attr_tensor(gm, conv.args[2] if len(conv.args) > 2 else None)


def _bn_parameters(bn: fx.Node):
    """(gamma, beta, mean, var, eps) nodes/values of either BN spelling, or None if it is training-mode."""
    args = bn.args
    if bn.target == aten.batch_norm.default:
        training = args[5] if len(args) > 5 else bn.kwargs.get("training", False)
        if training:
            return None
        return args[1], args[2], args[3], args[4], float(args[7] if len(args) > 7 else 1e-5)
    return args[1], args[2], args[3], args[4], float(args[6])


def _bn_output_users_ok(bn: fx.Node) -> bool:
    """_native_batch_norm_legit_no_training returns a tuple; only output [0] may be used."""
    if bn.target == aten.batch_norm.default:
        return True
    return all(u.op == "call_function" and u.target == operator.getitem and u.args[1] == 0 for u in bn.users)


def _set_attr(gm: fx.GraphModule, name: str, tensor: torch.Tensor) -> str:
    base, index = name, 0
    while hasattr(gm, name):
        index += 1
        name = f"{base}_{index}"
    gm.register_buffer(name, tensor.contiguous())
    return name


def safe_name(layer: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in layer)


def fold_batchnorm(gm: fx.GraphModule) -> list[str]:
    """Fold every eval BN whose only input is a conv used by nothing else. Returns the folded layer names.

    Conv nodes must carry `meta["zd_layer"]` (set by graph.name_conv_layers) so names survive the fold.
    """
    folded = []
    for bn in list(gm.graph.nodes):
        if bn.op != "call_function" or bn.target not in BN_TARGETS:
            continue
        conv = bn.args[0]
        if not (isinstance(conv, fx.Node) and conv.op == "call_function" and conv.target in CONV_TARGETS):
            continue
        if len(conv.users) != 1 or not _bn_output_users_ok(bn):
            continue
        if conv.target == aten.convolution.default and conv.args[6]:  # transposed
            continue
        params = _bn_parameters(bn)
        if params is None:
            continue
        try:
            weight, bias = conv_weight_and_bias(gm, conv)
            gamma, beta, mean, var = (attr_tensor(gm, p) for p in params[:4])
        except ValueError:
            continue  # weights computed in the graph: leave it to torch
        eps = params[4]
        out_channels = weight.shape[0]
        ones, zeros = torch.ones(out_channels), torch.zeros(out_channels)
        gamma = ones if gamma is None else gamma.float()
        beta = zeros if beta is None else beta.float()
        scale = gamma / torch.sqrt(var.float() + eps)
        new_weight = (weight.double() * scale.double().view(-1, *([1] * (weight.dim() - 1)))).float()
        base_bias = zeros if bias is None else bias.float()
        new_bias = ((base_bias.double() - mean.double()) * scale.double() + beta.double()).float()
        layer = conv.meta.get("zd_layer", conv.name)
        w_name = _set_attr(gm, f"zd_folded_{safe_name(layer)}_weight", new_weight)
        b_name = _set_attr(gm, f"zd_folded_{safe_name(layer)}_bias", new_bias)
        with gm.graph.inserting_before(conv):
            w_node = gm.graph.get_attr(w_name)
            b_node = gm.graph.get_attr(b_name)
        args = list(conv.args)
        while len(args) < 3:
            args.append(None)
        args[1], args[2] = w_node, b_node
        conv.args = tuple(args)
        if bn.target == aten.batch_norm.default:
            bn.replace_all_uses_with(conv)
        else:
            for user in list(bn.users):
                user.replace_all_uses_with(conv)
                gm.graph.erase_node(user)
        gm.graph.erase_node(bn)
        folded.append(layer)
    gm.graph.eliminate_dead_code()
    remove_unused_attributes(gm)
    gm.recompile()
    return folded


def remove_unused_attributes(gm: fx.GraphModule) -> None:
    """Drop parameters/buffers no get_attr reads, so a re-export does not carry dead (dense) weights."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for kind in ("_parameters", "_buffers"):
        for name, _ in list(getattr(gm, "named_" + kind[1:])()):
            if name in used:
                continue
            owner_path, _, leaf = name.rpartition(".")
            owner = gm.get_submodule(owner_path) if owner_path else gm
            getattr(owner, kind).pop(leaf, None)

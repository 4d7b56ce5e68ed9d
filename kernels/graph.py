"""The model as an FX graph: export with a dynamic batch, find 3x3 (and 1x1, 5x5, 7x7) convs and their fusable epilogues,
and rewrite the chosen ones into compiled-conv calls. Everything else stays torch."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from kernels.errors import KernelError
from kernels.fold import CONV_TARGETS, conv_weight_and_bias, fold_batchnorm, remove_unused_attributes
from kernels.graph_ops import COMPILED_CONV

aten = torch.ops.aten
RELU_TARGETS = (aten.relu.default, aten.relu_.default)
ADD_TARGETS = (aten.add.Tensor, aten.add_.Tensor)
MAX_BATCH = 4096


class GraphError(KernelError, ValueError):
    """The model cannot be exported to a graph the compiler can work on (the pipeline then delivers the
    pruned model without a sparse package, with a warning)."""


@dataclass
class ConvSite:
    """One conv2d node and the epilogue nodes that can run inside its kernel."""

    layer: str
    conv: fx.Node
    output: fx.Node  # last node of the fused chain: what the rest of the graph reads
    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    relu: bool = False
    residual: fx.Node | None = None
    unsupported: str = ""  # why the compiled path cannot take it ("" = it can)
    chain: list[fx.Node] = field(default_factory=list)  # conv, [add], [relu] in graph order

    @property
    def pointwise(self) -> bool:
        """A 1x1 conv, compiled as the 3x3 conv (padding 1) whose only tap is the centre: same outputs."""
        return tuple(self.weight.shape[-2:]) == (1, 1)

    @property
    def kernel_size(self) -> int:
        """k of the k x k conv the generator compiles (a 1x1 conv runs as a 3x3)."""
        return max(3, int(self.weight.shape[-1]))

    @property
    def shape_padding(self) -> int:
        """The padding that gives this site's output shape under the 3x3 formula of the graph's
        `compiled_conv` op (its shape function; the op's arguments only describe the output)."""
        return self.compiled_padding[0] - (self.kernel_size - 3) // 2

    @property
    def compiled_weight(self) -> torch.Tensor:
        if not self.pointwise:
            return self.weight
        return torch.nn.functional.pad(self.weight, (1, 1, 1, 1))

    @property
    def compiled_padding(self) -> tuple[int, int]:
        return (self.padding[0] + 1, self.padding[1] + 1) if self.pointwise else self.padding

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups


def _pair(value, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    value = list(value)
    return (int(value[0]), int(value[-1])) if value else (default, default)


def _export(module: torch.nn.Module, example: torch.Tensor, dynamic: bool) -> torch.export.ExportedProgram:
    if not dynamic:
        return torch.export.export(module, (example,))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # A batch of 1 would be specialised as a constant; trace with 2 so the dim stays symbolic.
    traced = example if example.shape[0] > 1 else torch.cat([example, example])
    return torch.export.export(module, (traced,), dynamic_shapes=({0: batch},))


def eval_module(model) -> torch.nn.Module:
    """The model as an eval-mode module (an ExportedProgram's graph is eval already and refuses .eval())."""
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    try:
        module.eval()
    except NotImplementedError:
        pass
    return module


def export_model(model, example: torch.Tensor) -> tuple[torch.export.ExportedProgram, bool]:
    """Export with a dynamic batch dim when the model allows it, else at the example's batch size."""
    module = eval_module(model)
    errors = []
    for dynamic in (True, False):
        try:
            with torch.no_grad():
                return _export(module, example, dynamic), dynamic
        except Exception as exc:  # torch raises many unrelated types here; report them all
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise GraphError("torch.export could not trace the model: " + " | ".join(errors))


def name_conv_layers(gm: fx.GraphModule) -> None:
    """Name each conv after its weight's module path (stable across exports, readable in reports)."""
    seen: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in CONV_TARGETS:
            weight = node.args[1]
            base = weight.target.removesuffix(".weight") if isinstance(weight, fx.Node) and weight.op == "get_attr" \
                else node.name
            count = seen.get(base, 0)
            seen[base] = count + 1
            node.meta["zd_layer"] = base if count == 0 else f"{base}#{count}"


def prepare_graph(model, example: torch.Tensor) -> tuple[fx.GraphModule, bool, list[str]]:
    """Export, name convs, fold BN. Returns (graph module, dynamic batch?, folded layer names)."""
    program, dynamic = export_model(model, example)
    gm = program.module()
    name_conv_layers(gm)
    folded = fold_batchnorm(gm)
    return gm, dynamic, folded


def _shape(node) -> tuple | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _dtype(node):
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return val.dtype if isinstance(val, torch.Tensor) else None


def _single_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _conv_parameters(conv: fx.Node):
    args = list(conv.args) + [None] * 9
    if conv.target == aten.convolution.default:  # (x, w, b, stride, padding, dilation, transposed, out_pad, groups)
        if args[6]:
            return None
        return _pair(args[3], 1), _pair(args[4], 0), _pair(args[5], 1), int(args[8] or 1)
    kw = conv.kwargs  # conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1)
    return (_pair(args[3] if args[3] is not None else kw.get("stride"), 1),
            _pair(args[4] if args[4] is not None else kw.get("padding"), 0),
            _pair(args[5] if args[5] is not None else kw.get("dilation"), 1),
            int(args[6] if args[6] is not None else kw.get("groups", 1)))


def _why_unsupported(site: ConvSite) -> str:
    kh, kw = site.weight.shape[-2:]
    if (kh, kw) == (1, 1) and site.padding != (0, 0):
        return f"1x1 kernel with padding={site.padding} (only 1x1 without padding is compiled)"
    if (kh, kw) not in ((3, 3), (1, 1), (5, 5), (7, 7)):
        return f"kernel {kh}x{kw} (only 1x1, 3x3, 5x5 and 7x7 are compiled)"
    if site.groups != 1:
        return f"groups={site.groups} (only groups=1 is compiled)"
    if site.dilation != (1, 1):
        return f"dilation={site.dilation} (only 1 is compiled)"
    if site.stride[0] != site.stride[1] or site.stride[0] not in (1, 2):
        return f"stride={site.stride} (only 1 or 2, equal in both dims)"
    if site.padding[0] != site.padding[1] or site.padding[0] > max(2, kh // 2):
        return f"padding={site.padding} (only equal padding up to max(2, kernel // 2))"
    if _dtype(site.conv.args[0]) not in (None, torch.float32):
        return f"dtype {_dtype(site.conv.args[0])} (only float32 is compiled)"
    if len(_shape(site.conv.args[0]) or (0, 0, 0, 0)) != 4:
        return "input is not NCHW"
    return ""


def _attach_epilogue(site: ConvSite, claimed: set[fx.Node]) -> None:
    """Fuse `+ residual` then ReLU when each intermediate result has no other reader and no earlier site
    fused that add."""
    node = site.conv
    user = _single_user(node)
    if user is not None and user not in claimed and user.op == "call_function" and user.target in ADD_TARGETS \
            and not user.kwargs.get("alpha") and len(user.args) == 2:
        other = user.args[1] if user.args[0] is node else user.args[0]
        if isinstance(other, fx.Node) and other is not node and _shape(other) is not None \
                and _shape(other) == _shape(node) and _dtype(other) == _dtype(node):
            site.residual, node = other, user
            site.chain.append(user)
            user = _single_user(node)
    if user is not None and user.op == "call_function" and user.target in RELU_TARGETS:
        site.relu, node = True, user
        site.chain.append(user)
    site.output = node


def find_conv_sites(gm: fx.GraphModule) -> list[ConvSite]:
    """Every conv in graph order; supported 3x3 (5x5, 7x7) ones get their fusable epilogue attached."""
    sites = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in CONV_TARGETS:
            continue
        params = _conv_parameters(node)
        try:
            weight, bias = conv_weight_and_bias(gm, node)
        except ValueError:
            continue  # weights computed at run time: not a layer we can compile
        if params is None or weight.dim() != 4:
            continue
        stride, padding, dilation, groups = params
        site = ConvSite(node.meta.get("zd_layer", node.name), node, node, weight, bias, stride, padding,
                        dilation, groups, chain=[node])
        site.unsupported = _why_unsupported(site)
        sites.append(site)
    # 3x3 sites first: a ResNet's downsample (1x1) feeds the same add as the block's last 3x3 conv, and the
    # 3x3 layer is the one a fused epilogue saves more on. 1x1 convs take the adds left over (a bottleneck's
    # last 1x1 before its shortcut add: the add + ReLU in torch cost ResNet-50 ~5% of its time).
    claimed: set[fx.Node] = set()
    for site in sorted((s for s in sites if not s.unsupported), key=lambda s: s.pointwise):
        _attach_epilogue(site, claimed)
        claimed.update(site.chain[1:])
    return sites


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]):
        super().__init__(gm)
        self.wanted, self.values = wanted, {}

    def run_node(self, node):
        result = super().run_node(node)
        if node in self.wanted:
            self.values[node] = result.detach().clone() if isinstance(result, torch.Tensor) else result
        return result


def capture_inputs(gm: fx.GraphModule, sites: list[ConvSite], example: torch.Tensor) -> dict[str, tuple]:
    """Run the graph once; return {layer: (input tensor, residual tensor or None)} at the example's shape."""
    wanted = {s.conv.args[0] for s in sites} | {s.residual for s in sites if s.residual is not None}
    recorder = _Recorder(gm, wanted)
    with torch.no_grad():
        recorder.run(example)
    return {s.layer: (recorder.values[s.conv.args[0]],
                      recorder.values[s.residual] if s.residual is not None else None) for s in sites}


def replace_with_compiled(gm: fx.GraphModule, sites: list[ConvSite]) -> None:
    """Turn each site's conv(+add)(+relu) chain into one `zerodata::compiled_conv` call."""
    replaced: dict[fx.Node, fx.Node] = {}  # an earlier site's output may be this site's residual
    for site in sites:
        residual = replaced.get(site.residual, site.residual)
        args = (site.conv.args[0], residual, site.layer, site.out_channels, site.stride[0],
                site.shape_padding, site.dilation[0], site.relu)
        with gm.graph.inserting_before(site.output):
            call = gm.graph.call_function(COMPILED_CONV, args)
        call.meta.update({k: v for k, v in site.output.meta.items() if k in ("val", "tensor_meta", "stack_trace")})
        site.output.replace_all_uses_with(call)
        replaced[site.output] = call
        for node in reversed(site.chain):
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    remove_unused_attributes(gm)
    gm.recompile()


def export_rewritten(gm: fx.GraphModule, example: torch.Tensor, dynamic: bool) -> torch.export.ExportedProgram:
    try:
        with torch.no_grad():
            return _export(gm, example, dynamic)
    except Exception as exc:
        raise GraphError(f"could not export the rewritten graph: {type(exc).__name__}: {exc}") from exc

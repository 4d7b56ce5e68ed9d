"""Block-wise reconstruction (BRECQ-style, for pruning): after the layer-wise pass, each residual block's kept
weights are tuned jointly so the block's output on the pruned model's input matches the dense block's output.

Layer-wise least squares fits one conv at a time to a linear target; a block's error also comes from the ReLU
between its convs and from the error each conv leaves to the next, which only a joint fit sees. Blocks are the
spans of the model's torch.fx graph between "cuts" (nodes whose value is the only one later nodes need: the output
of a residual block, where the shortcut has joined); spans are merged until each holds `min_layers` pruned layers,
so plain chains (no residual structure) get groups of consecutive pruned layers. Blocks are tuned in execution
order, each on the student's activations as the tuned prefix produces them; masks stay fixed, BatchNorm statistics
stay as they are (eval mode). A block whose error did not go down keeps its weights from before.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from worker.engine.block_views import crop_views, cutmix_views
from worker.engine.schedule import CosineSchedule
from worker.progress import Progress


@dataclass
class BlockSettings:
    steps: int = 100          # Adam steps per block (0 = off)
    lr: float = 1e-3          # Adam learning rate (cosine decay to 0 over the block's steps)
    batch: int = 64           # samples per step
    min_layers: int = 2       # pruned layers per block at least (graph spans are merged until they hold this many)
    bn_affine: int = 0        # 1 = also tune the blocks' BatchNorm weight and bias
    flip: int = 1             # 1 = also use the horizontally flipped inputs (2x the samples)
    shifted_views: int = 0    # extra copies of the inputs, each rolled by up to 2 pixels and randomly flipped
    cutmix_views: int = 1     # extra copies of the inputs made by CutMix of random pairs (block_views.py)
    crop_views: int = 1       # extra copies made by random resized crops, randomly flipped (block_views.py)
    after_activation: int = 1 # 1 = a block ends after the activation following its residual add, 0 = before it
    teacher_input: int = 1    # 1 = target the dense block on the DENSE input (repairs the error carried in);
    #                           0 = the dense block on the student's input (only this block's own error)
    inputs: int = 0           # at least this many synthetic inputs: compress_module synthesizes the missing ones
    #                           with another seed for this stage alone (the layer-wise pass keeps its own set)


@dataclass
class Block:
    input_node: str              # the cut whose value enters the block
    output_node: str             # the cut the block produces
    nodes: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # pruned layers (module names) inside


def _cuts(graph: fx.Graph) -> list[fx.Node]:
    """Nodes after which no other computed value is still needed: everything later depends only on them."""
    nodes = [n for n in graph.nodes if n.op != "output"]
    order = {n: i for i, n in enumerate(nodes)}
    last_use = {}
    for n in graph.nodes:
        for a in n.all_input_nodes:
            last_use[a] = order.get(n, len(nodes))
    live, cuts = set(), []
    for i, n in enumerate(nodes):
        if n.op == "get_attr":
            continue  # parameters and constants are always available
        live = {m for m in live if last_use.get(m, -1) > i}
        if last_use.get(n, -1) > i:
            live.add(n)
        if live == {n} and n.op != "get_attr":
            cuts.append(n)
    return cuts


_ACTIVATIONS = ("relu", "silu", "gelu", "hardtanh", "hardswish", "sigmoid", "tanh", "elu")


def _is_activation(node: fx.Node) -> bool:
    name = str(node.target).lower() if node.op != "call_module" else node.target.lower()
    return node.op in ("call_function", "call_method") and any(a in name for a in _ACTIVATIONS)


def find_blocks(gm: fx.GraphModule, pruned: set[str], min_layers: int = 2, after_activation: bool = True) -> list[Block]:
    """Spans between consecutive cuts that contain pruned layers, merged until each has `min_layers` of them;
    with `after_activation` a block also takes a lone activation that follows it (a ResNet block's final ReLU)."""
    cuts = _cuts(gm.graph)
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    pos = {n: i for i, n in enumerate(nodes)}
    blocks: list[Block] = []
    current: Block | None = None
    for a, b in zip(cuts, cuts[1:]):
        span = [n for n in nodes[pos[a] + 1:pos[b] + 1] if n.op != "get_attr"]
        layers = [n.target for n in span if n.op == "call_module" and n.target in pruned]
        if current is None and blocks and after_activation and len(span) == 1 and _is_activation(span[0]) \
                and blocks[-1].output_node == a.name:
            blocks[-1].output_node = b.name
            blocks[-1].nodes.append(b.name)
            continue
        if current is None:
            current = Block(a.name, b.name)
        current.output_node = b.name
        current.nodes += [n.name for n in span]
        current.layers += layers
        if layers:
            last_with_layers = (b.name, len(current.nodes))
        if len(current.layers) >= min_layers:
            blocks.append(current)
            current = None
    if current is not None and current.layers:  # the tail: fewer pruned layers than asked; ends at its last one
        current.output_node, kept = last_with_layers
        current.nodes = current.nodes[:kept]
        blocks.append(current)
    return blocks


def block_module(gm: fx.GraphModule, block: Block) -> fx.GraphModule:
    """A graph module computing block.output_node from block.input_node; it shares gm's submodules."""
    named = {n.name: n for n in gm.graph.nodes}
    graph = fx.Graph()
    env = {block.input_node: graph.placeholder("block_input")}
    wanted = set(block.nodes)
    for n in gm.graph.nodes:
        if n.name in wanted or (n.op == "get_attr" and n.name not in env):
            if n.op == "get_attr" and not any(u.name in wanted for u in n.users):
                continue
            env[n.name] = graph.node_copy(n, lambda m: env[m.name])
    graph.output(env[named[block.output_node].name])
    return fx.GraphModule(gm, graph)


def _as_graph(model: nn.Module) -> fx.GraphModule | None:
    if isinstance(getattr(model, "graph", None), fx.Graph):
        return model
    try:
        return fx.symbolic_trace(model)  # shares the model's submodules, so tuning it tunes the model
    except Exception:  # not traceable (data-dependent control flow): no blocks, the caller reports it
        return None


@torch.no_grad()
def _run(module: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([module(x[i:i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def _rel_error(module: nn.Module, x: torch.Tensor, target: torch.Tensor, batch: int) -> float:
    out = _run(module, x, batch)
    return float((out - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12))


def reconstruct_blocks(student: nn.Module, teacher: nn.Module, images: torch.Tensor, masks: dict[str, torch.Tensor],
                       settings: BlockSettings, progress: Progress, *, time_budget_s: float | None = None,
                       seed: int = 0) -> dict:
    """Tunes `student` in place, block by block; masks ({"<layer>.weight": bool tensor}) stay applied.
    Returns a report: blocks, and per block its pruned layers and relative output error before and after."""
    if settings.steps <= 0 or len(images) == 0:
        return {"blocks": 0, "skipped": "off"}
    s_gm, t_gm = _as_graph(student), _as_graph(teacher)
    if s_gm is None or t_gm is None:
        return {"blocks": 0, "skipped": "the model is not a traceable torch.fx graph"}
    pruned = {name[:-len(".weight")] for name in masks}
    blocks = find_blocks(s_gm, pruned, settings.min_layers, bool(settings.after_activation))
    if not blocks:
        return {"blocks": 0, "skipped": "no block holds a pruned layer"}
    start = time.monotonic()
    x = images.detach()
    g = torch.Generator().manual_seed(seed + 13)
    if x.dim() == 4:
        views = [x] + ([torch.flip(x, dims=(3,))] if settings.flip else [])
        views += [_shifted(x, g) for _ in range(settings.shifted_views)]
        views += [cutmix_views(x, len(x), g) for _ in range(settings.cutmix_views)]
        views += [crop_views(x, len(x), g) for _ in range(settings.crop_views)]
        x = torch.cat(views)
    # the pace counts the samples a step really draws: fewer inputs than the batch make a smaller batch
    pace = _Pace(settings.steps, min(settings.batch, len(x)), None if time_budget_s is None else start + time_budget_s)
    first = blocks[0].input_node
    x_s = _value_at(s_gm, first, x, settings.batch)
    x_t = _value_at(t_gm, first, x, settings.batch)
    s_mods = dict(student.named_modules())
    report = []
    for i, block in enumerate(blocks):
        progress.check_cancelled()
        progress.update("recover", i, len(blocks), f"block {i + 1}/{len(blocks)} ({', '.join(block.layers)})")
        sub_s, sub_t = block_module(s_gm, block), block_module(t_gm, block)
        y_t = _run(sub_t, x_t, settings.batch)
        target = y_t if settings.teacher_input else _run(sub_t, x_s, settings.batch)
        entry = {"layers": block.layers, "error_before": _rel_error(sub_s, x_s, target, settings.batch)}
        steps, batch, deadline = pace.next_block(len(blocks) - i)
        if steps > 0:
            tuned = time.monotonic()
            entry["batch"] = batch
            entry["steps"] = _tune(sub_s, block, s_mods, masks, x_s, target, settings, g, entry, steps, batch,
                                   deadline)
            pace.record(entry["steps"], batch, time.monotonic() - tuned)
        else:
            entry["skipped"] = "time budget"
            entry["error_after"] = entry["error_before"]
        report.append(entry)
        x_s = _run(sub_s, x_s, settings.batch)
        x_t = y_t
    progress.update("recover", len(blocks), len(blocks), "blocks done")
    return {"blocks": len(blocks), "steps_per_block": settings.steps, "per_block": report,
            "seconds": time.monotonic() - start}


def _shifted(x: torch.Tensor, g: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Each image rolled by its own offset in [-shift, shift] and flipped with probability 1/2."""
    out = torch.empty_like(x)
    for i in range(len(x)):
        dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=g))
        out[i] = torch.roll(x[i], shifts=(dx, dy), dims=(1, 2))
    flip = (torch.rand(len(x), generator=g) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], torch.flip(out, dims=(3,)), out)


def _value_at(gm: fx.GraphModule, node_name: str, x: torch.Tensor, batch: int) -> torch.Tensor:
    from worker.engine.residual_targets import node_value
    return torch.cat([node_value(gm, node_name, x[i:i + batch]) for i in range(0, len(x), batch)])


# A budget that cannot buy every block its full steps first halves the batch down to this, then cuts steps: at the
# same samples seen, ResNet-56 at 0.5 connectivity read 100 x 64 3.78, 200 x 32 3.52, 400 x 16 3.43 (300 x 64, 2.3x
# the time: 3.48; docs/benchmarks/engine.md, session 21).
MIN_BUDGET_BATCH = 16


class _Pace:
    """Shares a time budget evenly between the blocks still to tune: each gets the samples its share buys at the
    seconds per sample measured so far, as the asked steps at the largest batch that fits (down to
    MIN_BUDGET_BATCH), else fewer steps; a tight budget so shortens every block's schedule instead of leaving the
    last blocks untuned. The first block, with nothing measured yet, runs the asked batch and stops at its share."""

    def __init__(self, steps: int, batch: int, deadline: float | None):
        self.steps, self.batch, self.deadline = steps, batch, deadline
        self.done_samples, self.seconds = 0, 0.0

    def next_block(self, blocks_left: int) -> tuple[int, int, float | None]:
        """(steps, batch, deadline) for the next block."""
        if self.deadline is None:
            return self.steps, self.batch, None
        share = (self.deadline - time.monotonic()) / blocks_left
        if share <= 0:
            return 0, self.batch, None
        if self.done_samples == 0:
            return self.steps, self.batch, time.monotonic() + share
        samples = share * self.done_samples / self.seconds
        batch = self.batch
        while batch * self.steps > samples and batch // 2 >= min(MIN_BUDGET_BATCH, self.batch):
            batch //= 2
        return min(self.steps, int(samples / batch)), batch, None

    def record(self, steps: int, batch: int, seconds: float) -> None:
        self.done_samples += steps * batch
        self.seconds += seconds


def _tune(sub: fx.GraphModule, block: Block, s_mods: dict, masks: dict, x: torch.Tensor, target: torch.Tensor,
          settings: BlockSettings, g: torch.Generator, entry: dict, steps: int, batch: int,
          deadline: float | None) -> int:
    """Tunes the block's kept weights for `steps` Adam steps of `batch` samples (cosine schedule), or until
    `deadline`; returns the steps run."""
    names = {n.target for n in sub.graph.nodes if n.op == "call_module"}
    params, param_masks = [], []
    for name in sorted(names):
        mod = s_mods.get(name)
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            params.append(mod.weight)
            param_masks.append(masks.get(f"{name}.weight"))
        elif settings.bn_affine and isinstance(mod, nn.BatchNorm2d) and mod.affine:
            params += [mod.weight, mod.bias]
            param_masks += [None, None]
    if not params:
        entry["error_after"] = entry["error_before"]
        return 0
    backup = [p.detach().clone() for p in params]
    param_masks = [m.to(p.device, p.dtype) if m is not None else None for p, m in zip(params, param_masks)]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=settings.lr)
    scale = target.pow(2).mean().clamp_min(1e-12)
    schedule, done = CosineSchedule(settings.lr, steps, deadline), 0
    try:
        for step in range(steps):
            if not schedule.runs(step):
                break
            done += 1
            idx = torch.randint(0, len(x), (batch,), generator=g).to(x.device)
            loss = (sub(x[idx]) - target[idx]).pow(2).mean() / scale
            for group in opt.param_groups:
                group["lr"] = schedule.lr(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for p, m in zip(params, param_masks):
                    if m is not None:
                        p.mul_(m)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    entry["error_after"] = _rel_error(sub, x, target, settings.batch)
    if not entry["error_after"] < entry["error_before"]:  # never leave a block worse than the layer-wise pass
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)
        entry["kept_layerwise"] = True
        entry["error_after"] = entry["error_before"]
    return done

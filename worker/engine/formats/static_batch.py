"""Programs traced at a fixed batch size (torch.export without dynamic_shapes, the usual call) bake that size into
view/reshape targets: `x.view(x.size(0), 4, -1, h, w)` becomes `view(x, [1, 4, 8, 32, 32])`, and the engine, which
runs batches of synthetic inputs, could not run the model. A target whose first size is the traced batch, applied
to a tensor whose first dim is the traced batch, takes that tensor's runtime size instead. At the traced batch
nothing changes; sizes that fold the batch into another dim (attention heads) are left as they are."""
from __future__ import annotations

import torch
from torch import fx

aten = torch.ops.aten
_VIEWS = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}


def follow_runtime_batch(gm: fx.GraphModule, batch: int) -> int:
    """Rewrite such targets in place; returns how many."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _VIEWS or len(node.args) < 2:
            continue
        data, sizes = node.args[0], node.args[1]
        val = data.meta.get("val") if isinstance(data, fx.Node) else None
        if not (isinstance(sizes, (list, tuple)) and sizes and type(sizes[0]) is int and sizes[0] == batch
                and isinstance(val, torch.Tensor) and val.dim() > 0 and type(val.shape[0]) is int
                and val.shape[0] == batch):
            continue
        with gm.graph.inserting_before(node):
            runtime = gm.graph.call_function(aten.sym_size.int, (data, 0))
        node.args = (data, [runtime, *sizes[1:]], *node.args[2:])
        count += 1
    if count:
        gm.recompile()
    return count

import copy

import torch
from torch import fx

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from worker.engine.admm import solve_masked
from worker.engine.layer_stats import accumulate
from worker.engine.residual_targets import ResidualTarget, bn_slope, node_value, shortcut_node


def _traced(seed=0):
    return fx.symbolic_trace(tiny_resnet(seed)).eval()


def _x(n=32, seed=0):
    return torch.randn(n, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(seed))


def test_finds_the_shortcut_of_a_blocks_last_conv_and_nothing_elsewhere():
    gm = _traced()
    node = shortcut_node(gm, "layer1.conv2", "layer1.bn2")
    assert node is not None
    x = _x(4)
    stem = torch.relu(gm.bn1(gm.conv1(x)))  # layer1's identity shortcut is the stem's output
    assert torch.allclose(node_value(gm, node.name, x), stem)
    assert shortcut_node(gm, "layer2.conv2", "layer2.bn2") is not None  # projection shortcut (1x1 conv + BN)
    assert shortcut_node(gm, "layer1.conv1", "layer1.bn1") is None
    assert shortcut_node(tiny_resnet(0), "layer1.conv2", "layer1.bn2") is None  # not a graph module


def _block_sum(model, x):
    """layer1's residual sum (before its ReLU)."""
    return node_value(model, next(n for n in model.graph.nodes if n.op == "call_function"
                                  and shortcut_node(model, "layer1.conv2", "layer1.bn2") in n.args).name, x)


def test_residual_target_repairs_the_sum_the_plain_target_leaves_broken():
    teacher = _traced()
    student = copy.deepcopy(teacher)
    with torch.no_grad():  # an earlier pruned layer: the stem (hence the shortcut) is off
        student.conv1.weight.mul_(1 + 0.3 * torch.randn(student.conv1.weight.shape, generator=torch.Generator().manual_seed(3)))
    x = _x(64)
    node = shortcut_node(student, "layer1.conv2", "layer1.bn2")
    conv, bn = student.layer1.conv2, student.layer1.bn2
    errors = {}
    for name, shift in (("plain", None), ("residual", ResidualTarget(student, teacher, node.name, bn_slope(bn, 8)))):
        st = accumulate(student, conv, teacher, teacher.layer1.conv2, x, 32, target_shift=shift)
        W = solve_masked(st, torch.ones(8, 72, dtype=torch.bool), damp=1e-8)
        fitted = copy.deepcopy(student)
        with torch.no_grad():
            fitted.layer1.conv2.weight.copy_(W.reshape(conv.weight.shape))
        errors[name] = float((_block_sum(fitted, x) - _block_sum(teacher, x)).pow(2).mean())
    assert errors["residual"] < 0.9 * errors["plain"]  # least squares on exactly the sum: must win


def test_onnx_and_pt2_imports_expose_the_same_residual_adds(tmp_path):
    from tests.tiny_models import export_onnx, export_pt2
    from worker.engine.formats import load_model
    from worker.engine.layers import execution_order
    found = {}
    for kind, export in (("pt2", export_pt2), ("onnx", export_onnx)):
        module = load_model(export(tiny_resnet(0), tmp_path / f"m.{kind}")).module
        layers = execution_order(module, _x(2))
        found[kind] = sorted(l.name for l in layers if shortcut_node(module, l.name, l.bn_name) is not None)
    assert found["pt2"] == found["onnx"] and "layer1.conv2" in found["pt2"]

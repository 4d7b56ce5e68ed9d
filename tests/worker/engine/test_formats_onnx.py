"""ONNX: the converter matches onnxruntime on real exports and a hand-built graph of every supported
kind of op; saving writes pruned tensors into the user's own graph, which onnxruntime then runs
to the same outputs as the pruned module; unsupported ops are named."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from tests.tiny_models import INPUT_SHAPE, export_onnx, tiny_resnet
from tests.worker.engine.format_helpers import SHARED, outputs, prune_by_hand
from worker.engine.errors import EngineError, UnsupportedModelError
from worker.engine.formats import load_model, save_model


def run_ort(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def assert_matches_ort(path, module, x, atol=1e-5):
    # float32 sums in another order: outputs of magnitude ~30 differ by ~1e-5 absolute, hence rtol too.
    np.testing.assert_allclose(outputs(module, x).numpy(), run_ort(path, x), rtol=1e-5, atol=atol)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return export_onnx(tiny_resnet(), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_tiny_export_converts_exactly(tiny_onnx):
    loaded = load_model(tiny_onnx)
    assert loaded.format == "onnx" and loaded.input_shape == INPUT_SHAPE
    convs = [n for n, m in loaded.module.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == ["conv1", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2", "layer2.shortcut.0"]
    assert isinstance(loaded.module.linear, nn.Linear)
    assert any("BatchNormalization" in w for w in loaded.warnings)  # torch.onnx folded BN: say so
    for batch in (1, 3):
        assert_matches_ort(tiny_onnx, loaded.module, torch.randn(batch, *INPUT_SHAPE[1:]))


def test_pruned_weights_go_back_into_the_same_graph(tiny_onnx, tmp_path):
    loaded = load_model(tiny_onnx)
    prune_by_hand(loaded.module)
    out = tmp_path / "model.onnx"
    save_model(loaded, loaded.module, out)
    before, after = onnx.load(str(tiny_onnx)), onnx.load(str(out))
    assert [(n.op_type, n.name, list(n.input)) for n in before.graph.node] == \
        [(n.op_type, n.name, list(n.input)) for n in after.graph.node]
    assert before.graph.input == after.graph.input and before.graph.output == after.graph.output
    weights = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    np.testing.assert_array_equal(weights["layer1.conv1.weight"], loaded.module.layer1.conv1.weight.detach().numpy())
    for batch in (1, 4):
        assert_matches_ort(out, loaded.module, torch.randn(batch, *INPUT_SHAPE[1:]))


def test_unfolded_batchnorm_export(tmp_path):
    """optimize=False keeps BatchNormalization (and feeds convs a computed zero bias)."""
    path = tmp_path / "bn.onnx"
    torch.onnx.export(tiny_resnet(), (torch.randn(2, *INPUT_SHAPE[1:]),), str(path), input_names=["x"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, optimize=False,
                      external_data=False)
    loaded = load_model(path)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in loaded.module.modules()) == 6 and not loaded.warnings
    x = torch.randn(2, *INPUT_SHAPE[1:])
    assert_matches_ort(path, loaded.module, x)
    prune_by_hand(loaded.module)
    with torch.no_grad():  # a bias correction on a conv whose bias the graph computes
        loaded.module.conv1.bias.add_(0.5)
    save_model(loaded, loaded.module, tmp_path / "out.onnx")
    assert_matches_ort(tmp_path / "out.onnx", loaded.module, x)


@pytest.mark.parametrize("name", ["resnet20_cifar10.onnx"])
def test_shared_models_convert_and_round_trip(name, tmp_path):
    path = SHARED / name
    if not path.exists():
        pytest.skip("shared models not present")
    loaded = load_model(path)
    assert loaded.input_shape == (1, 3, 32, 32)
    assert "layer3.2.conv2" in dict(loaded.module.named_modules())  # named from the node scopes
    x = torch.randn(4, 3, 32, 32)
    assert_matches_ort(path, loaded.module, x)
    prune_by_hand(loaded.module)
    save_model(loaded, loaded.module, tmp_path / "model.onnx")
    assert_matches_ort(tmp_path / "model.onnx", loaded.module, x)


class MobileBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project (ReLU6 = Clip, Hardswish stem)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.Hardswish())
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(16, 5))

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return torch.softmax(self.head(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)), -1)


@pytest.mark.parametrize("opset, folding, bn_modules", [(9, True, 0), (11, False, 4), (13, True, 0)])
def test_legacy_exporter_mobile_block(tmp_path, opset, folding, bn_modules):
    torch.manual_seed(0)
    model = MobileBlock().train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    model.eval()
    path = tmp_path / "mobile.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), input_names=["x"], output_names=["y"],
                      dynamo=False, opset_version=opset, do_constant_folding=folding, dynamic_axes={"x": {0: "n"}})
    loaded = load_model(path)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in loaded.module.modules()) == bn_modules
    assert sum(isinstance(m, nn.Conv2d) and m.groups == 16 for m in loaded.module.modules()) == 1
    x = torch.randn(3, 3, 32, 32)
    assert_matches_ort(path, loaded.module, x)
    prune_by_hand(loaded.module)
    save_model(loaded, loaded.module, tmp_path / "out.onnx")
    assert_matches_ort(tmp_path / "out.onnx", loaded.module, x)


def _graph_with_many_ops(path):
    rng = np.random.default_rng(0)

    def init(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    inits = [
        init("w1", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        init("w2", rng.standard_normal((4, 4, 3, 3)).astype(np.float32)),
        init("b2", rng.standard_normal(4).astype(np.float32)),
        init("scale", np.float32(0.5)), init("shift", np.float32(0.1)), init("lo", np.float32(0.0)),
        init("hi", np.float32(6.0)), init("pads", np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64)),
        init("starts", np.array([0], np.int64)), init("ends", np.array([2], np.int64)),
        init("axes", np.array([1], np.int64)), init("zero", np.array(0, np.int64)),
        init("unsq", np.array([0], np.int64)), init("minus1", np.array([-1], np.int64)),
        init("mm", rng.standard_normal((16, 5)).astype(np.float32)),
        init("gw", rng.standard_normal((5, 16)).astype(np.float32)), init("gb", rng.standard_normal(5).astype(np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], pads=[0, 1, 1, 0], name="asym_conv"),  # asymmetric padding
        n("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
        n("Mul", ["r1", "scale"], ["m1"]), n("Sub", ["m1", "shift"], ["s1"]), n("Div", ["s1", "scale"], ["d1"]),
        n("Conv", ["d1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="strided"),
        n("Sigmoid", ["c2"], ["g"]), n("Mul", ["c2", "g"], ["swish"]),
        n("MaxPool", ["swish"], ["p1"], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1]),
        n("AveragePool", ["p1"], ["p2"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        n("Pad", ["p2", "pads"], ["padded"], mode="constant"),
        n("Slice", ["padded", "starts", "ends", "axes"], ["half"]),
        n("Concat", ["half", "half"], ["cat"], axis=1),
        n("Transpose", ["cat"], ["t"], perm=[0, 1, 3, 2]), n("Identity", ["t"], ["t2"]),
        n("GlobalAveragePool", ["t2"], ["gap"]), n("Flatten", ["gap"], ["flat"], axis=1),
        n("Shape", ["flat"], ["shape"]), n("Gather", ["shape", "zero"], ["batch"]),
        n("Unsqueeze", ["batch", "unsq"], ["batch1"]), n("Concat", ["batch1", "minus1"], ["target"], axis=0),
        n("Reshape", ["flat", "target"], ["flat2"]),
        n("Concat", ["flat2", "flat2", "flat2", "flat2"], ["wide"], axis=1),  # 16 features
        n("MatMul", ["wide", "mm"], ["mmout"]),
        n("Gemm", ["wide", "gw", "gb"], ["gemm"], transB=1),
        n("Add", ["mmout", "gemm"], ["sum"]), n("Softmax", ["sum"], ["y"], axis=1),
    ]
    graph = helper.make_graph(nodes, "many_ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_hand_built_graph_of_supported_ops_matches_onnxruntime(tmp_path):
    path = _graph_with_many_ops(tmp_path / "many.onnx")
    loaded = load_model(path)
    assert loaded.input_shape == (1, 3, 8, 8)  # dynamic batch declared as 1
    x = torch.randn(3, 3, 8, 8)
    assert_matches_ort(path, loaded.module, x)
    kinds = {type(m).__name__ for m in loaded.module.modules()}
    assert {"Conv2d", "Linear"} <= kinds
    prune_by_hand(loaded.module)
    with torch.no_grad():
        for m in loaded.module.modules():
            if isinstance(m, nn.Linear):
                m.weight[:, ::2] = 0
    save_model(loaded, loaded.module, tmp_path / "out.onnx")
    assert_matches_ort(tmp_path / "out.onnx", loaded.module, x)


def assert_traces_with_dynamic_batch(module, x):
    """The kernel compiler runs torch.export on the converted module: in-graph shape arithmetic must not
    turn sizes into data (a reshape target read from a buffer or tensor is data-dependent to torch.export)."""
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
    for n in (1, 5):
        xb = torch.randn(n, *x.shape[1:])
        torch.testing.assert_close(program.module()(xb), module(xb), rtol=1e-5, atol=1e-5)


def export_dynamic_batch(model: nn.Module, example: torch.Tensor, path, dynamo: bool, **options) -> set[str]:
    """Export with a dynamic batch by either torch exporter; returns the op types in the graph."""
    torch.onnx.export(model.eval(), (example,), str(path), input_names=["x"], dynamo=dynamo, external_data=False,
                      **options,
                      **({"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamo else {"dynamic_axes": {"x": {0: "n"}}}))
    return {n.op_type for n in onnx.load(str(path)).graph.node}


class ViewHead(nn.Module):
    """`x.view(x.size(0), -1)`: the legacy exporter computes the target with Shape/Gather/Unsqueeze/Concat."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.fc(y.view(y.size(0), -1))


@pytest.mark.parametrize("dynamo", [False, True])
def test_exported_shape_arithmetic_stays_traceable(tmp_path, dynamo):
    path = tmp_path / "view.onnx"
    torch.manual_seed(0)
    export_dynamic_batch(ViewHead(), torch.randn(2, 3, 16, 16), path, dynamo)
    loaded = load_model(path)
    x = torch.randn(3, 3, 16, 16)
    assert_matches_ort(path, loaded.module, x)
    assert_traces_with_dynamic_batch(loaded.module, x)


class FlattenHead(ViewHead):
    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4), 1))


def test_static_batch_export_runs_at_any_batch(tmp_path):
    # torch.onnx.export's default fixes the batch: torch.flatten(x, 1) becomes Reshape(x, [1, 128]), which made
    # every engine pass (batches of 2 and 64) fail with "shape '[1, 128]' is invalid for input of size 256"
    path = tmp_path / "static.onnx"
    torch.manual_seed(0)
    model = FlattenHead().eval()
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), dynamo=True, external_data=False)
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1 and "Reshape" in {n.op_type for n in graph.node}
    loaded = load_model(path)
    x = torch.randn(5, 3, 16, 16)
    torch.testing.assert_close(loaded.module(x), model(x), rtol=1e-5, atol=1e-5)
    assert_matches_ort(path, loaded.module, x[:1])
    assert_traces_with_dynamic_batch(loaded.module, x)


def test_hand_built_shape_ops_stay_traceable(tmp_path):
    loaded = load_model(_graph_with_many_ops(tmp_path / "many.onnx"))
    assert_traces_with_dynamic_batch(loaded.module, torch.randn(2, 3, 8, 8))


class SegmentationNet(nn.Module):
    """Resize (bilinear up, nearest up), PReLU and LogSoftmax: what segmentation exports carry."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.act = nn.PReLU(8)
        self.classes = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        y = self.act(self.down(x))
        y = nn.functional.interpolate(y, scale_factor=2, mode="nearest") + \
            nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.log_softmax(self.classes(y), 1)


@pytest.mark.parametrize("dynamo", [False, True])
def test_segmentation_ops_match_onnxruntime(tmp_path, dynamo):
    path = tmp_path / "seg.onnx"
    torch.manual_seed(0)
    found = export_dynamic_batch(SegmentationNet(), torch.randn(2, 3, 12, 20), path, dynamo, opset_version=17)
    assert {"Resize", "PRelu", "LogSoftmax"} <= found
    loaded = load_model(path)
    x = torch.randn(3, 3, 12, 20)
    assert_matches_ort(path, loaded.module, x)
    assert_traces_with_dynamic_batch(loaded.module, x)


def test_resize_without_a_torch_twin_is_named(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="linear",
                              coordinate_transformation_mode="tf_crop_and_resize", name="odd_resize")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16, 16])], [w, scales])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "r.onnx"))
    with pytest.raises(UnsupportedModelError, match="Resize.*odd_resize.*tf_crop_and_resize"):
        load_model(tmp_path / "r.onnx")


def test_unsupported_op_is_named(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("LRN", ["c"], ["y"], size=3, name="local_norm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [w])
    path = tmp_path / "unsupported.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedModelError, match=r"LRN .*'local_norm'"):
        load_model(path)


class UNetBlock(nn.Module):
    """Encoder conv, stride-2 conv, transposed-conv upsampling (stride 2, pads, output_padding), skip concat."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)
        self.up_grouped = nn.ConvTranspose2d(16, 8, 2, stride=2, groups=2, bias=False)
        self.head = nn.Conv2d(24, 2, 3, padding=1)

    def forward(self, x):
        a = self.enc(x)
        b = self.down(a)
        return self.head(torch.cat([a, self.up(b), self.up_grouped(b)], 1))


@pytest.mark.parametrize("dynamo", [False, True])
def test_conv_transpose_matches_onnxruntime(tmp_path, dynamo):
    path = tmp_path / "unet.onnx"
    torch.manual_seed(0)
    assert "ConvTranspose" in export_dynamic_batch(UNetBlock(), torch.randn(2, 3, 12, 16), path, dynamo, opset_version=17)
    loaded = load_model(path)
    x = torch.randn(3, 3, 12, 16)
    assert_matches_ort(path, loaded.module, x)
    assert_traces_with_dynamic_batch(loaded.module, x)


class NormBlocks(nn.Module):
    """A ConvNeXt-style block (depthwise 7x7, channels-last LayerNorm, GELU MLP) and a style-transfer-style
    InstanceNorm, around a prunable 3x3 conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.ln = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.mlp(self.ln(self.dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return self.head(torch.relu(self.inorm(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("dynamo", [False, True])
def test_layer_and_instance_norm_match_onnxruntime(tmp_path, dynamo):
    path = tmp_path / "norms.onnx"
    torch.manual_seed(0)
    model = NormBlocks().eval()
    with torch.no_grad():
        for p in (model.ln.weight, model.ln.bias, model.inorm.weight, model.inorm.bias):
            p.normal_()  # not the identity, so a wrong axis or affine shows
    found = export_dynamic_batch(model, torch.randn(2, 3, 12, 16), path, dynamo, opset_version=17)
    assert "LayerNormalization" in found and ("InstanceNormalization" in found or dynamo)
    loaded = load_model(path)
    x = torch.randn(3, 3, 12, 16)
    assert_matches_ort(path, loaded.module, x)
    assert_traces_with_dynamic_batch(loaded.module, x)


@pytest.mark.parametrize("attrs, message", [({"pads": [1, 1, 0, 0]}, "asymmetric pads"),
                                            ({"auto_pad": "SAME_UPPER"}, "auto_pad=SAME_UPPER"),
                                            ({"output_shape": [16, 16]}, "output_shape")])
def test_conv_transpose_without_a_torch_twin_is_named(tmp_path, attrs, message):
    w = numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w")
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], name="up", **attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16, 16])], [w])
    path = tmp_path / "ct.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedModelError, match=f"ConvTranspose .*'up'.*{message}"):
        load_model(path)


def test_corrupt_onnx_is_refused(tiny_onnx, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(tiny_onnx.read_bytes()[: tiny_onnx.stat().st_size // 2])
    with pytest.raises(EngineError):
        load_model(broken)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    with pytest.raises(EngineError):
        load_model(garbage)


def test_weights_shared_by_two_convs_must_be_pruned_alike(tmp_path):
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((3, 3, 3, 3)).astype(np.float32), "shared")
    nodes = [helper.make_node("Conv", ["x", "shared"], ["a"], pads=[1, 1, 1, 1], name="first"),
             helper.make_node("Conv", ["a", "shared"], ["y"], pads=[1, 1, 1, 1], name="second")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])], [w])
    path = tmp_path / "shared.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    loaded = load_model(path)
    convs = [m for m in loaded.module.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2
    with torch.no_grad():
        for conv in convs:  # the same pruning on both: fine
            conv.weight[:, :, 0, 0] = 0
    save_model(loaded, loaded.module, tmp_path / "same.onnx")
    assert_matches_ort(tmp_path / "same.onnx", loaded.module, torch.randn(1, 3, 8, 8))
    with torch.no_grad():
        convs[1].weight[:, :, 2, 2] = 0
    with pytest.raises(UnsupportedModelError, match="'shared' is shared"):
        save_model(loaded, loaded.module, tmp_path / "different.onnx")

"""load(): the returned module, its dense twin, and the graph op's guard rails."""
import pytest
import torch
from torch import nn

import kernels
from kernels.graph_ops import CompiledGraphError, DenseLayer, compiled_conv_nodes, install_compiled_layers
from kernels.package import GRAPH
from tests.kernels.compiled_models import assert_close, example, pattern_tiny_resnet, session_cache


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    model = pattern_tiny_resnet()
    kernels.compile_model(model, example(), root / "pkg", tune=False, cache_dir=session_cache(tmp_path_factory))
    return model, root / "pkg"


def test_loaded_module_runs_any_batch_and_layout(built):
    model, package_dir = built
    compiled = kernels.load(package_dir)
    assert isinstance(compiled, nn.Module)
    with torch.no_grad():
        for batch in (1, 2, 5):
            x = example(batch, seed=batch)
            assert_close(compiled(x), model(x))
        x = example(2).contiguous(memory_format=torch.channels_last)
        assert_close(compiled(x), model(x))



@pytest.mark.parametrize("bad, message", [
    (lambda x: x[:, :2], r"input 0: expected a tensor of shape \(N, 3, 16, 16\), got \(2, 2, 16, 16\)"),
    (lambda x: x[0], r"got \(3, 16, 16\)"),
    (lambda x: (x, x), r"takes 1 input tensor\(s\), got 2"),
])
def test_wrong_inputs_are_named_without_torch_export_guards(built, bad, message):
    # the package drops torch.export's per-call guards (~0.1 ms a call) and checks shapes itself
    _, package_dir = built
    compiled = kernels.load(package_dir)
    assert compiled.input_shapes == [(None, *example().shape[1:])]
    inputs = bad(example(2))
    with pytest.raises(ValueError, match=message):
        compiled(*inputs) if isinstance(inputs, tuple) else compiled(inputs)

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_come_back_in_their_dtype(built, dtype):
    """A half-precision model's package (the kernels compute in float32) takes and returns its dtype."""
    _, package_dir = built
    compiled, x = kernels.load(package_dir), example(2).to(dtype)
    with torch.no_grad():
        out, reference = compiled(x), compiled(x.float())
    assert out.dtype == dtype and torch.equal(out, reference.to(dtype))


def test_dense_twin_matches_compiled(built):
    _, package_dir = built
    x = example(2)
    dense = kernels.load(package_dir, dense=True)
    with torch.no_grad():
        assert_close(dense(x), kernels.load(package_dir)(x), rel=1e-5)
    # The 1x1 shortcut runs compiled as a centre-tap 3x3; its dense twin is the 1x1 conv again, not 9x the work.
    kernel_sizes = sorted({tuple(m.weight.shape[-2:]) for m in dense.modules() if isinstance(m, DenseLayer)})
    assert kernel_sizes == [(1, 1), (3, 3)]


def test_graph_without_its_kernels_refuses_to_run(built):
    _, package_dir = built
    graph = torch.export.load(str(package_dir / GRAPH)).module()
    assert compiled_conv_nodes(graph)
    with pytest.raises(CompiledGraphError, match="kernels.load"):
        graph(example())
    with pytest.raises(CompiledGraphError, match="does not provide"):
        install_compiled_layers(graph, {})


def test_threads_follow_torch(built):
    model, package_dir = built
    compiled = kernels.load(package_dir)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x = example(2)
        with torch.no_grad():
            assert_close(compiled(x), model(x))
    finally:
        torch.set_num_threads(previous)


class FixedBatch(nn.Module):
    """Reshapes with a literal batch of 1: exportable only at that batch size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).reshape(1, 4 * 16 * 16)


def test_fixed_batch_model_is_packaged_at_its_batch(tmp_path, tmp_path_factory):
    model = FixedBatch().eval()
    manifest = kernels.compile_model(model, example(), tmp_path / "pkg", tune=False,
                                     cache_dir=session_cache(tmp_path_factory))
    assert manifest["dynamic_batch"] is False
    with torch.no_grad():
        assert_close(kernels.load(tmp_path / "pkg")(example()), model(example()))

"""Graph level: BN folding, epilogue fusion, fallbacks, and whole tiny models compiled end to end."""
import pytest
import torch
from torch import nn

import kernels
from kernels.fold import BN_TARGETS
from kernels.graph import find_conv_sites, prepare_graph
from tests.kernels.compiled_models import assert_close, bottleneck, example, mixed_net, pattern_tiny_resnet, \
    session_cache, small_vgg
from tests.tiny_models import tiny_resnet


def _sites(model, batch=1):
    gm, _, _ = prepare_graph(model, example(batch))
    return gm, {site.layer: site for site in find_conv_sites(gm)}


def test_fold_batchnorm_keeps_outputs_and_removes_every_bn():
    model = tiny_resnet()
    gm, dynamic, folded = prepare_graph(model, example())
    assert dynamic
    assert set(folded) == {"conv1", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2",
                           "layer2.shortcut.0"}
    assert not [n for n in gm.graph.nodes if n.op == "call_function" and n.target in BN_TARGETS]
    x = example(3)
    with torch.no_grad():
        assert_close(gm(x), model(x), rel=1e-5)


class ConvReadTwice(nn.Module):
    """The conv output feeds BN and is also returned: folding would change the returned tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4).eval()
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y), y


def test_bn_is_not_folded_when_the_conv_output_has_another_reader():
    model = ConvReadTwice().eval()
    gm, _, folded = prepare_graph(model, example())
    assert folded == []
    x = example(2)
    with torch.no_grad():
        for got, want in zip(gm(x), model(x)):
            assert_close(got, want, rel=1e-6)


def test_relu_and_residual_epilogues_are_found():
    _, sites = _sites(tiny_resnet())
    assert sites["conv1"].relu and sites["conv1"].residual is None
    assert sites["layer1.conv1"].relu and sites["layer1.conv1"].residual is None
    assert sites["layer1.conv2"].relu and sites["layer1.conv2"].residual is not None
    assert sites["layer2.conv2"].residual is not None  # the 1x1 shortcut conv's output
    shortcut = sites["layer2.shortcut.0"]  # compiled as a centre-tap 3x3, without an epilogue of its own
    assert not shortcut.unsupported and shortcut.pointwise and shortcut.compiled_padding == (1, 1)
    assert not shortcut.relu and shortcut.residual is None
    assert torch.equal(shortcut.compiled_weight[:, :, 1, 1], shortcut.weight[:, :, 0, 0])
    assert int((shortcut.compiled_weight != 0).sum()) == int((shortcut.weight != 0).sum())


def test_a_bottleneck_fuses_its_shortcut_add_into_the_last_1x1_and_a_sum_of_two_convs_once():
    _, sites = _sites(bottleneck())
    for last in ("block1.6", "block2.6"):  # the 1x1 before the shortcut add takes the add and the ReLU
        assert sites[last].pointwise and sites[last].residual is not None and sites[last].relu
    assert sites["project.0"].residual is None and not sites["project.0"].relu
    assert sites["block1.0"].relu and sites["block1.0"].residual is None
    assert sum(sites[name].residual is not None for name in ("left", "right")) == 1  # one add, one owner


class SumReused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        s = self.conv(x) + x
        return torch.relu(s), s


def test_relu_not_fused_when_the_sum_has_another_reader():
    _, sites = _sites(SumReused().eval())
    assert sites["conv"].residual is not None
    assert not sites["conv"].relu


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.dilated = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.big = nn.Conv2d(4, 4, 9, padding=4)
        self.stride3 = nn.Conv2d(4, 4, 3, stride=3, padding=1)

    def forward(self, x):
        x = torch.cat([x, x[:, :1]], 1)
        return self.stride3(self.big(self.dilated(self.grouped(x))))


def test_unsupported_convs_carry_a_reason():
    _, sites = _sites(Odd().eval())
    assert "groups=2" in sites["grouped"].unsupported
    assert "dilation" in sites["dilated"].unsupported
    assert "9x9" in sites["big"].unsupported
    assert "stride" in sites["stride3"].unsupported


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return session_cache(tmp_path_factory)


@pytest.mark.parametrize("factory", [pattern_tiny_resnet, small_vgg, bottleneck],
                         ids=["tiny_resnet", "small_vgg", "bottleneck"])
def test_whole_model_compiled_equals_dense(factory, tmp_path, cache):
    model = factory()
    manifest = kernels.compile_model(model, example(), tmp_path / "pkg", tune=False, cache_dir=cache)
    assert any(layer["kernel"] == "sparse" for layer in manifest["layers"])
    for layer in manifest["layers"]:
        if layer["shape"][-2:] == [1, 1] and "spec" in layer:  # dense cost of a 1x1, not of its 3x3 embedding
            assert layer["flop_ratio_limit"] == pytest.approx(1 / (9 * layer["format"]["density"]), rel=1e-2)
            # untuned, a 1x1 runs its first candidate: the pointwise tile wherever the ISA has one
            assert layer["kernel"] == "sparse" and layer["tile"]["pixels"] == (manifest["isa"] != "portable")
    compiled = kernels.load(tmp_path / "pkg")
    for batch in (1, 3):
        x = example(batch, seed=batch)
        with torch.no_grad():
            assert_close(compiled(x), model(x))


def test_an_exported_program_compiles_too(tmp_path, cache):
    model = pattern_tiny_resnet()
    program = torch.export.export(model, (example(2),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    manifest = kernels.compile_model(program, example(), tmp_path / "pkg", tune=False, cache_dir=cache)
    assert manifest["dynamic_batch"]
    x = example(3)
    with torch.no_grad():
        assert_close(kernels.load(tmp_path / "pkg")(x), model(x))


def test_non_pattern_and_grouped_layers_fall_back_with_reasons(tmp_path, cache):
    model = mixed_net()
    manifest = kernels.compile_model(model, example(), tmp_path / "pkg", tune=False, cache_dir=cache)
    layers = {layer["name"]: layer for layer in manifest["layers"]}
    assert layers["pattern"]["kernel"] == "sparse"
    assert layers["unstructured"]["kernel"] == "dense"
    assert "not pattern-sparse" in layers["unstructured"]["reason"]
    assert "distinct non-zero patterns" in layers["unstructured"]["reason"]
    assert layers["grouped"]["kernel"] == "dense" and "groups=2" in layers["grouped"]["reason"]
    x = example(2)
    with torch.no_grad():
        assert_close(kernels.load(tmp_path / "pkg")(x), model(x))


class StemNet(nn.Module):
    """A ResNet-style stem (7x7 stride-2 conv, BN, ReLU, max-pool), then a 5x5 and a 3x3 conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(12),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.mid = nn.Conv2d(12, 8, 5, padding=2)
        self.last = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.last(torch.relu(self.mid(self.stem(x))))


def test_large_kernels_compile_dense_and_equal_torch(tmp_path, cache):
    torch.manual_seed(3)
    model = StemNet()
    with torch.no_grad():
        model.stem[1].running_mean.normal_()
        model.stem[1].running_var.uniform_(0.5, 2)
    model.eval()
    manifest = kernels.compile_model(model, example(), tmp_path / "pkg", tune=False, cache_dir=cache)
    layers = {layer["name"]: layer for layer in manifest["layers"]}
    assert layers["stem.0"]["kernel"] == "sparse" and layers["stem.0"]["relu"]
    assert layers["stem.0"]["spec"]["kernel_size"] == 7 and layers["mid"]["spec"]["kernel_size"] == 5
    assert layers["stem.0"]["format"]["density"] == 1.0
    compiled = kernels.load(tmp_path / "pkg")
    for batch in (1, 3):
        x = example(batch, seed=batch)
        with torch.no_grad():
            assert_close(compiled(x), model(x))
    dense = kernels.load(tmp_path / "pkg", dense=True)  # the package's dense baseline rebuilds 7x7 weights
    with torch.no_grad():
        assert_close(dense(example(2)), model(example(2)))

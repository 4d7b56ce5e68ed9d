"""torch.export .pt2: loads into real layer modules with the same names and outputs; saves back with
the same dynamic batch, loadable by stock torch.export.load, equal to the pruned module."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.tiny_models import INPUT_SHAPE, export_pt2, tiny_resnet
from tests.worker.engine.engine_models import BatchFoldedAttention, ChannelShuffle, seeded
from tests.worker.engine.format_helpers import SHARED, layer_types, outputs, prune_by_hand
from worker.engine.config import CompressionConfig
from worker.engine.errors import InvalidConfigError
from worker.engine.formats import load_model, save_model
from worker.engine.validation import validate_model


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory):
    return export_pt2(tiny_resnet(), tmp_path_factory.mktemp("pt2") / "tiny.pt2")


def test_load_gives_real_layers_with_original_names(tiny_pt2):
    reference = tiny_resnet()
    loaded = load_model(tiny_pt2)
    assert loaded.format == "pt2" and loaded.input_shape == INPUT_SHAPE
    types = layer_types(loaded.module)
    assert types == layer_types(reference)  # same names, same classes, in the same order
    assert list(types)[:3] == ["conv1", "bn1", "layer1.conv1"]
    assert set(dict(loaded.module.named_parameters())) == set(dict(reference.named_parameters()))
    assert not any(n.op == "call_function" and "conv" in str(n.target) for n in loaded.module.graph.nodes)
    x = torch.randn(3, *INPUT_SHAPE[1:])
    torch.testing.assert_close(outputs(loaded.module, x), outputs(reference, x), rtol=0, atol=1e-6)


def test_hooks_see_every_conv(tiny_pt2):
    loaded = load_model(tiny_pt2)
    seen = []
    for name, m in loaded.module.named_modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, i, o, name=name: seen.append(name))
    loaded.module(torch.randn(1, *INPUT_SHAPE[1:]))
    assert seen == ["conv1", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2", "layer2.shortcut.0"]


def test_pruned_save_round_trip_keeps_dynamic_batch(tiny_pt2, tmp_path):
    loaded = load_model(tiny_pt2)
    module = loaded.module
    module.train()  # recovery recalibrates BN in train mode: must be allowed
    module(torch.randn(8, *INPUT_SHAPE[1:]))
    module.eval()
    prune_by_hand(module)
    out = tmp_path / "model.pt2"
    save_model(loaded, module, out)
    program = torch.export.load(str(out))
    assert set(program.state_dict) >= {n for n, _ in module.named_parameters()}
    assert torch.count_nonzero(program.state_dict["layer1.conv1.weight"]) == \
        torch.count_nonzero(module.layer1.conv1.weight)
    reloaded = program.module()
    for batch in (1, 5):
        x = torch.randn(batch, *INPUT_SHAPE[1:])
        torch.testing.assert_close(reloaded(x), outputs(module, x), rtol=0, atol=1e-6)
    assert [str(r) for r in program.range_constraints.values()] == ["VR[1, 1024]"]
    source = torch.export.load(str(tiny_pt2))
    assert program.graph_signature.user_inputs == source.graph_signature.user_inputs
    assert program.module_call_graph[0].signature.forward_arg_names == \
        source.module_call_graph[0].signature.forward_arg_names


def test_decomposed_inference_program_loads(tmp_path):
    """Inference IR uses convolution / _native_batch_norm_legit_no_training / addmm-free linear variants."""
    model = tiny_resnet()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, *INPUT_SHAPE[1:]),), dynamic_shapes=({0: batch},))
    program = program.run_decompositions()  # core ATen: convolution, addmm(permute), no-training BN
    path = tmp_path / "decomposed.pt2"
    torch.export.save(program, str(path))
    loaded = load_model(path)
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"aten.convolution.default", "aten._native_batch_norm_legit_no_training.default", "aten.addmm.default"} <= ops
    assert layer_types(loaded.module) == layer_types(model)
    x = torch.randn(2, *INPUT_SHAPE[1:])
    torch.testing.assert_close(outputs(loaded.module, x), outputs(model, x), rtol=0, atol=1e-5)
    prune_by_hand(loaded.module)
    save_model(loaded, loaded.module, tmp_path / "out.pt2")
    torch.testing.assert_close(torch.export.load(str(tmp_path / "out.pt2")).module()(x),
                               outputs(loaded.module, x), rtol=0, atol=1e-6)


@pytest.mark.skipif(not (SHARED / "resnet20_cifar10.pt2").exists(), reason="shared models not present")
def test_shared_resnet20_round_trip(tmp_path):
    path = SHARED / "resnet20_cifar10.pt2"
    original = torch.export.load(str(path)).module()
    loaded = load_model(path)
    assert loaded.input_shape == (1, 3, 32, 32)
    convs = [n for n, m in loaded.module.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and convs[0] == "conv1" and "layer3.2.conv2" in convs
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(outputs(loaded.module, x), original(x), rtol=0, atol=1e-6)
    prune_by_hand(loaded.module)
    save_model(loaded, loaded.module, tmp_path / "model.pt2")
    torch.testing.assert_close(torch.export.load(str(tmp_path / "model.pt2")).module()(x),
                               outputs(loaded.module, x), rtol=0, atol=1e-6)


def test_dynamic_height_and_width_survive(tmp_path):
    model = tiny_resnet()
    dims = {0: torch.export.Dim("b", min=1, max=64), 2: torch.export.Dim("h", min=8, max=128),
            3: torch.export.Dim("w", min=8, max=128)}
    program = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=(dims,))
    torch.export.save(program, str(tmp_path / "hw.pt2"))
    loaded = load_model(tmp_path / "hw.pt2")
    assert loaded.input_shape is None  # the model declares no fixed H, W: the job config must give one
    save_model(loaded, loaded.module, tmp_path / "out.pt2", input_shape=(1, 3, 24, 24))
    saved = torch.export.load(str(tmp_path / "out.pt2"))
    assert sorted(map(str, saved.range_constraints.values())) == sorted(map(str, program.range_constraints.values()))
    x = torch.randn(3, 3, 40, 36)
    torch.testing.assert_close(saved.module()(x), outputs(model, x), rtol=0, atol=1e-5)


def test_fixed_batch_program_runs_batches(tmp_path):
    # torch.export.export(model, (x,)) without dynamic_shapes bakes the batch into view targets: the engine, which
    # runs batches of synthetic inputs, failed with "shape '[1, 2, 4, 16, 16]' is invalid for input of size 4096"
    model = seeded(ChannelShuffle).eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, *INPUT_SHAPE[1:]),)), str(tmp_path / "fixed.pt2"))
    loaded = load_model(tmp_path / "fixed.pt2")
    assert loaded.input_shape == (1, *INPUT_SHAPE[1:])
    x = torch.randn(5, *INPUT_SHAPE[1:])
    torch.testing.assert_close(outputs(loaded.module, x), model(x), rtol=0, atol=1e-5)
    prune_by_hand(loaded.module)
    save_model(loaded, loaded.module, tmp_path / "out.pt2")
    saved = torch.export.load(str(tmp_path / "out.pt2"))
    assert not saved.range_constraints  # saved as uploaded: batch 1
    torch.testing.assert_close(saved.module()(x[:1]), outputs(loaded.module, x[:1]), rtol=0, atol=1e-6)


def test_fixed_batch_that_cannot_follow_another_is_explained(tmp_path):
    model = seeded(BatchFoldedAttention).eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, *INPUT_SHAPE[1:]),)), str(tmp_path / "attn.pt2"))
    loaded = load_model(tmp_path / "attn.pt2")
    with pytest.raises(InvalidConfigError, match=r"fixed batch size of 1 .* Re-export it with a dynamic batch"):
        validate_model(loaded, loaded.input_shape, CompressionConfig())

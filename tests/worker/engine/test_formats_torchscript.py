"""TorchScript: loads through torch's TorchScript -> export converter into real layer modules; saves
by copying pruned tensors into the ScriptModule, loadable by stock torch.jit.load."""
from __future__ import annotations

import pytest
import torch

from tests.tiny_models import INPUT_SHAPE, export_torchscript, tiny_resnet
from tests.worker.engine.engine_models import ChannelShuffle, seeded
from tests.worker.engine.format_helpers import layer_types, outputs, prune_by_hand
from worker.engine.errors import EngineError, InvalidConfigError
from worker.engine.formats import load_model, save_model


@pytest.fixture(scope="module")
def tiny_ts(tmp_path_factory):
    return export_torchscript(tiny_resnet(), tmp_path_factory.mktemp("ts") / "tiny.pt")


def test_load_needs_an_input_shape(tiny_ts):
    with pytest.raises(InvalidConfigError, match="--input-shape"):
        load_model(tiny_ts)


def test_load_gives_real_layers_in_execution_order(tiny_ts):
    reference = tiny_resnet()
    loaded = load_model(tiny_ts, input_shape=INPUT_SHAPE)
    assert loaded.format == "torchscript" and loaded.input_shape == INPUT_SHAPE
    assert layer_types(loaded.module) == layer_types(reference)
    for batch in (1, 3):  # the batch stays dynamic
        x = torch.randn(batch, *INPUT_SHAPE[1:])
        torch.testing.assert_close(outputs(loaded.module, x), outputs(reference, x), rtol=0, atol=1e-6)


def test_pruned_save_round_trip(tiny_ts, tmp_path):
    loaded = load_model(tiny_ts, input_shape=INPUT_SHAPE)
    prune_by_hand(loaded.module)
    out = tmp_path / "model.pt"
    save_model(loaded, loaded.module, out)
    script = torch.jit.load(str(out))
    assert torch.equal(script.state_dict()["layer2.conv1.weight"], loaded.module.layer2.conv1.weight)
    for batch in (1, 4):
        x = torch.randn(batch, *INPUT_SHAPE[1:])
        torch.testing.assert_close(script(x), outputs(loaded.module, x), rtol=0, atol=1e-6)


def test_corrupt_torchscript_is_refused(tiny_ts, tmp_path):
    broken = tmp_path / "broken.pt"
    data = bytearray(tiny_ts.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = bytes(64)
    broken.write_bytes(bytes(data))
    with pytest.raises(EngineError):
        load_model(broken, input_shape=INPUT_SHAPE)


def test_traced_shuffle_runs_batches_and_saves(tmp_path):
    # torch.jit.trace at batch 1 bakes the batch into the shuffle's view, and the conversion lifts the traced
    # `c // 2` into a constant the script's state_dict does not hold: saving refused it as a "pruned tensor"
    model = seeded(ChannelShuffle).eval()
    torch.jit.save(torch.jit.trace(model, torch.randn(*INPUT_SHAPE)), str(tmp_path / "shuffle.pt"))
    loaded = load_model(tmp_path / "shuffle.pt", input_shape=INPUT_SHAPE)
    x = torch.randn(4, *INPUT_SHAPE[1:])
    torch.testing.assert_close(outputs(loaded.module, x), model(x), rtol=0, atol=1e-5)
    prune_by_hand(loaded.module)
    save_model(loaded, loaded.module, tmp_path / "out.pt")
    torch.testing.assert_close(torch.jit.load(str(tmp_path / "out.pt"))(x[:1]), outputs(loaded.module, x[:1]),
                               rtol=0, atol=1e-6)

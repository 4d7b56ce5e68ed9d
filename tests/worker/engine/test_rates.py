import pytest
import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from worker.engine.errors import InvalidConfigError
from worker.engine.layers import CONV3X3, execution_order
from worker.engine.patterns import candidate_patterns, pattern_masks
from worker.engine.config import CompressionConfig
from worker.engine.rates import MAX_RATE, allocate_rates, channel_grams, connectivity_rates, drop_cheapest, kernel_costs


def test_target_is_met_and_cheap_layers_give_up_more():
    costs = {"robust": torch.full((8, 8), 0.001), "fragile": torch.full((8, 8), 0.1)}
    rates = allocate_rates(costs, 4, 3.0)  # 2.25 from patterns alone, 3.0 needs 25% of kernels removed overall
    total = 9 * 128
    kept = sum(4 * 64 * (1 - r) for r in rates.values())
    assert total / kept == pytest.approx(3.0, rel=0.02)
    assert rates["robust"] > rates["fragile"]
    assert all(0 <= r <= MAX_RATE for r in rates.values())


def test_pattern_ratio_alone_needs_no_connectivity():
    costs = {"a": torch.rand(4, 4)}
    assert allocate_rates(costs, 4, 2.0) == {"a": 0.0}


def test_unreachable_and_invalid_targets_are_rejected():
    costs = {"a": torch.rand(4, 4)}
    with pytest.raises(InvalidConfigError, match="out of reach"):
        allocate_rates(costs, 4, 100.0)
    for bad in (0, -1.0, None):
        with pytest.raises(InvalidConfigError):
            allocate_rates(costs, 4, bad)


def test_kernel_costs_are_fractions_of_layer_energy():
    model = tiny_resnet()
    x = torch.randn(16, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(0))
    layers = [l for l in execution_order(model, x[:2]) if l.kind == CONV3X3]
    grams = channel_grams(model, layers, x)
    masks = pattern_masks(candidate_patterns(9))  # one full pattern: a kernel's cost is its own energy share
    for layer in layers:
        w = layer.module.weight.detach()
        cost = kernel_costs(w, grams[layer.name], masks, torch.ones(w.shape[0]))
        assert cost.shape == w.shape[:2]
        assert (cost >= -1e-6).all()
        assert float(cost.sum()) == pytest.approx(1.0, rel=1e-4)  # block-diagonal energy split over kernels


def test_drop_cheapest_removes_that_many_units_cheapest_per_unit_first():
    costs = {"robust": torch.full((8, 8), 0.001), "fragile": torch.full((8, 8), 0.1)}
    rates = drop_cheapest(costs, 64)  # half of all kernels
    assert rates["robust"] == int(MAX_RATE * 64) / 64  # the cheap layer gives up all it may
    assert sum(r * 64 for r in rates.values()) == pytest.approx(64)
    assert drop_cheapest(costs, 0) == {"robust": 0.0, "fragile": 0.0}
    # per unit: a fragile kernel worth 1000 units is cheaper per unit than a robust one worth 1
    rates = drop_cheapest(costs, 1000, unit={"robust": 1.0, "fragile": 1000.0})
    assert rates == {"robust": 0.0, "fragile": 1 / 64}


@pytest.mark.parametrize("allocation", ["flops", "weights", "uniform"])
def test_connectivity_is_the_fraction_removed(allocation):
    model = tiny_resnet()
    x = torch.randn(16, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(0))
    layers = execution_order(model, x[:2])
    three = [l for l in layers if l.kind == CONV3X3]
    config = CompressionConfig(connectivity=0.5, connectivity_allocation=allocation)
    rates = connectivity_rates(model, three, layers, x, pattern_masks(candidate_patterns(4)[:8]), config)
    kernels = {l.name: l.module.weight.shape[0] * l.module.weight.shape[1] for l in three}
    unit = {l.name: l.positions if allocation == "flops" else 1 for l in three}
    removed = sum(rates[n] * k * unit[n] for n, k in kernels.items())
    assert removed == pytest.approx(0.5 * sum(k * unit[n] for n, k in kernels.items()), abs=max(unit.values()))
    if allocation == "uniform":
        assert set(rates.values()) == {0.5}
    else:
        assert len(set(rates.values())) > 1

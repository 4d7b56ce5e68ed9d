import json
import math

import pytest
import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.engine_models import Depthwise, DepthwiseOnly, NoBatchNorm, NoConv3x3, seeded
from worker.engine.compress import (HOLDOUT_CLASS_WEIGHT, HOLDOUT_STEP_FRACTION, PRIOR_FIDELITY_WARNING, compress_module,
                                    depthwise_connectivity_note)
from worker.engine.config import (AFTER_BLOCKS_DISTILL_LR, AUTO_RECOVERY_STEPS, DISTILL_LR, CompressionConfig,
                                  effective_distill_lr, effective_recovery_steps)
from worker.engine.errors import InvalidConfigError, UnsupportedModelError
from worker.engine.patterns import pattern_masks
from worker.progress import JobCancelled, RecordingProgress

FAST = dict(synthetic_samples=16, synthetic_steps=4, fidelity_samples=8, recovery_steps=2,
            admm_iterations=5, extra={"inversion": {"batch": 8}})


def _run(tmp_path, model=None, **overrides):
    cfg = CompressionConfig(**{**FAST, **overrides})
    progress = RecordingProgress()
    return compress_module(model or tiny_resnet(), INPUT_SHAPE, cfg, progress, cache_dir=tmp_path), progress


def _check_structure(result, entries=4):
    lib = result.report["pattern_library"]
    allowed = pattern_masks([tuple(p) for p in lib]) > 0
    params = dict(result.module.named_parameters())
    for layer in result.report["layers"]:
        if not layer["pruned"] or layer["kind"] != "conv3x3":
            continue
        w = params[layer["name"] + ".weight"].detach().reshape(-1, 9)
        nz = w != 0
        assert (nz.sum(1) <= entries).all()
        fits = (~nz[:, None, :] | allowed[None]).all(-1).any(-1)
        assert fits.all(), layer["name"]
        empty = int((nz.sum(1) == 0).sum())
        assert empty >= round(layer["connectivity"] * w.shape[0]) and layer["connectivity"] == pytest.approx(
            layer["target_connectivity"], abs=1.0 / w.shape[0])
        mask = result.masks[layer["name"] + ".weight"].reshape(-1, 9)
        assert (nz <= mask).all()


@pytest.mark.parametrize("connectivity", [0.0, 0.5])
def test_structure_is_exact_and_reported(tmp_path, connectivity):
    result, progress = _run(tmp_path, connectivity=connectivity)
    _check_structure(result)
    rep = result.report
    assert len(rep["pattern_library"]) == 8 and all(4 in p and len(p) == 4 for p in rep["pattern_library"])
    names = [l["name"] for l in rep["layers"]]
    assert names[0] == "conv1" and not rep["layers"][0]["pruned"]  # the stem stays dense by default
    conv3 = [l for l in rep["layers"] if l["kind"] == "conv3x3"]
    assert conv3 and all(l["pruned"] for l in conv3)
    # default allocation "flops": `connectivity` of the pattern-pruned layers' FLOPs go, spread by sensitivity
    kept_flops = sum(l["flops_after"] for l in conv3) / sum(l["flops_before"] for l in conv3)
    assert kept_flops == pytest.approx(4 / 9 * (1 - connectivity), abs=0.01)
    assert all(l["flops_after"] < l["flops_before"] for l in conv3)
    assert rep["compression_ratio"] > (2.0 if connectivity == 0 else 3.0)
    assert set(rep["seconds"]) == {"synthesize", "prune", "recover", "fidelity"}
    fid = result.fidelity
    assert 0 <= fid["top1_agreement"] <= 1 and fid["mean_kl"] >= 0 and fid["samples"] == 8
    assert 0 < fid["teacher_confidence"] <= 1
    # held-out inputs are synthesised to be classified confidently, like real data; training inputs are not
    assert rep["fidelity_inputs"]["class_weight"] == HOLDOUT_CLASS_WEIGHT > rep["synthetic"]["class_weight"]
    assert rep["fidelity_inputs"]["seed"] != rep["synthetic"]["seed"]
    assert rep["fidelity_inputs"]["steps"] == math.ceil(FAST["synthetic_steps"] * HOLDOUT_STEP_FRACTION) < FAST["synthetic_steps"]
    assert {l["name"] for l in fid["layers"]} == {l["name"] for l in conv3}
    assert {e[1] for e in progress.events} >= {"synthesize", "prune", "recover", "fidelity"}
    json.dumps(rep, allow_nan=False)  # the report section must be strict JSON
    json.dumps(result.fidelity, allow_nan=False)
    state = result.module.state_dict()
    assert set(state) == set(tiny_resnet().state_dict())


def test_same_seed_same_result(tmp_path):
    a, _ = _run(tmp_path / "a")
    b, _ = _run(tmp_path / "b")
    for (k, va), vb in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-6), k


def test_target_compression_allocates_rates(tmp_path):
    result, _ = _run(tmp_path, target_compression=3.5)
    _check_structure(result)
    assert result.report["compression_ratio"] == pytest.approx(3.5, rel=0.1)


def test_first_conv_and_linear_options(tmp_path):
    result, _ = _run(tmp_path, prune_first_conv=True, linear_sparsity="2:4")
    layers = {l["name"]: l for l in result.report["layers"]}
    assert layers["conv1"]["pruned"] and layers["conv1"]["kind"] == "first_conv"
    w = result.module.linear.weight.detach().reshape(10, -1, 4)
    assert ((w != 0).sum(-1) <= 2).all()
    assert layers["layer2.shortcut.0"]["pruned"] and layers["layer2.shortcut.0"]["kind"] == "conv1x1"
    result, _ = _run(tmp_path, linear_sparsity="unstructured", linear_rate=0.75)
    w = result.module.linear.weight.detach()
    assert int((w == 0).sum()) == round(0.75 * w.numel())


def test_no_batchnorm_falls_back_to_prior_inversion(tmp_path):
    result, progress = _run(tmp_path, model=seeded(NoBatchNorm))
    assert result.report["synthetic"]["mode"] == "prior-inversion" and "fallback" in result.report["synthetic"]
    assert any("no BatchNorm" in e[4] for e in progress.events)
    assert result.fidelity["warning"] == PRIOR_FIDELITY_WARNING  # agreement on such inputs over-reads: not a gate
    _check_structure(result)


@pytest.mark.parametrize("overrides, match", [
    ({"connectivity": 1.0}, "connectivity"), ({"connectivity": -0.2}, "connectivity"),
    ({"connectivity": float("nan")}, "connectivity"), ({"entries": 0}, "entries"), ({"entries": 12}, "entries"),
    ({"library_size": 0}, "library_size"), ({"linear_rate": 1.5}, "linear_rate"),
    ({"target_compression": 0.5}, "target_compression"), ({"target_compression": float("inf")}, "target_compression"),
    ({"target_compression": 500.0}, "out of reach"), ({"synthetic": "imagenet"}, "synthetic"),
    ({"synthetic_samples": 0}, "synthetic_samples"), ({"synthetic_samples": 10**9}, "synthetic_samples"),
    ({"linear_sparsity": "1:8"}, "linear_sparsity"), ({"device": "tpu"}, "device"),
    ({"connectivity_allocation": "random"}, "connectivity_allocation must be one of flops, weights, uniform"),
    ({"distill_lr": 0.0}, "distill_lr"), ({"distill_lr": -1e-3}, "distill_lr"), ({"distill_lr": 5.0}, "distill_lr"),
    ({"distill_lr": float("nan")}, "distill_lr"), ({"distill_lr": "1e-3"}, "distill_lr"),
])
def test_bad_options_are_named(tmp_path, overrides, match):
    with pytest.raises(InvalidConfigError, match=match):
        _run(tmp_path, **overrides)


def test_cuda_without_a_device_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(InvalidConfigError, match="cuda"):
        _run(tmp_path, device="cuda")


def test_bad_models_and_shapes(tmp_path):
    with pytest.raises(UnsupportedModelError, match="3x3"):
        _run(tmp_path, model=seeded(NoConv3x3))
    bad = tiny_resnet()
    with torch.no_grad():
        bad.layer1.conv2.weight[0, 0, 0, 0] = math.nan
    with pytest.raises(UnsupportedModelError, match="layer1.conv2.weight"):
        _run(tmp_path, model=bad)
    cfg = CompressionConfig(**FAST)
    for shape in [(1, 5, 16, 16), (1, 3), (1, -3, 16, 16), (1, 3, 100000, 100000)]:
        with pytest.raises(InvalidConfigError):
            compress_module(tiny_resnet(), shape, cfg, RecordingProgress(), cache_dir=tmp_path)


@pytest.mark.parametrize("extra, match", [
    ({"inversion": {"evil": 1}}, "unknown inversion setting"), ({"inversion": {"batch": 0}}, "batch"),
    ({"inversion": {"batch": 2.5}}, "batch"), ({"inversion": {"lr": float("nan")}}, "lr"),
    ({"inversion": {"lr": "1e-3"}}, "lr"), ({"inversion": ["batch"]}, "mapping"), ({"method": "rm -rf"}, "method"), ({"bn_correction": "yes"}, "bn_correction"),
    ({"residual_targets": 1}, "residual_targets"), ({"mask_selection": "largest"}, "mask_selection"),
    ({"distill_features": "both"}, "distill_features"), ({"depthwise_refit": "no"}, "depthwise_refit"),
])
def test_hostile_extra_settings_are_refused(tmp_path, extra, match):
    with pytest.raises(InvalidConfigError, match=match):
        _run(tmp_path, extra=extra)


def test_depthwise_option(tmp_path):
    dense, _ = _run(tmp_path, model=seeded(Depthwise))
    layers = {l["name"]: l for l in dense.report["layers"]}
    assert layers["dw"]["kind"] == "depthwise" and not layers["dw"]["pruned"] and layers["conv"]["pruned"]
    result, _ = _run(tmp_path, model=seeded(Depthwise), prune_depthwise=True, connectivity=0.25)
    layers = {l["name"]: l for l in result.report["layers"]}
    # patterns only on a depthwise layer: a removed kernel would be a dead channel
    assert layers["dw"]["pruned"] and layers["dw"]["connectivity"] == 0.0 and layers["conv"]["connectivity"] == 0.25
    w = result.module.dw.weight.detach().reshape(8, 9)
    assert ((w != 0).sum(1) <= 4).all() and int(((w != 0).sum(1) == 0).sum()) == 0
    assert result.report["warnings"] == [depthwise_connectivity_note(True)]
    json.dumps(result.report, allow_nan=False)


@pytest.mark.parametrize("allocation", ["flops", "weights"])
def test_connectivity_on_a_model_with_only_depthwise_layers_to_prune(tmp_path, allocation):
    # a MobileNetV2 with prune_depthwise and --connectivity 0.5 crashed in the global kernel ranking (no dense 3x3)
    result, _ = _run(tmp_path, model=seeded(DepthwiseOnly), prune_depthwise=True, connectivity=0.5,
                     connectivity_allocation=allocation)
    layers = {l["name"]: l for l in result.report["layers"]}
    assert layers["dw"]["pruned"] and layers["dw"]["connectivity"] == 0.0 and not layers["stem"]["pruned"]
    assert int(((result.module.dw.weight.detach().reshape(8, 9) != 0).sum(1) == 0).sum()) == 0
    assert "removed nothing" in result.report["warnings"][0]


class _CancelAfter(RecordingProgress):
    def __init__(self, n):
        super().__init__()
        self.left = n

    def check_cancelled(self):
        self.left -= 1
        if self.left < 0:
            raise JobCancelled()


def test_cancellation_stops_the_work(tmp_path):
    cfg = CompressionConfig(**FAST)
    with pytest.raises(JobCancelled):
        compress_module(tiny_resnet(), INPUT_SHAPE, cfg, _CancelAfter(1), cache_dir=tmp_path)


@pytest.mark.parametrize("overrides, steps", [
    ({"connectivity": 0.0}, 0),  # pattern-only: distillation measured no gain, so none by default
    ({"connectivity": 0.5}, AUTO_RECOVERY_STEPS),
    ({"target_compression": 4.5}, AUTO_RECOVERY_STEPS),
    ({"connectivity": 0.0, "recovery_steps": 7}, 7),  # an explicit number always wins
    ({"connectivity": 0.5, "recovery_steps": 0}, 0),
])
def test_automatic_recovery_steps(overrides, steps):
    assert effective_recovery_steps(CompressionConfig(**overrides)) == steps


@pytest.mark.parametrize("distill_lr, blocks, lr", [(None, True, AFTER_BLOCKS_DISTILL_LR), (None, False, DISTILL_LR),
                                                    (0.02, True, 0.02), (0.02, False, 0.02)])
def test_automatic_distillation_rate(distill_lr, blocks, lr):
    assert effective_distill_lr(CompressionConfig(distill_lr=distill_lr), block_reconstruction=blocks) == lr


def test_automatic_recovery_runs_only_when_kernels_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("worker.engine.config.AUTO_RECOVERY_STEPS", 3)  # the real 200 is for real models
    auto = {**FAST, "recovery_steps": None}
    no_blocks = {"inversion": {"batch": 8}, "block_reconstruction": 0}
    pattern_only, _ = _run(tmp_path, **{**auto, "connectivity": 0.0, "extra": no_blocks})
    assert "distillation" not in pattern_only.report["recovery"]
    with_connectivity, _ = _run(tmp_path, **{**auto, "connectivity": 0.5, "extra": no_blocks})
    alone = with_connectivity.report["recovery"]["distillation"]
    assert (alone["steps"], alone["lr"], alone["inputs"], alone["fresh_input_steps"]) == (3, DISTILL_LR, 16, 3)
    with_blocks, _ = _run(tmp_path, **{**auto, "connectivity": 0.5,
                                       "extra": {**no_blocks, "block_reconstruction": 2}})
    blocks = with_blocks.report["recovery"]["block_reconstruction"]
    assert blocks["blocks"] > 0
    after = with_blocks.report["recovery"]["distillation"]  # polishes on the block stage's fixed inputs
    assert (after["steps"], after["lr"], after["inputs"], after["fresh_input_steps"]) == \
        (3, AFTER_BLOCKS_DISTILL_LR, blocks["inputs"], 0)

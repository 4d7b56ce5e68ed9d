"""float16 / bfloat16 uploads: pruned in float32, saved back in the upload's dtype with the pattern structure
intact, in every format, and the report says so."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.test_run import check_masks_match, small_config
from worker.engine.artifacts import read_masks
from worker.engine.formats import load_model, save_model
from worker.engine.run import compress_file
from worker.progress import NullProgress

DTYPES = [torch.float16, torch.bfloat16]


def _half_model(dtype):
    return tiny_resnet().to(dtype), torch.randn(2, *INPUT_SHAPE[1:]).to(dtype)


def export_half(fmt: str, dtype: torch.dtype, path):
    model, x = _half_model(dtype)
    batch = torch.export.Dim("batch", min=1, max=64)
    if fmt == "pt2":
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: batch},)), str(path))
    elif fmt == "onnx":
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), dynamo=True, external_data=False)
    else:
        torch.jit.save(torch.jit.trace(model, x[:1]), str(path))
    return path


def saved_weights(fmt: str, path) -> dict[str, torch.Tensor]:
    """The saved model's tensors as stock loaders give them (bfloat16 ONNX arrays read as float32 values)."""
    if fmt == "pt2":
        return dict(torch.export.load(str(path)).state_dict)
    if fmt == "torchscript":
        return torch.jit.load(str(path)).state_dict()
    return {t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float32)) for t in
            onnx.load(str(path)).graph.initializer}


def stored_onnx_types(path) -> dict[str, int]:
    return {t.name: t.data_type for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt, suffix", [("pt2", ".pt2"), ("onnx", ".onnx"), ("torchscript", ".pt")])
def test_half_precision_model_is_pruned_and_saved_in_its_dtype(tmp_path, fmt, suffix, dtype):
    path = export_half(fmt, dtype, tmp_path / f"half{suffix}")
    loaded = load_model(path, input_shape=INPUT_SHAPE)
    assert all(t.dtype == torch.float32 for t in loaded.module.state_dict().values() if t.is_floating_point())
    report = compress_file(path, tmp_path / "out", small_config(input_shape=INPUT_SHAPE), NullProgress())
    dtype_name = str(dtype).removeprefix("torch.")
    assert any(dtype_name in w and "float32" in w for w in report["warnings"]), report["warnings"]
    out = tmp_path / "out" / f"model{suffix}"
    weights = saved_weights(fmt, out)
    masks, meta = read_masks(tmp_path / "out" / "masks.safetensors")
    if fmt == "onnx":
        masks = {meta["source_names"][k]: v for k, v in masks.items()}
        onnx.checker.check_model(onnx.load(str(out)))
        assert stored_onnx_types(out) == stored_onnx_types(path)  # every initializer still in its own type
        if dtype == torch.float16:  # ONNX Runtime's CPU provider runs float16 graphs (not bfloat16 ones)
            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            logits = session.run(None, {"x": np.zeros((2, *INPUT_SHAPE[1:]), np.float16)})[0]
            assert logits.dtype == np.float16 and logits.shape == (2, 10)
    else:
        assert {t.dtype for t in weights.values() if t.is_floating_point()} == {dtype}
    check_masks_match(masks, weights, entries=4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_round_trip_is_exact_for_half_weights(tmp_path, dtype):
    path = export_half("pt2", dtype, tmp_path / "half.pt2")
    loaded = load_model(path)
    save_model(loaded, loaded.module, tmp_path / "same.pt2")
    original, saved = torch.export.load(str(path)).state_dict, torch.export.load(str(tmp_path / "same.pt2")).state_dict
    assert original.keys() == saved.keys()
    assert all(saved[k].dtype == original[k].dtype and torch.equal(saved[k], original[k]) for k in original)


def test_pruned_half_model_runs_on_half_inputs(tmp_path):
    path = export_half("pt2", torch.float16, tmp_path / "half.pt2")
    compress_file(path, tmp_path / "out", small_config(), NullProgress())
    pruned = torch.export.load(str(tmp_path / "out" / "model.pt2")).module()
    for batch in (1, 3):  # the upload's dynamic batch survives
        out = pruned(torch.randn(batch, *INPUT_SHAPE[1:], dtype=torch.float16))
        assert out.dtype == torch.float16 and out.shape == (batch, 10) and torch.isfinite(out).all()

"""Training and inference on CUDA (marker ``gpu``; skipped without a GPU)."""

from dataclasses import replace

import pytest
import torch

from export.parity import TOLERANCES
from train.checkpoint import load_model
from train.config import PRESETS
from train.engine import train
from train.evaluate import predict

pytestmark = pytest.mark.gpu


def test_cuda_bf16_training_lowers_loss_and_matches_cpu_inference(fmnist, tmp_path):
    cfg = replace(PRESETS["quick"], epochs=2, limit_train=8192, limit_test=2000, device="cuda", amp="auto")
    result = train(cfg, tmp_path, data=fmnist)
    assert result.amp in ("bfloat16", "float16")
    assert result.history[-1].train_loss < result.history[0].train_loss
    model = load_model(tmp_path / "best.pt")
    kw = dict(mean=model.config.mean, std=model.config.std, image_size=28)
    split = fmnist.test.subset(2000)
    cpu = predict(model, split, **kw)
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32: the table's bound, not a TF32 one
    try:
        gpu = predict(model.cuda(), split, device="cuda", **kw)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert (cpu - gpu).abs().max() <= TOLERANCES["fp32"].max_rel * cpu.abs().max()


def test_onnxruntime_cuda_provider_if_present(export_dir):
    import numpy as np
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} here has no CUDA provider ({ort.get_available_providers()})")
    from runtime.contract import read_manifest

    art = read_manifest(export_dir).artifacts[0]
    sess = ort.InferenceSession(str(export_dir / art.path), providers=["CUDAExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    cpu = ort.InferenceSession(str(export_dir / art.path), providers=["CPUExecutionProvider"])
    ref = cpu.run(None, {"images": x})[0]
    assert np.abs(sess.run(None, {"images": x})[0] - ref).max() <= TOLERANCES["fp32"].max_rel * np.abs(ref).max()

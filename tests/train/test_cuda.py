"""Training and inference on CUDA (marker ``gpu``; skipped without a GPU)."""

from dataclasses import replace

import pytest

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
    gpu = predict(model.cuda(), split, device="cuda", **kw)
    assert (cpu - gpu).abs().max() <= 1e-3 * cpu.abs().max()


def test_onnxruntime_cuda_provider_if_present(export_dir):
    import numpy as np
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} here has no CUDA provider ({ort.get_available_providers()})")
    from export.manifest import read_manifest

    art = read_manifest(export_dir)["artifacts"][0]
    sess = ort.InferenceSession(str(export_dir / art["path"]), providers=["CUDAExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    cpu = ort.InferenceSession(str(export_dir / art["path"]), providers=["CPUExecutionProvider"])
    assert np.allclose(sess.run(None, {"images": x})[0], cpu.run(None, {"images": x})[0], atol=1e-3)

"""TensorRT engines. These run only where TensorRT and a CUDA GPU exist (marker ``gpu``)."""

import json

import numpy as np
import pytest

from export import tensorrt
from export.manifest import read_manifest
from export.parity import ort_logits
from train.errors import ArtifactMismatch

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def trt_ready():
    reason = tensorrt.unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_runs_and_matches_onnx(trt_ready, export_dir, tmp_path, precision):
    art = next(a for a in read_manifest(export_dir)["artifacts"] if a["precision"] == precision and a["target"] == "any")
    engine = tensorrt.build_engine(export_dir / art["path"], tmp_path / f"m_{precision}.engine", precision=precision,
                                   input_name="images", chw=(1, 28, 28), timing_cache=tmp_path / "cache")
    side = json.loads(tensorrt.sidecar_path(engine).read_text())
    assert side["precision"] == precision and side["profile"]["max_batch"] == 64
    assert (tmp_path / "cache").stat().st_size > 0
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    ref = ort_logits(export_dir / art["path"], x)
    out = tensorrt.engine_logits(engine, x, 64)
    tol = {"fp32": 1e-3, "fp16": 5e-2, "int8": 0.25}[precision]
    assert np.abs(out - ref).max() <= tol * np.abs(ref).max()
    assert engine.read_bytes()[:4] != b"{\"te"  # a plain plan: no metadata prepended


def test_engine_for_another_gpu_is_refused(trt_ready, export_dir, tmp_path):
    art = read_manifest(export_dir)["artifacts"][0]
    engine = tensorrt.build_engine(export_dir / art["path"], tmp_path / "m.engine", precision="fp32",
                                   input_name="images", chw=(1, 28, 28))
    side = tensorrt.sidecar_path(engine)
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "tensorrt_version": "9.0.0"}))
    with pytest.raises(ArtifactMismatch, match="built for TensorRT 9.0.0"):
        tensorrt.load_engine(engine)

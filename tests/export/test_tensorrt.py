"""TensorRT engines. These run only where TensorRT and a CUDA GPU exist (marker ``gpu``), except the
sidecar reading, which needs neither."""

import json

import numpy as np
import pytest

from export import tensorrt
from export.parity import ort_logits
from resnet_edge.errors import ArtifactMismatch, InvalidInput
from runtime.contract import read_manifest
from runtime.parity import TOLERANCES


@pytest.fixture(scope="module")
def trt_ready():
    reason = tensorrt.unavailable_reason()
    if reason:
        pytest.skip(reason)


def _build(export_dir, tmp_path, precision, **kw):
    art = next(a for a in read_manifest(export_dir).artifacts if a.precision == precision and a.target == "any")
    engine = tensorrt.build_engine(export_dir / art.path, tmp_path / f"m_{precision}.engine", precision=precision,
                                   input_name="images", chw=(1, 28, 28), **kw)
    return art, engine


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_runs_and_matches_onnx(trt_ready, export_dir, tmp_path, precision):
    import tensorrt as trt

    art, engine = _build(export_dir, tmp_path, precision, timing_cache=tmp_path / "cache")
    side = json.loads(tensorrt.sidecar_path(engine).read_text())
    assert side["precision"] == precision and side["profile"]["max_batch"] == 64
    assert side["tf32"] is (precision != "fp32")
    assert (tmp_path / "cache").stat().st_size > 0
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    ref = ort_logits(export_dir / art.path, x)
    out = tensorrt.engine_logits(engine, x, 64)
    # fp32 is held to the fp32 bound of the one tolerance table: it holds only with TF32 cleared.
    tol = {"fp32": TOLERANCES["fp32"].max_rel, "fp16": TOLERANCES["fp16"].max_rel, "int8": 0.25}[precision]
    assert np.abs(out - ref).max() <= tol * np.abs(ref).max()
    # A plain plan: TensorRT's own runtime (as trtexec and Triton use it) deserializes it with no sidecar.
    plain = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine.read_bytes())
    assert plain is not None and plain.num_io_tensors == 2


@pytest.mark.gpu
def test_batches_outside_the_profile_are_refused(trt_ready, export_dir, tmp_path):
    from runtime import backends
    from runtime.spec import load_artifacts

    _, engine = _build(export_dir, tmp_path, "fp32", profile=tensorrt.Profile(1, 4, 8))
    runner = tensorrt.EngineRunner(engine)
    with pytest.raises(InvalidInput, match="outside the optimization profile"):
        runner(np.zeros((9, 1, 28, 28), np.float32))
    assert runner(np.zeros((8, 1, 28, 28), np.float32)).shape == (8, 10)  # still usable
    with pytest.raises(InvalidInput, match="exceeds the largest batch 8"):
        backends.create("tensorrt", load_artifacts(export_dir).spec, engine, max_batch=64).load()


@pytest.mark.gpu
def test_engine_for_another_gpu_is_refused(trt_ready, export_dir, tmp_path):
    _, engine = _build(export_dir, tmp_path, "fp32")
    side = tensorrt.sidecar_path(engine)
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "tensorrt_version": "9.0.0"}))
    with pytest.raises(ArtifactMismatch, match="built by TensorRT 9.0.0"):
        tensorrt.load_engine(engine)


def test_profile_limit_is_read_from_the_sidecar_without_tensorrt(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ArtifactMismatch, match="no readable sidecar"):
        tensorrt.engine_max_batch(engine)
    tensorrt.sidecar_path(engine).write_text(json.dumps({"profile": {"min_batch": 1, "opt_batch": 4, "max_batch": 16}}))
    assert tensorrt.engine_max_batch(engine) == 16


def test_a_sidecar_is_read_once_into_one_typed_record(tmp_path):
    """The engine's sidecar is parsed and checked in one place (issue 37): the library, its version, the profile and
    the targets, with one sentence for a format it does not know or a profile it lacks."""
    from runtime.backends.trt_engine import TENSORRT_RTX, EngineSidecar, library_of

    engine = tmp_path / "m.rtx.engine"
    engine.write_bytes(b"plan")
    side = tensorrt.sidecar_path(engine)
    side.write_text(json.dumps({"format": "tensorrt_rtx", "tensorrt_rtx_version": "1.7.0",
                                "profile": {"min_batch": 1, "max_batch": 64}, "compute_capabilities": ["8.6", 12.0]}))
    read = EngineSidecar.read(engine)
    assert (read.lib, read.library_version, read.min_batch, read.max_batch) == (TENSORRT_RTX, "1.7.0", 1, 64)
    assert read.targets == ("8.6", "12.0") and library_of(engine) is TENSORRT_RTX
    side.write_text(json.dumps({"format": "coreml", "profile": {"min_batch": 1, "max_batch": 64}}))
    with pytest.raises(ArtifactMismatch, match="names the format 'coreml', which is neither tensorrt nor tensorrt_rtx"):
        EngineSidecar.read(engine)
    side.write_text(json.dumps({"format": "tensorrt_rtx"}))
    with pytest.raises(ArtifactMismatch, match="its optimization profile is missing"):
        EngineSidecar.read(engine)

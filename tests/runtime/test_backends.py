import subprocess
import sys

import numpy as np
import pytest

from runtime import backends
from runtime.parity import reference_logits
from train.errors import InvalidInput, MissingDependency, ToolkitError

CPU_BACKENDS = [b for b in ("torch", "onnxruntime", "openvino") if backends.unavailable_reason(b) is None]


def _source(arts, name):
    return arts.checkpoint if name == "torch" else arts.find("onnx", "fp32").path


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_backend_matches_reference_fp32(arts, name):
    x = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32)
    ref = reference_logits(arts.checkpoint, x)
    with backends.create(name, arts.spec, _source(arts, name), max_batch=8) as b:
        out = b.infer(x)
        assert out.dtype == np.float32 and out.shape == (5, 10)
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
        assert b.infer(x[:1]).shape == (1, 10)
    assert not b.loaded


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize(("batch", "match"), [
    (np.zeros((2, 1, 28, 28), np.float64), "dtype must be float32"),
    (np.zeros((2, 3, 28, 28), np.float32), r"shape must be \[N, 1, 28, 28\]"),
    (np.zeros((1, 28, 28), np.float32), r"shape must be"),
    (np.zeros((9, 1, 28, 28), np.float32), "Batch size 9 is outside 1..8"),
    (np.zeros((0, 1, 28, 28), np.float32), "Batch size 0"),
    (np.full((1, 1, 28, 28), np.nan, np.float32), "NaN or Inf"),
    ([[0.0]], "numpy array"),
])
def test_bad_input_is_refused_with_one_sentence(arts, name, batch, match):
    with backends.create(name, arts.spec, _source(arts, name), max_batch=8) as b:
        with pytest.raises(InvalidInput, match=match):
            b.infer(batch)
        assert b.infer(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 10)  # still serving


def test_infer_before_load(arts):
    b = backends.create("onnxruntime", arts.spec, _source(arts, "onnxruntime"))
    with pytest.raises(ToolkitError, match="call load"):
        b.infer(np.zeros((1, 1, 28, 28), np.float32))


def test_unknown_and_missing_backends(arts):
    with pytest.raises(InvalidInput, match="Unknown backend 'tvm'"):
        backends.unavailable_reason("tvm")
    if backends.unavailable_reason("tensorrt"):
        with pytest.raises(MissingDependency, match=r"resnet-edge\[gpu\]|CUDA GPU"):
            backends.create("tensorrt", arts.spec, arts.root / "x.engine")


def test_explicit_missing_provider_is_one_sentence(arts):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA EP present")
    b = backends.create("onnxruntime", arts.spec, _source(arts, "onnxruntime"), providers=("CUDAExecutionProvider",))
    with pytest.raises(InvalidInput, match="lacks CUDAExecutionProvider"):
        b.load()


def test_torch_fp16_on_cpu_is_refused(arts):
    with pytest.raises(InvalidInput, match="fp16 inference needs CUDA"):
        backends.create("torch", arts.spec, arts.checkpoint, precision="fp16").load()


def test_import_runtime_pulls_in_no_heavy_optional_package():
    code = ("import sys, runtime, runtime.backends, runtime.cli, runtime.bench, runtime.parity, resnet_edge.cli; "
            "heavy = [m for m in ('tensorrt', 'openvino', 'onnxruntime', 'fastapi', 'uvicorn') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("options", [{}, {"cuda_graphs": True}])
def test_torch_cuda_backend(arts, options):
    x = np.random.default_rng(2).standard_normal((4, 1, 28, 28)).astype(np.float32)
    ref = reference_logits(arts.checkpoint, x)
    for precision, tol in (("fp32", 1e-3), ("fp16", 1e-2)):
        with backends.create("torch", arts.spec, arts.checkpoint, precision=precision, device="cuda", **options) as b:
            for _ in range(2):  # the second call replays the captured graph
                assert np.abs(b.infer(x) - ref).max() <= tol * np.abs(ref).max()


def test_openvino_reports_the_precision_it_really_computes_in(arts):
    if backends.unavailable_reason("openvino"):
        pytest.skip("openvino is not installed")
    from runtime.variants import _cpu_has_bf16

    src = arts.find("onnx", "fp32").path
    with backends.create("openvino", arts.spec, src) as b:
        assert b.effective_precision == "fp32"  # we pin f32 for FP32 artifacts
    with backends.create("openvino", arts.spec, src, defaults=True) as b:
        assert b.effective_precision == ("bf16" if _cpu_has_bf16() else "fp32")  # the plugin's silent default

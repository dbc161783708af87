import subprocess
import sys

import numpy as np
import pytest

from resnet_edge.errors import InvalidInput, MissingDependency, ToolkitError
from runtime import backends, reference
from runtime.parity import TOLERANCES, reference_logits

CPU_BACKENDS = [b for b in ("torch", "onnxruntime", "openvino") if backends.unavailable_reason(b) is None]


def _source(arts, name):
    return arts.find("torch", "fp32").path if name == "torch" else arts.find("onnx", "fp32").path


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_backend_matches_reference_fp32(arts, name):
    x = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32)
    ref = reference_logits(arts, reference.program(arts), x)
    with backends.create(name, arts.spec, _source(arts, name), max_batch=8) as b:
        out = b.infer(x)
        assert out.dtype == np.float32 and out.shape == (5, 10)
        assert np.abs(out - ref).max() <= TOLERANCES["fp32"].max_rel * np.abs(ref).max()
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


def test_torch_backend_threads_do_not_leak_into_the_process(arts):
    import torch

    before = torch.get_num_threads()
    threads = 1 if before != 1 else 2
    with backends.create("torch", arts.spec, arts.find("torch", "fp32").path, threads=threads) as b:
        b.infer(np.zeros((2, 1, 28, 28), np.float32))
        assert torch.get_num_threads() == before  # the eager peer and everything else keep theirs
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_static_backend_pads_to_its_bucket_and_returns_only_the_callers_rows(arts, name):
    if backends.unavailable_reason(name):
        pytest.skip(f"{name} is not installed")
    x = np.random.default_rng(3).standard_normal((5, 1, 28, 28)).astype(np.float32)
    ref = reference_logits(arts, reference.program(arts), x)
    with backends.create(name, arts.spec, arts.find("onnx", "fp32").path, max_batch=8, buckets=(2, 4)) as b:
        assert b.buckets == (2, 4, 8)
        for n in (1, 3, 5, 8):  # 1 -> 2, 3 -> 4, 5 -> 8, 8 -> 8
            out = b.infer(np.ascontiguousarray(np.resize(x, (n, 1, 28, 28))))
            assert out.shape == (n, 10)
        assert np.abs(b.infer(x) - ref).max() <= TOLERANCES["fp32"].max_rel * np.abs(ref).max()
        if name == "openvino":
            assert sorted(b.requests) == [2, 4, 8]  # one compile per bucket, all at load: memory stays bounded


def test_backend_load_errors_are_one_sentence(arts, tmp_path):
    from resnet_edge.errors import ArtifactMismatch

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    for name in [n for n in ("onnxruntime", "openvino") if backends.unavailable_reason(n) is None]:
        with pytest.raises(ArtifactMismatch, match=f"The {name} backend could not load bad.onnx"):
            backends.create(name, arts.spec, bad).load()


def test_torch_compile_peer_compiles_every_bucket_at_load_and_pads_to_them(arts):
    """The torch.compile peer (bench uses mode max-autotune on CUDA; the cheaper default mode here, on the CPU):
    compiled for each bucket at load with the time recorded, padding a short batch rather than recompiling."""
    x = np.random.default_rng(3).standard_normal((3, 1, 28, 28)).astype(np.float32)
    ref = reference_logits(arts, reference.program(arts), x)
    with backends.create("torch", arts.spec, arts.find("torch", "fp32").path, max_batch=4, buckets=(4,), compile="default") as b:
        assert b.static_shapes and b.buckets == (4,) and b.compile_s > 0
        assert np.abs(b.infer(x) - ref).max() <= TOLERANCES["fp32"].max_rel * np.abs(ref).max()
        assert "torch.compile default" in b.describe()


def test_torch_fp16_on_cpu_is_refused(arts):
    with pytest.raises(InvalidInput, match="fp16 inference needs CUDA"):
        backends.create("torch", arts.spec, arts.find("torch", "fp32").path, precision="fp16").load()


def test_import_runtime_pulls_in_no_heavy_optional_package():
    code = ("import sys, runtime, runtime.backends, runtime.cli, runtime.serve_cli, runtime.lab.bench, runtime.parity, "
            "resnet_edge.cli; heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'nncf', 'tensorrt', "
            "'starlette', 'uvicorn', 'grpc', 'matplotlib') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("options", [{}, {"cuda_graphs": True}])
def test_torch_cuda_backend(arts, options):
    x = np.random.default_rng(2).standard_normal((4, 1, 28, 28)).astype(np.float32)
    ref = reference_logits(arts, reference.program(arts), x)
    for precision in ("fp32", "fp16"):  # fp32 holds the fp32 bound only with TF32 off, as the backend sets
        tol = TOLERANCES[precision].max_rel
        program = arts.find("torch", "fp32").path
        with backends.create("torch", arts.spec, program, precision=precision, device="cuda", **options) as b:
            for _ in range(2):  # the second call replays the captured graph
                assert np.abs(b.infer(x) - ref).max() <= tol * np.abs(ref).max()


def test_openvino_reports_the_precision_it_really_computes_in(arts):
    if backends.unavailable_reason("openvino"):
        pytest.skip("openvino is not installed")
    from runtime.backends.cpu_features import cpu_has_bf16 as _cpu_has_bf16

    src = arts.find("onnx", "fp32").path
    with backends.create("openvino", arts.spec, src) as b:
        assert b.effective_precision == "fp32"  # we pin f32 for FP32 artifacts
    with backends.create("openvino", arts.spec, src, defaults=True) as b:
        assert b.effective_precision == ("bf16" if _cpu_has_bf16() else "fp32")  # the plugin's silent default

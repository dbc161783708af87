"""AOTInductor packages: built by export, run by the runtime's aoti backend, refused on another torch or GPU.

Without a GPU this builds the CPU fp32 package that `--aoti` makes on a machine without CUDA, which exercises the
same export, sidecar and backend code; the CUDA packages (fp16, bf16, fp32 with CUDA graphs) are gpu-marked."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from export.aoti import build_package
from export.fold import fold_batchnorm
from resnet_edge.errors import ArtifactMismatch, InvalidInput
from resnet_edge.images import to_input
from runtime.backends.aoti_backend import AotiBackend, sidecar_path
from runtime.parity import TOLERANCES, compare
from runtime.spec import load_artifacts
from train.checkpoint import load_model


@pytest.fixture(scope="module")
def arts(export_dir):
    return load_artifacts(export_dir)


@pytest.fixture(scope="module")
def model(trained_ckpt):
    return load_model(trained_ckpt)


@pytest.fixture(scope="module")
def aoti_export(trained_ckpt, tmp_path_factory):
    """One `export --aoti` (a CPU package here, the ONNX FP32 beside it), which every CPU test here reads: an AOTI
    compile costs about a minute on two cores."""
    tmp = tmp_path_factory.mktemp("aoti")
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "export", str(trained_ckpt), "--out", str(tmp / "arts"),
                          "--aoti", "--precision", "fp32", "--formats", "onnx", "--limit", "1000",
                          "--triton-repo", str(tmp / "triton")], capture_output=True, text=True, timeout=900)
    return tmp, res


@pytest.fixture(scope="module")
def cpu_package(model, aoti_export):
    tmp, res = aoti_export
    assert res.returncode == 0, res.stderr
    (row,) = [a for a in load_artifacts(tmp / "arts").manifest.artifacts if a.format == "aoti"]
    return model, tmp / "arts" / row.path


def test_package_runs_like_the_checkpoint(cpu_package, arts, fmnist):
    model, package = cpu_package
    side = json.loads(sidecar_path(package).read_text())
    assert side["device"] == "cpu" and side["precision"] == "fp32" and side["torch_version"] == torch.__version__
    x = to_input(fmnist.test.images[:100].numpy(), arts.spec.mean, arts.spec.std, 28)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    with AotiBackend(arts.spec, package, precision="fp32", max_batch=16) as backend:
        out = np.concatenate([backend.infer(x[i:i + 16]) for i in range(0, 100, 16)])  # a short last batch: 4 rows
        assert backend.infer(x[:1]).shape == (1, 10)
        # the device is the package's own (bench gives CUDA rows compute-only times and GPU comparisons by it)
        assert backend.device == "cpu" and not backend.static_shapes
    assert compare(ref, out, "fp32", fmnist.test.labels[:100].numpy()), TOLERANCES["fp32"]


def test_package_from_another_torch_or_device_is_refused(cpu_package, arts, tmp_path):
    _, package = cpu_package
    copy = tmp_path / package.name
    copy.write_bytes(package.read_bytes())
    side = json.loads(sidecar_path(package).read_text())
    for change, match in (({"torch_version": "2.0.0"}, "built with torch 2.0.0 but this machine has"),
                          ({"device": "cuda", "gpu": "NVIDIA H100"}, "PyTorch sees no CUDA GPU"
                           if not torch.cuda.is_available() else "built with GPU NVIDIA H100")):
        sidecar_path(copy).write_text(json.dumps({**side, **change}))
        with pytest.raises(ArtifactMismatch, match=match):
            AotiBackend(arts.spec, copy, precision="fp32").load()
    sidecar_path(copy).write_text(json.dumps(side))
    with pytest.raises(InvalidInput, match="holds a fp32 model, not bf16"):
        AotiBackend(arts.spec, copy, precision="bf16").load()
    with pytest.raises(InvalidInput, match="exceeds the 64"):  # export compiles for its --max-batch-size
        AotiBackend(arts.spec, copy, precision="fp32", max_batch=128).load()
    for broken, match in (({k: v for k, v in side.items() if k != "max_batch"}, "no readable sidecar"),
                          ({**side, "device": "tpu"}, "names the device 'tpu'")):  # read once, typed (issue 37)
        sidecar_path(copy).write_text(json.dumps(broken))
        with pytest.raises(ArtifactMismatch, match=match):
            AotiBackend(arts.spec, copy, precision="fp32").load()
    sidecar_path(copy).unlink()
    with pytest.raises(ArtifactMismatch, match="no readable sidecar"):
        AotiBackend(arts.spec, copy, precision="fp32").load()


def test_export_with_aoti_records_the_package_and_parity_runs_it(aoti_export):
    tmp_path, res = aoti_export
    out = tmp_path / "arts"
    assert res.returncode == 0, res.stderr
    arts = load_artifacts(out)  # every hash checks, the package's included
    (row,) = [a for a in arts.manifest.artifacts if a.format == "aoti"]
    assert (row.precision, row.target, row.status) == ("fp32", "cpu", "ok")
    assert (out / row.sidecar).is_file() and row.test_accuracy == arts.manifest.source.test_accuracy
    assert "Triton's PyTorch backend" in arts.manifest.decisions.triton_aoti
    assert not any("aoti" in p.name for p in (tmp_path / "triton").iterdir())
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "parity", str(out), "--backend", "aoti", "--limit",
                          "500", "--random", "16"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "aoti fp32-cpu" in res.stdout, res.stdout + res.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16"])  # bf16 and fp32 packages: make gpu-check's export and parity
def test_cuda_packages_with_graphs(model, arts, fmnist, tmp_path, precision):
    package = build_package(fold_batchnorm(model), tmp_path / f"m_{precision}.pt2", precision=precision,
                            device="cuda", chw=(1, 28, 28), max_batch=16)
    x = to_input(fmnist.test.images[:64].numpy(), arts.spec.mean, arts.spec.std, 28)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    with AotiBackend(arts.spec, package, precision=precision, max_batch=16) as backend:
        assert backend.static_shapes and sorted(backend._graphs) == [1, 2, 4, 8, 16] and backend.device == "cuda"
        out = np.concatenate([backend.infer(x[i:i + 16]) for i in range(0, 64, 16)])
        assert backend.compute_only_ms(x[:8]) > 0
    assert compare(ref, out, precision, fmnist.test.labels[:64].numpy())

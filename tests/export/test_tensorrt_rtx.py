"""TensorRT-RTX engines: built ahead of time on this CPU machine by NVIDIA's own parser and builder (no GPU needed), so
every graph a TensorRT row consumes is held to zero parser errors here. Running an engine needs a GPU of compute
capability 7.5-8.9 or 12.x (marker ``gpu``, skipped with the reason elsewhere, Hopper included)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from export import quantize, tensorrt
from resnet_edge.atomic import sha256_file
from resnet_edge.errors import ArtifactMismatch, InvalidInput, MissingDependency
from runtime.contract import read_manifest

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install 'resnet-edge[rtx]')")
RTX = tensorrt.TENSORRT_RTX


def _onnx(export_dir, precision):
    return next(a for a in read_manifest(export_dir).artifacts if a.format == "onnx" and a.precision == precision
                and a.target == "any")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_graph_a_tensorrt_row_consumes_parses_with_no_errors(export_dir, precision):
    libs = [RTX] + ([tensorrt.TENSORRT] if tensorrt.unavailable_reason(tensorrt.TENSORRT) is None else [])
    for lib in libs:  # the full TensorRT too, where it is installed with a GPU
        _, _, network, parser = tensorrt.parse_onnx(export_dir / _onnx(export_dir, precision).path, lib)
        assert parser.num_errors == 0 and network.num_layers > 0
        kinds = {network.get_layer(i).type.name for i in range(network.num_layers)}
        # the INT8 graph quantizes explicitly (Q/DQ layers); FP32/FP16 have none
        assert ("QUANTIZE" in kinds) == (precision == "int8"), kinds


def test_make_export_lists_three_engines_built_for_the_portable_targets(export_dir):
    manifest = read_manifest(export_dir)  # every engine and sidecar checked against its sha256
    engines = {a.precision.value: a for a in manifest.artifacts if a.format == "tensorrt_rtx"}
    assert sorted(engines) == ["fp16", "fp32", "int8"]
    for precision, art in engines.items():
        side = tensorrt.read_sidecar(export_dir / art.path)
        onnx_row = _onnx(export_dir, precision)
        assert side["tensorrt_rtx_version"] == art.tools["tensorrt_rtx"] and side["format"] == "tensorrt_rtx"
        assert side["compute_capabilities"] == list(tensorrt.RTX_DEFAULT_CAPABILITIES)
        assert side["profile"] == {"min_batch": 1, "opt_batch": 32, "max_batch": 64}
        assert side["source_onnx"] == onnx_row.path and side["source_onnx_sha256"] == onnx_row.sha256
        assert side["engine_bytes"] == (export_dir / art.path).stat().st_size and side["build_seconds"] > 0
        assert side["parser_errors"] == 0 and side["strongly_typed"] is True
        verification = art.details["verification"]
        assert verification["checked"] == {"parser_errors": 0, "network_layers": side["network_layers"],
                                           "targets": side["compute_capabilities"]}
        if tensorrt.run_unavailable_reason(RTX) is None:  # a supported GPU: run and held to the tolerance table
            assert art.status == "ok" and art.parity.n == manifest.evaluation.test_images and verification["ran"]
        else:  # never implied: no accuracy, no parity, and the reason it did not run
            assert art.status == "built" and art.parity is None and art.test_accuracy is None
            assert not verification["ran"] and verification["not_checked"].startswith("numerics: not run here (")
    assert engines["int8"].size_bytes < engines["fp32"].size_bytes / 2
    assert manifest.decisions.triton_tensorrt_rtx  # not in the Triton repository: Triton loads full-TRT plans
    assert not [p for p in (export_dir / "triton").iterdir() if "rtx" in p.name]


def test_the_int32_bias_graph_is_refused_naming_its_node(export_dir, tmp_path):
    """ONNX Runtime's default INT8 (int32 biases behind a DequantizeLinear) is what NVIDIA's parser refuses; ours keeps
    biases in float."""
    fp32 = export_dir / _onnx(export_dir, "fp32").path
    calib = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    old = quantize.to_int8(fp32, tmp_path / "old.onnx", calib, quantize.Int8Options(quantize_bias=True))
    with pytest.raises(ArtifactMismatch, match=r"parser rejected old\.onnx: node \S+bias_DequantizeLinear "
                                               r"\(DequantizeLinear\):.*type Int32"):
        tensorrt.build_engine(old, tmp_path / "old.engine", precision="int8", input_name="images", chw=(1, 28, 28),
                              lib=RTX)
    assert not (tmp_path / "old.engine").exists()


def test_targets_and_a_library_mismatch(export_dir, tmp_path):
    assert tensorrt.parse_capabilities("8.6, 12.0,8.6") == ("8.6", "12.0")
    assert tensorrt.parse_capabilities("portable") == tensorrt.RTX_DEFAULT_CAPABILITIES
    for bad in ("9.0", "5.3", "abc", ""):
        with pytest.raises(InvalidInput, match="does not target compute capability"):
            tensorrt.parse_capabilities(bad)
    if tensorrt.gpu_capability() is None:
        with pytest.raises(InvalidInput, match="needs a CUDA GPU"):
            tensorrt.parse_capabilities("current")
    def build(precision, cc):
        return tensorrt.build_engine(export_dir / _onnx(export_dir, precision).path, tmp_path / f"{precision}.rtx.engine",
                                     precision=precision, input_name="images", chw=(1, 28, 28), lib=RTX,
                                     capabilities=cc, profile=tensorrt.Profile(1, 2, 4))

    # Turing has no FP32 GEMM in TensorRT-RTX (its support matrix): the builder's own reason, in one sentence
    with pytest.raises(ArtifactMismatch, match=r"failed to build a fp32 engine .*Turing \(SM75\): FP32 GEMM"):
        build("fp32", ("7.5",))
    assert json.loads(tensorrt.sidecar_path(build("fp16", ("7.5",))).read_text())["compute_capabilities"] == ["7.5"]
    engine = build("fp32", ("8.6", "12.0"))
    side = json.loads(tensorrt.sidecar_path(engine).read_text())
    assert side["compute_capabilities"] == ["8.6", "12.0"] and side["profile"]["max_batch"] == 4
    tensorrt.sidecar_path(engine).write_text(json.dumps({**side, "tensorrt_rtx_version": "1.6.0.1"}))
    with pytest.raises(ArtifactMismatch, match=r"built by TensorRT-RTX 1\.6\.0\.1 but this machine has TensorRT-RTX 1\."):
        tensorrt.load_engine(engine)


def test_the_backend_says_why_it_cannot_run_here(export_dir):
    from runtime import backends
    from runtime.spec import load_artifacts

    reason = backends.unavailable_reason("tensorrt_rtx")
    if reason is None:
        pytest.skip("a GPU TensorRT-RTX runs on is here")
    art = next(a for a in load_artifacts(export_dir).items if a.format == "tensorrt_rtx")
    with pytest.raises(MissingDependency, match="tensorrt_rtx backend cannot run here"):
        backends.create("tensorrt_rtx", load_artifacts(export_dir).spec, art.path).load()


def _export(*args):
    return subprocess.run([sys.executable, "-m", "resnet_edge", "export", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize(("args", "match"), [
    (["--trt-rtx-cc", "9.0"], "does not target compute capability '9.0'"),
    (["--trt-rtx-cc", "5.3"], "does not target compute capability '5.3'"),
    (["--trt-rtx-cc", "abc"], "does not target compute capability 'abc'"),
    (["--trt-batch", "8,4,2"], "needs 1 <= min <= opt <= max batch, got 8/4/2"),
])
def test_bad_engine_options_get_one_sentence_and_nothing_written(trained_ckpt, tmp_path, args, match):
    res = _export(trained_ckpt, "--out", tmp_path / "out", *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.count("error:") == 1, res.stderr
    assert match in " ".join(res.stderr.split())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_asking_for_engines_without_tensorrt_rtx_is_one_sentence(trained_ckpt, tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(  # a machine where neither TensorRT library is installed
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('tensorrt_rtx', 'tensorrt'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    import os

    env = {**os.environ, "PYTHONPATH": f"{hide}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "export", str(trained_ckpt), "--out", str(tmp_path / "o"),
                          "--trt-rtx"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "--trt-rtx was asked for, but: TensorRT-RTX is not installed (pip install 'resnet-edge[rtx]')" in \
        " ".join(res.stderr.split())


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_runs_within_the_tolerance_table_on_a_supported_gpu(export_dir, tmp_path, precision):
    from export.parity import ort_logits
    from runtime.tolerances import TOLERANCES

    reason = tensorrt.run_unavailable_reason(RTX)
    if reason:
        pytest.skip(reason)  # Hopper (9.0) says so in one sentence
    onnx_path = export_dir / _onnx(export_dir, precision).path
    engine = tensorrt.build_engine(onnx_path, tmp_path / f"m_{precision}.rtx.engine", precision=precision,
                                   input_name="images", chw=(1, 28, 28), lib=RTX,
                                   capabilities=tensorrt.parse_capabilities("current"))
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    ref, out = ort_logits(onnx_path, x), tensorrt.engine_logits(engine, x, 64)
    tol = {"fp32": TOLERANCES["fp32"].max_rel, "fp16": TOLERANCES["fp16"].max_rel, "int8": 0.25}[precision]
    assert np.abs(out - ref).max() <= tol * np.abs(ref).max()
    assert tensorrt.runtime_cache_path(engine).stat().st_size > 0  # the JIT's kernels kept for the next process
    assert sha256_file(engine)  # unchanged file, still readable

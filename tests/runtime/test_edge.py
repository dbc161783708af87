"""The edge runtime: every runtime command works in a process where torch, onnx and matplotlib cannot be
imported, and the artifacts verify themselves against their golden set."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_edge.errors import ArtifactMismatch
from runtime.spec import load_artifacts

HIDE = '''
import sys

BLOCKED = {"torch", "onnx", "onnxscript", "matplotlib", "torchvision"}


class _Hide:
    """Delegates to a finder, except for the training stack, which is not there (find_spec: None)."""

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


sys.meta_path[:] = [_Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
'''


@pytest.fixture(scope="module")
def edge_env(tmp_path_factory):
    """Environment variables for a subprocess without the training stack (a sitecustomize hides it)."""
    import os

    d = tmp_path_factory.mktemp("edge")
    (d / "sitecustomize.py").write_text(HIDE)
    env = {**os.environ, "PYTHONPATH": str(d)}
    return env


def _run(env, *args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def test_the_training_stack_is_really_hidden(edge_env):
    for module in ("torch", "onnx", "matplotlib"):
        res = _run(edge_env, "-c", f"import {module}")
        assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr
    res = _run(edge_env, "-c", "import importlib.util, runtime, runtime.predict, runtime.parity, runtime.lab.bench, "
                               "runtime.serving.server; print(importlib.util.find_spec('torch'))")
    assert res.returncode == 0 and res.stdout.strip() == "None", res.stderr


def test_parity_predict_and_bench_without_torch(edge_env, arts, fmnist, tmp_path):
    res = _run(edge_env, "-m", "resnet_edge", "parity", arts.root, "--json", tmp_path / "parity.json")
    report = json.loads((tmp_path / "parity.json").read_text())
    assert res.returncode == (0 if report["passed"] else 1), res.stdout + res.stderr
    assert "golden set" in report["reference"] and report["n_real"] == 1000
    # Every artifact built for its runtime passes on it. The QDQ ONNX INT8 files read by OpenVINO are not what
    # export verifies (it verifies them on ONNX Runtime, and builds OpenVINO its own INT8 IR); on 1,000 images they
    # sit at the 99% agreement bound (docs/measurements.md), so they are reported, not required here.
    failed = [r["variant"] for r in report["rows"] if not r["passed"]]
    assert set(failed) <= {"openvino int8", "openvino int8-cpu"}, failed
    # Every torch-free format's runtime, on the golden set, in a process that cannot import torch: the edge
    # formats among them (LiteRT, ncnn, OpenVINO IR); ExecuTorch's Python runtime needs torch and says so.
    assert {r["backend"] for r in report["rows"]} >= {"onnxruntime", "openvino", "litert", "ncnn"}
    assert {r["variant"] for r in report["rows"]} >= {"litert int8", "litert fp32", "ncnn fp32", "ncnn fp16"}
    assert not any(r["backend"] in ("torch", "executorch") for r in report["rows"])
    assert any("executorch" in line and "'torch'" in line for line in report["skipped"]), report["skipped"]

    for i in range(20):
        Image.fromarray(fmnist.test.images[i].numpy()).save(tmp_path / f"{i}.png")
    res = _run(edge_env, "-m", "resnet_edge", "predict", arts.root, tmp_path / "*.png", "-k", "2", "--backend",
               "onnxruntime", "--json", tmp_path / "pred.json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads((tmp_path / "pred.json").read_text())["predictions"]) == 20

    res = _run(edge_env, "-m", "resnet_edge", "bench", arts.root, "--backend", "onnxruntime", "--precision", "fp32",
               "--batch", "1,8", "--duration", "0.2s", "--warmup", "0.1s", "--rounds", "1", "--accuracy-images", "200",
               "--peers", "--json", tmp_path / "bench.json")
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert {r["batch"] for r in rows} == {1, 8} and all(r["accuracy"] > 0.85 for r in rows)
    # the FP32 peers a device runs without torch; an FP32 bench builds no INT8 peers
    peers = {r["label"] for r in rows if r["peer"]}
    assert "peer: ONNX Runtime defaults" in peers and not any("torch" in p.lower() for p in peers), peers
    assert not any("NNCF" in p or "quantize_static" in p for p in peers) and "quantizing" not in res.stdout, peers

    res = _run(edge_env, "-m", "resnet_edge", "predict", arts.root, tmp_path / "*.png", "--backend", "litert",
               "--precision", "int8", "--json", tmp_path / "pred_litert.json")
    assert res.returncode == 0, res.stderr
    litert = json.loads((tmp_path / "pred_litert.json").read_text())["predictions"]
    assert len(litert) == 20
    assert sum(p["top"][0]["index"] == int(fmnist.test.labels[int(Path(p["file"]).stem)]) for p in litert) >= 17

    res = _run(edge_env, "-m", "resnet_edge", "train", "--preset", "quick", "--out", tmp_path / "ck")
    assert res.returncode == 2 and "pip install 'resnet-edge[train]'" in res.stderr and "Traceback" not in res.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("choice", [[], ["--backend", "litert", "--precision", "int8"]], ids=["auto", "litert-int8"])
def test_serve_without_torch(edge_env, arts, fmnist, choice):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "resnet_edge", "serve", str(arts.root), "--port", str(port), *choice],
                            env=edge_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                    break
            except OSError:
                assert time.time() < deadline, "not ready in 240 s"
                time.sleep(0.5)
        from resnet_edge.images import to_input

        x = to_input(fmnist.test.images[:8].numpy(), arts.spec.mean, arts.spec.std, arts.spec.image_size)
        body = json.dumps({"inputs": [{"name": arts.spec.input_name, "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/resnet18/infer", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            out = json.loads(r.read())["outputs"][0]
        assert out["shape"] == [8, 10]
        predicted = np.asarray(out["data"]).reshape(8, 10).argmax(1)
        assert (predicted == fmnist.test.labels[:8].numpy()).sum() >= 7
    finally:
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, log
    if not choice:
        assert "golden set" in log  # auto chose its variant by parity against the golden set: no torch here
    else:
        assert "litert int8" in log


def test_golden_set_is_hashed_and_an_older_export_is_told_to_re_export(arts, tmp_path):
    entry = arts.manifest.golden
    images, labels, logits = arts.golden()
    assert images.dtype == np.uint8 and images.shape == (entry.n, 28, 28) == (1000, 28, 28)
    assert logits.shape == (1000, 10) and labels.shape == (1000,)
    copy = tmp_path / "arts"
    shutil.copytree(arts.root, copy)
    with np.load(copy / entry.path) as z:
        data = dict(z)
    data["logits"] = data["logits"] + 1.0  # tampered: the hash catches it
    np.savez_compressed(copy / entry.path, **data)
    with pytest.raises(ArtifactMismatch, match="golden.npz does not match the sha256"):
        load_artifacts(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["golden"]
    (copy / "golden.npz").unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "parity", str(copy), "--reference", "golden"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "has no golden set" in res.stderr and "re-export" in res.stderr
    assert "Traceback" not in res.stderr

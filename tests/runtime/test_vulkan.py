"""ncnn's Vulkan compute path (issue 36): on Mesa's software device (llvmpipe) here, whose compute shaders are real
(parity means something, timings do not), and one sentence wherever there is no device to run on."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from resnet_edge.errors import InvalidInput, MissingDependency
from runtime import vulkan

pytest.importorskip("ncnn", reason="ncnn (the edge extra) is not installed")
NO_DEVICE = vulkan.unavailable_reason()
needs_device = pytest.mark.skipif(NO_DEVICE is not None, reason=f"no Vulkan device: {NO_DEVICE}")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "resnet_edge", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


@needs_device
def test_parity_on_the_vulkan_device_fp32_and_fp16_within_their_rows(arts, tmp_path):
    """Both ncnn files on the device, against the PyTorch reference on 300 real test images and random inputs."""
    out = tmp_path / "parity.json"
    proc = _cli("parity", arts.root, "--backend", "ncnn", "--device", "vulkan", "--limit", 300, "--random", 16,
                "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    rows = {r["precision"]: r for r in report["rows"]}
    assert set(rows) == {"fp32", "fp16"} and all("vulkan:0" in r["variant"] for r in rows.values())
    assert rows["fp32"]["real"]["max_rel"] <= 1e-4 and rows["fp32"]["real"]["n"] == 300
    assert rows["fp16"]["real"]["max_rel"] <= 1e-2
    assert all(r["passed"] and r["real"]["top1_agreement"] >= 0.99 for r in rows.values())
    dev = vulkan.device(0)
    assert dev.describe() in " ".join(proc.stdout.split())
    if dev.software:
        assert "timings do not" in proc.stdout


@needs_device
def test_the_export_checks_ncnn_on_the_device_and_records_it(arts):
    """Export ran each ncnn file on Vulkan device 0 too, recorded the device and its driver, and kept the CPU's
    result as the row's (a software device here)."""
    rows = [a for a in arts.manifest.artifacts if a.format == "ncnn"]
    assert {a.precision.value if hasattr(a.precision, "value") else a.precision for a in rows} == {"fp32", "fp16"}
    for a in rows:
        check = a.details["vulkan"]
        assert check["checked"] and check["passed"], check
        assert check["device"]["name"] == vulkan.device(0).name and check["device"]["driver_version"]
        assert check["images"] == (300 if check["device"]["software"] else a.parity.n)
        assert check["parity"]["max_rel"] <= (1e-4 if a.precision == "fp32" else 1e-2)


@needs_device
def test_bad_device_requests_are_one_sentence_and_exit_2(arts):
    for args, said in ((("--gpu-index", 7), "--gpu-index 7 is out of range: this machine has"),
                       (("--backend", "onnxruntime"), "onnxruntime cannot run on Vulkan"),
                       (("--gpu-index", -1), "--gpu-index -1 is out of range")):
        proc = _cli("parity", arts.root, "--device", "vulkan", "--limit", 10, *args)
        assert proc.returncode == 2 and said in " ".join(proc.stderr.split()), proc.stderr
        assert "Traceback" not in proc.stderr
    proc = _cli("predict", arts.root, arts.root / "golden.npz", "--device", "metal")
    assert proc.returncode == 2 and "--device must be cpu, cuda, cuda:N, vulkan or auto" in proc.stderr


def test_no_device_is_one_sentence_that_says_how_to_get_one(arts):
    """No driver (the loader finds no device): parity, predict and serve say so and how to get one, exit 2."""
    import socket

    env = {"VK_ICD_FILENAMES": "/nonexistent/icd.json", "VK_DRIVER_FILES": "/nonexistent/icd.json"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for cmd in (("parity", arts.root, "--device", "vulkan", "--limit", 10),
                ("serve", arts.root, "--backend", "ncnn", "--device", "vulkan", "--port", port)):
        proc = _cli(*cmd, env=env)
        text = " ".join(proc.stderr.split())
        assert proc.returncode == 2 and "apt-get install libvulkan1 mesa-vulkan-drivers" in text, proc.stderr
        assert ("finds no device" in text or "No Vulkan loader" in text) and "Traceback" not in proc.stderr


def test_no_loader_is_one_sentence(monkeypatch):
    import ctypes.util

    vulkan.devices.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    try:
        with pytest.raises(MissingDependency, match=r"No Vulkan loader \(libvulkan.so.1\) is installed here; install"):
            vulkan.device(0)
        assert vulkan.unavailable_reason().startswith("No Vulkan loader")
    finally:
        vulkan.devices.cache_clear()


def test_fp16_on_a_device_without_fp16_storage_is_refused(arts, monkeypatch):
    from runtime.backends.ncnn_backend import NcnnBackend
    from runtime.variants import plan

    plain = vulkan.VulkanDevice(0, "a GPU without fp16", "integrated GPU", 0x13B5, 1, "1.1.0", "1", False, False)
    monkeypatch.setattr(vulkan, "device", lambda index=0: plain)
    param = next(a.path for a in arts.items if a.format == "ncnn" and a.precision == "fp16")
    with pytest.raises(InvalidInput, match="has no fp16 storage; run the fp32 file on it"):
        NcnnBackend(arts.spec, param, precision="fp16", device="vulkan").load()
    variants, skipped = plan(arts, ["ncnn"], device="vulkan")
    assert [v.precision for v in variants] == ["fp32"]
    assert any("has no fp16 storage" in line for line in skipped)


def test_ncnn_device_lines_are_parsed():
    said = ("[0 llvmpipe (LLVM 15.0.6, 256 bits)]  queueC=0[1]  queueT=0[1]\n"
            "[0 llvmpipe (LLVM 15.0.6, 256 bits)]  fp16-p/s/u/a=1/1/1/1  int8-p/s/u/a=1/1/1/1\n"
            "[1 Mali-G52]  fp16-p/s/u/a=1/1/0/0  int8-p/s/u/a=1/1/1/1\n")
    assert vulkan.parse_fp16(said) == {0: (True, True), 1: (True, False)}


@needs_device
def test_a_silent_fall_back_to_the_cpu_is_reported(arts, tmp_path):
    """ncnn computes on the CPU without a word where its Vulkan device is gone; the backend says it fell back and
    parity fails the row rather than report CPU numbers as the device's."""
    script = textwrap.dedent(f"""
        import numpy as np
        from runtime import vulkan
        from runtime.spec import load_artifacts
        from runtime.parity import run_parity, choose_reference
        from runtime.variants import Variant
        gone = vulkan.VulkanDevice(0, "a device that went away", "discrete GPU", 0x10DE, 1, "1.3.0", "1", True, True)
        vulkan.device = lambda index=0: gone  # as if it had been listed, then ncnn finds none
        arts = load_artifacts({str(arts.root)!r})
        art = next(a for a in arts.items if a.format == "ncnn" and a.precision == "fp32")
        v = Variant("ncnn", art.path, "fp32", "ncnn fp32 vulkan:0", {{"device": "vulkan"}}, art)
        with v.create(arts) as b:
            assert b.fell_back and "having fallen back" in b.describe(), b.describe()
        ref = choose_reference(arts, use="golden", limit=20)
        (row,) = run_parity(arts, [v], ref, n_random=0).rows
        assert not row.passed and any("fell back to the CPU" in f for f in row.real.failures), row.real.failures
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VK_ICD_FILENAMES": "/nonexistent/icd.json",
                               "VK_DRIVER_FILES": "/nonexistent/icd.json"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


@needs_device
def test_serve_on_the_vulkan_device_answers_tritonclient_and_16_clients(arts, tmp_path):
    import socket
    import time
    import urllib.request

    import tritonclient.http as httpclient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "resnet_edge", "serve", str(arts.root), "--backend", "ncnn",
                             "--device", "vulkan", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        images, labels, logits = arts.golden()
        from resnet_edge.images import to_input

        x = to_input(images[:8], arts.spec.mean, arts.spec.std, arts.spec.image_size)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        meta = client.get_model_metadata(arts.spec.name)
        assert "vulkan:0" in meta["platform"], meta
        inp = httpclient.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        out = client.infer(arts.spec.name, [inp]).as_numpy("logits")
        np.testing.assert_allclose(out, logits[:8], rtol=0, atol=1e-4 * np.abs(logits[:8]).max())
        report = tmp_path / "load.json"
        run = _cli("loadtest", f"http://127.0.0.1:{port}", "--concurrency", 16, "--duration", "2s", "--json", report)
        assert run.returncode == 0, run.stderr
        (level,) = json.loads(report.read_text())["levels"]
        assert level["errors"] == 0 and level["requests"] >= 16
    finally:
        proc.terminate()
        proc.wait(timeout=60)

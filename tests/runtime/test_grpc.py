"""KServe v2 over gRPC on a real socket, driven by the stock tritonclient.grpc and by the raw stub."""

import json
import time
import urllib.request

import numpy as np
import pytest

from tests.runtime.test_serve import KEY, _free_port, _reference, _start, _stop

grpc = pytest.importorskip("grpc", reason="grpcio (a runtime dependency) is not installed")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (a runtime dependency) is not installed")
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(arts):
    grpc_port = _free_port()
    proc, http_port = _start(arts, "--api-key", KEY, "--grpc-port", str(grpc_port), "--max-queue-delay-us", "2000")
    yield http_port, grpc_port
    _stop(proc)


def _client(server):
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server[1]}")


def _input(x, name="images", datatype="FP32"):
    inp = grpcclient.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return inp


def test_stock_grpc_client_health_metadata_infer_and_classification(server, arts):
    from runtime.preprocess import load_test_inputs

    client = _client(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("resnet18", headers=AUTH)
    meta = client.get_model_metadata("resnet18", headers=AUTH)
    assert list(meta.inputs[0].shape) == [-1, 1, 28, 28] and meta.outputs[0].name == "logits"
    assert "classification" in client.get_server_metadata(headers=AUTH).extensions
    x, _ = load_test_inputs(arts.spec, 6)
    ref = _reference(arts, x)
    result = client.infer("resnet18", [_input(x)], headers=AUTH)  # raw_input_contents / raw_output_contents
    assert np.allclose(result.as_numpy("logits"), ref, atol=1e-5)
    out = grpcclient.InferRequestedOutput("logits", class_count=3)
    top = client.infer("resnet18", [_input(x)], outputs=[out], headers=AUTH, model_version="1").as_numpy("logits")
    value, index, label = top[0, 0].decode().split(":")
    assert top.shape == (6, 3) and int(index) == ref[0].argmax() and label == arts.spec.class_names[int(index)]
    assert float(value) == pytest.approx(ref[0].max(), rel=1e-5)
    out = grpcclient.InferRequestedOutput("logits", class_count=50)  # more than exist: all 10, as Triton
    assert client.infer("resnet18", [_input(x)], outputs=[out], headers=AUTH).as_numpy("logits").shape == (6, 10)


def _raw_request(x_bytes, shape, datatype="FP32", name="images", model="resnet18", version=""):
    from tritonclient.grpc import service_pb2 as pb

    req = pb.ModelInferRequest(model_name=model, model_version=version)
    req.inputs.add(name=name, datatype=datatype, shape=shape)
    req.raw_input_contents.append(x_bytes)
    return req


def _stub(server):
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{server[1]}"))


ONE = np.zeros((1, 1, 28, 28), np.float32)


@pytest.mark.parametrize(("request_args", "metadata", "code", "message"), [
    ((ONE.tobytes(), [1, 1, 28, 28]), (), "UNAUTHENTICATED", "needs 'authorization: Bearer"),
    ((ONE.tobytes(), [1, 1, 28, 28]), (("authorization", "Bearer wrong"),), "UNAUTHENTICATED", "token is wrong"),
    ((ONE.tobytes(), [1, 1, 28, 28], "FP32", "images", "nope"), None, "NOT_FOUND", "Unknown model 'nope'"),
    ((ONE.tobytes(), [1, 1, 28, 28], "FP32", "images", "resnet18", "7"), None, "NOT_FOUND", "Unknown version '7'"),
    ((ONE.astype(np.float64).tobytes(), [1, 1, 28, 28], "FP64"), None, "INVALID_ARGUMENT", "datatype must be FP32"),
    ((ONE.tobytes(), [1, 1, 28, 27]), None, "INVALID_ARGUMENT", "shape must be [N, 1, 28, 28]"),
    ((ONE.tobytes()[:-4], [1, 1, 28, 28]), None, "INVALID_ARGUMENT", "needs 3136 bytes"),
    ((np.full_like(ONE, np.nan).tobytes(), [1, 1, 28, 28]), None, "INVALID_ARGUMENT", "NaN or Inf"),
    ((np.zeros((65, 1, 28, 28), np.float32).tobytes(), [65, 1, 28, 28]), None, "INVALID_ARGUMENT", "maximum of 64"),
])
def test_bad_requests_get_the_matching_status_and_the_next_request_succeeds(server, request_args, metadata, code,
                                                                          message):
    stub = _stub(server)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(_raw_request(*request_args), metadata=tuple(AUTH.items()) if metadata is None else metadata)
    assert info.value.code().name == code and message in info.value.details()
    ok = stub.ModelInfer(_raw_request(ONE.tobytes(), [1, 1, 28, 28]), metadata=tuple(AUTH.items()))
    assert ok.outputs[0].name == "logits" and len(ok.raw_output_contents[0]) == 40


def _batches_run(server) -> float:
    req = urllib.request.Request(f"http://127.0.0.1:{server[0]}/metrics", headers={"Authorization": f"Bearer {KEY}"})
    text = urllib.request.urlopen(req).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("resnet_edge_batch_size_count "))


def test_a_client_that_gives_up_leaves_no_work_queued(arts):
    grpc_port = _free_port()
    proc, http_port = _start(arts, "--grpc-port", str(grpc_port), "--max-queue-delay-us", "600000")
    try:
        server = (http_port, grpc_port)
        before = _batches_run(server)
        with pytest.raises(grpc.RpcError) as info:  # the batcher would wait 0.6 s for company; the client 0.15 s
            _stub(server).ModelInfer(_raw_request(ONE.tobytes(), [1, 1, 28, 28]), timeout=0.15)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.0)
        assert _batches_run(server) == before  # the abandoned request never reached the backend
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready").read())
        assert health == {"ready": True}
    finally:
        _stop(proc)


def _loadtest(server, *args, auth=True):
    import subprocess
    import sys

    extra = ["--api-key", KEY] if auth else []
    return subprocess.run([sys.executable, "-m", "resnet_edge", "loadtest", f"http://127.0.0.1:{server[0]}",
                           "--duration", "1s", *extra, *args], capture_output=True, text=True, timeout=120)


def test_loadtest_over_grpc_closed_loop(server, tmp_path):
    res = _loadtest(server, "--protocol", "grpc", "--grpc-url", f"127.0.0.1:{server[1]}", "--concurrency", "1,4",
                    "--json", str(tmp_path / "g.json"))
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["protocol"] == "grpc" and [lv["concurrency"] for lv in report["levels"]] == [1, 4]
    assert all(lv["errors"] == 0 and lv["requests"] > 10 for lv in report["levels"])


def test_loadtest_open_loop_poisson_rate(server, tmp_path):
    res = _loadtest(server, "--rate", "150", "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    (level,) = json.loads((tmp_path / "r.json").read_text())["levels"]
    assert level["rate"] == 150 and level["errors"] == 0
    assert 90 <= level["requests"] <= 220  # Poisson arrivals at 150/s for 1 s, whatever the server's speed
    assert "offered req/s" in res.stdout


def test_loadtest_grpc_without_its_url_is_one_sentence(server):
    res = _loadtest(server, "--protocol", "grpc")
    assert res.returncode == 2 and "needs --grpc-url" in res.stderr and "Traceback" not in res.stderr


def test_sigterm_after_grpc_and_http_load_drains_and_exits_0(arts):
    # With --backend auto, gRPC and a 64-client load, SIGTERM used to kill the server with SIGSEGV in 6 of 7
    # runs: the signal handler overflowed a small alternate signal stack (see serving/server.py).
    import signal

    grpc_port = _free_port()
    proc, http_port = _start(arts, "--backend", "auto", "--grpc-port", str(grpc_port))
    try:
        server = (http_port, grpc_port)
        for args in (("--protocol", "grpc", "--grpc-url", f"127.0.0.1:{grpc_port}"), ("--json-payload",)):
            res = _loadtest(server, "--concurrency", "64", "--duration", "3s", *args, auth=False)
            assert res.returncode == 0, res.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()



def test_loadtest_drives_any_model_from_its_metadata_with_synthetic_inputs(server, tmp_path):
    """Issue 35, item 15: no dataset, no artifacts: inputs of the model's shape and value range, and the report says
    they are synthetic."""
    import numpy as np
    import pytest

    from resnet_edge.errors import InvalidInput
    from runtime.lab.load_inputs import request_images

    res = _loadtest(server, "--synthetic", "--concurrency", "2", "--json", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["inputs"].startswith("synthetic: random 1-channel 28 px images") and "synthetic" in res.stdout
    assert report["levels"][0]["errors"] == 0 and report["levels"][0]["requests"] > 5
    rgb = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
           "parameters": {"preprocessing": {"channels": 3, "source_size": 36, "source_resize": 41, "image_size": 32,
                                            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}}
    x, source = request_images(rgb, None, None, 8)  # a 3-channel folder model: no Fashion-MNIST needed
    assert x.shape == (8, 3, 32, 32) and x.dtype == np.float32 and source.startswith("synthetic: random 3-channel")
    assert -2.1 <= x.min() < -1.9 and 1.9 < x.max() <= 2.1  # [0, 255] through its mean and std: its value range
    generic = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]}  # any KServe v2 server
    x, source = request_images(generic, None, None, 4)
    assert x.shape == (4, 3, 224, 224) and "no preprocessing" in source
    with pytest.raises(InvalidInput, match="loadtest sends FP32"):
        request_images({"inputs": [{"name": "x", "datatype": "INT8", "shape": [-1, 3, 8, 8]}]}, None, None, 4)


def _hostile_grpc_requests():
    """Malformed ModelInferRequests: every field's wrong type, size, count and value (issue 35, item 8)."""
    from tritonclient.grpc import service_pb2 as pb

    good = ONE.tobytes()
    out = []
    for shape in ([1, 1, 28], [0, 1, 28, 28], [-1, 1, 28, 28], [2**62, 1, 28, 28], [1, 1, 28, 28, 1], [],
                  [1, 3, 28, 28], [1, 1, 2**31, 28]):
        out.append(_raw_request(good, shape))
    for datatype in ("", "INT8", "BYTES", "FP16", "fp32", "x" * 10_000):
        out.append(_raw_request(good, [1, 1, 28, 28], datatype))
    for name in ("", "x" * 100_000, "images\n", "IMAGES"):
        out.append(_raw_request(good, [1, 1, 28, 28], name=name))
    for model, version in (("", ""), ("m" * 100_000, ""), ("resnet18", "v" * 10_000), ("resnet18", "-1")):
        out.append(_raw_request(good, [1, 1, 28, 28], model=model, version=version))
    for data in (b"", good[:7], good + b"\0", b"\xff" * len(good), np.full_like(ONE, np.inf).tobytes()):
        out.append(_raw_request(data, [1, 1, 28, 28]))
    two = _raw_request(good, [1, 1, 28, 28])
    two.raw_input_contents.append(good)  # two tensors for one input
    out.append(two)
    extra = _raw_request(good, [1, 1, 28, 28])
    extra.inputs.add(name="other", datatype="FP32", shape=[1, 1, 28, 28])
    out.append(extra)
    empty = pb.ModelInferRequest(model_name="resnet18")
    out.append(empty)
    contents = pb.ModelInferRequest(model_name="resnet18")
    contents.inputs.add(name="images", datatype="FP32", shape=[1, 1, 28, 28]).contents.fp32_contents.extend([0.0] * 7)
    out.append(contents)
    for outputs in (["logits", "logits"], ["logits"] * 500, ["nope"], [""]):
        req = _raw_request(good, [1, 1, 28, 28])
        for name in outputs:
            req.outputs.add(name=name)
        out.append(req)
    for param in ({"int64_param": -1}, {"bool_param": True}, {"string_param": "3"}, {"double_param": 3.0}):
        req = _raw_request(good, [1, 1, 28, 28])
        o = req.outputs.add(name="logits")
        for k, v in param.items():
            setattr(o.parameters["classification"], k, v)
        out.append(req)
    return out


def test_hostile_grpc_requests_get_client_errors_and_the_server_stays_healthy(server):
    stub = _stub(server)
    corpus = _hostile_grpc_requests()
    codes = []
    for req in corpus:
        try:
            stub.ModelInfer(req, metadata=tuple(AUTH.items()), timeout=30)
            codes.append("OK")
        except grpc.RpcError as exc:
            codes.append(exc.code().name)
            assert len(exc.details() or "") < 1000, exc.details()[:200]  # nothing echoed whole
    assert not {"INTERNAL", "UNKNOWN", "UNAVAILABLE"} & set(codes), list(zip(codes, range(len(codes))))
    odd = [(i, c) for i, c in enumerate(codes) if c not in ("INVALID_ARGUMENT", "NOT_FOUND")]
    assert not odd, odd
    ok = stub.ModelInfer(_raw_request(ONE.tobytes(), [1, 1, 28, 28]), metadata=tuple(AUTH.items()))
    assert len(ok.raw_output_contents[0]) == 40
    # a huge class count is not an error: as Triton, it returns every class
    req = _raw_request(ONE.tobytes(), [1, 1, 28, 28])
    req.outputs.add(name="logits").parameters["classification"].int64_param = 2**62
    every = stub.ModelInfer(req, metadata=tuple(AUTH.items()))
    assert list(every.outputs[0].shape) == [1, 10]

"""The server on a real socket, driven by Triton's own HTTP client and by raw HTTP."""

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from runtime import backends

pytest.importorskip("uvicorn", reason="uvicorn (a runtime dependency) is not installed")
KEY = "s3cret-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(arts, *args):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "resnet_edge", "serve", str(arts.root), "--backend", "onnxruntime",
                             "--port", str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read())
    proc.kill()
    raise RuntimeError("server did not become ready")


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(arts):
    proc, port = _start(arts, "--api-key", KEY, "--max-queue-delay-us", "3000", "--max-body-mb", "2")
    yield port
    _stop(proc)


def _http(port, path, body=None, headers=None, method=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {KEY}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _infer_body(x):
    return json.dumps({"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def _reference(arts, x):
    with backends.create("onnxruntime", arts.spec, arts.find("onnx", "fp32").path) as b:
        return b.infer(x)


def test_stock_triton_client_binary_json_and_classification(server, arts, fmnist):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server}")
    def auth():  # a fresh dict each call: tritonclient adds Inference-Header-Content-Length to the one it gets
        return {"Authorization": f"Bearer {KEY}"}

    assert client.is_server_live() and client.is_model_ready("resnet18", headers=auth())
    meta = client.get_model_metadata("resnet18", headers=auth())
    assert meta["inputs"][0]["shape"] == [-1, 1, 28, 28] and meta["versions"] == ["1"]
    from runtime.preprocess import load_test_inputs

    x, labels = load_test_inputs(arts.spec, 5)
    ref = _reference(arts, x)
    for binary in (True, False):
        inp = httpclient.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("logits", binary_data=binary)
        result = client.infer("resnet18", [inp], outputs=[out], headers=auth())
        assert np.allclose(result.as_numpy("logits"), ref, atol=1e-5)
    out = httpclient.InferRequestedOutput("logits", binary_data=True, class_count=20)  # more than exist
    everything = client.infer("resnet18", [inp], outputs=[out], headers=auth()).as_numpy("logits")
    assert everything.shape == (5, 10)  # clamped to the class count, as Triton does
    out = httpclient.InferRequestedOutput("logits", binary_data=True, class_count=3)
    result = client.infer("resnet18", [inp], outputs=[out], headers=auth(), model_version="1")
    top = result.as_numpy("logits")
    assert top.shape == (5, 3)
    first = top[0, 0].decode() if isinstance(top[0, 0], bytes) else top[0, 0]
    value, index, label = first.split(":")
    assert int(index) == ref[0].argmax() and label == arts.spec.class_names[int(index)]
    assert float(value) == pytest.approx(ref[0].max(), rel=1e-5)


def test_auth_health_is_public_everything_else_needs_the_token(server):
    for path in ("/v2/health/live", "/v2/health/ready"):
        with urllib.request.urlopen(f"http://127.0.0.1:{server}{path}") as r:
            assert r.status == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        req = urllib.request.Request(f"http://127.0.0.1:{server}/v2/models/resnet18", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req)
        assert info.value.code == 401 and "error" in json.loads(info.value.read())
    assert _http(server, "/metrics")[0] == 200


@pytest.mark.parametrize(("body", "headers", "status", "message"), [
    ({"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP64", "data": [0] * 784}]}, {}, 400, "FP32"),
    ({"inputs": [{"name": "images", "shape": [1, 1, 28, 27], "datatype": "FP32", "data": [0] * 756}]}, {}, 400, "shape"),
    ({"inputs": [{"name": "images", "shape": [65, 1, 28, 28], "datatype": "FP32", "data": [0]}]}, {}, 400, "maximum of 64"),
    ({"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [float("nan")] * 784}]},
     {}, 400, "NaN"),
    (b"{not json", {}, 400, "not valid JSON"),
    (b'{"inputs": []}xxxx', {"Inference-Header-Content-Length": "500"}, 400, "does not fit"),
    ({"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32",
                  "parameters": {"binary_data_size": 3136}}]}, {}, 400, "do not match"),
])
def test_bad_requests_get_json_errors_and_the_server_keeps_serving(server, arts, body, headers, status, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    code, _, resp = _http(server, "/v2/models/resnet18/infer", raw, headers)
    assert code == status and message in json.loads(resp)["error"]
    x = np.zeros((1, 1, 28, 28), np.float32)
    assert _http(server, "/v2/models/resnet18/infer", _infer_body(x))[0] == 200


def test_unknown_model_version_route_and_oversized_body(server):
    assert _http(server, "/v2/models/nope/infer", b"{}")[0] == 404
    assert _http(server, "/v2/models/resnet18/versions/7/infer", b"{}")[0] == 404
    assert _http(server, "/v2/models/resnet18/versions/7")[0] == 404
    assert _http(server, "/v3/whatever")[0] == 404
    code, _, resp = _http(server, "/v2/models/resnet18/infer", b"0" * (3 * 2**20))
    assert code == 413 and "limit" in json.loads(resp)["error"]


def test_classify_endpoint_raw_multipart_and_bad_image(server, fmnist, tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(fmnist.test.images[0].numpy()).save(buf, format="PNG")
    code, _, resp = _http(server, "/v1/classify?k=2", buf.getvalue(), {"Content-Type": "image/png"})
    preds = json.loads(resp)["predictions"]
    assert code == 200 and len(preds) == 2 and preds[0]["probability"] >= preds[1]["probability"]
    boundary = "xyzBOUNDARY"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    code, _, resp2 = _http(server, "/v1/classify?k=2", form, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert code == 200 and json.loads(resp2)["predictions"] == preds
    code, _, resp = _http(server, "/v1/classify", b"definitely not an image")
    assert code == 400 and "cannot be decoded" in json.loads(resp)["error"]


def test_dynamic_batching_merges_requests_and_returns_each_its_own_rows(server, arts):
    from runtime.preprocess import load_test_inputs

    x, _ = load_test_inputs(arts.spec, 24)
    ref = _reference(arts, x)

    def metric(name):
        text = _http(server, "/metrics")[2].decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    batches_before = metric("resnet_edge_batch_size_count")
    results = [None] * 12
    barrier = threading.Barrier(12)

    def call(i):
        barrier.wait()
        code, _, body = _http(server, "/v2/models/resnet18/infer", _infer_body(x[2 * i:2 * i + 2]))
        results[i] = (code, np.array(json.loads(body)["outputs"][0]["data"], np.float32).reshape(2, 10))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (code, logits) in enumerate(results):
        assert code == 200 and np.allclose(logits, ref[2 * i:2 * i + 2], atol=1e-5)
    executed = metric("resnet_edge_batch_size_count") - batches_before
    assert executed < 12  # some requests shared a batch


def test_queue_bound_503_with_retry_after_and_request_timeout(arts):
    proc, port = _start(arts, "--max-queue", "1", "--max-queue-delay-us", "400000", "--request-timeout", "150ms")
    try:
        x = _infer_body(np.zeros((1, 1, 28, 28), np.float32))
        results = []
        threads = [threading.Thread(target=lambda: results.append(_http(port, "/v2/models/resnet18/infer", x)))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(code for code, _, _ in results)
        assert 503 in codes and 504 in codes
        busy = next(h for code, h, _ in results if code == 503)
        assert {k.lower(): v for k, v in busy.items()}.get("retry-after") == "1"
        assert "did not finish within" in next(json.loads(b)["error"] for c, _, b in results if c == 504)
    finally:
        _stop(proc)


def test_sigterm_finishes_in_flight_refuses_new_and_exits_0(arts):
    proc, port = _start(arts, "--max-queue-delay-us", "1500000", "--max-batch-size", "8")
    x = _infer_body(np.zeros((1, 1, 28, 28), np.float32))
    first = {}
    t = threading.Thread(target=lambda: first.update(r=_http(port, "/v2/models/resnet18/infer", x)))
    t.start()
    time.sleep(0.4)  # the request now waits in the batcher
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    code, headers, body = _http(port, "/v2/models/resnet18/infer", x)
    ready = _http(port, "/v2/health/ready")
    t.join()
    assert first["r"][0] == 200  # in flight: completed
    assert code == 503 and "shutting down" in json.loads(body)["error"]
    assert ready[0] == 503 and json.loads(ready[2]) == {"ready": False, "reason": "the server is shutting down"}
    assert ready[1]["retry-after"] == "1"
    assert proc.wait(timeout=30) == 0


def _asgi(app, method, path, body=b""):
    """One request straight through the ASGI interface (no HTTP client library involved)."""
    import asyncio

    status, messages = asyncio.run(_asgi_async(app, method, path, body))
    return status, json.loads(b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"))


def test_not_ready_is_503(arts):
    from runtime.serving.app import ServerState, create_app
    from runtime.serving.batcher import DynamicBatcher
    from runtime.serving.metrics import Metrics

    state = ServerState(spec=arts.spec, model_name="resnet18", platform="x", batcher=DynamicBatcher(lambda b: b),
                        metrics=Metrics(8), max_batch_size=8, max_body_bytes=1 << 20, request_timeout_s=1.0)
    app = create_app(state)  # lifespan never ran: the model is not loaded
    assert _asgi(app, "GET", "/v2/health/ready") == (503, {"ready": False, "reason": "the model is still loading"})
    status, body = _asgi(app, "POST", "/v2/models/resnet18/infer", b"{}")
    assert status == 503 and "still loading" in body["error"]


def _probe_lane(state):
    """The server's HTTP protocol on a fake transport: what it writes, and the ASGI tasks it starts."""
    import uvicorn
    from uvicorn.server import ServerState as UvicornState

    from runtime.serving.app import create_app
    from runtime.serving.probes import http_protocol

    class Transport(asyncio.Transport):
        def __init__(self):
            super().__init__()
            self.data, self.closed = b"", False

        def write(self, data):
            self.data += data

        def close(self):
            self.closed = True

        def is_closing(self):
            return self.closed

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

        def get_extra_info(self, name, default=None):
            return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    protocol_class = http_protocol(state)
    config = uvicorn.Config(create_app(state), http=protocol_class, lifespan="off", log_level="warning")
    config.load()
    loop = asyncio.new_event_loop()
    protocol = protocol_class(config, UvicornState(), {}, loop)
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport, loop


def test_health_probes_are_answered_in_the_callback_that_read_them(arts):
    """GET /v2/health/* is answered while the bytes are parsed, before the event loop runs anything queued
    (under load: every other request's handler); keep-alive, pipelining, 503 and other routes still hold."""
    from runtime.serving.app import ServerState
    from runtime.serving.batcher import DynamicBatcher
    from runtime.serving.metrics import Metrics

    state = ServerState(spec=arts.spec, model_name="resnet18", platform="x", batcher=DynamicBatcher(lambda b: b),
                        metrics=Metrics(8), max_batch_size=8, max_body_bytes=1 << 20, request_timeout_s=1.0)
    protocol, transport, loop = _probe_lane(state)
    try:
        # Two pipelined probes in one read: both answered in order, on the spot; the connection stays open.
        protocol.data_received(b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                               b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first, second = transport.data.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"503 ") and b"retry-after: 1" in first
        assert first.endswith(b'{"ready": false, "reason": "the model is still loading"}')
        assert second.startswith(b"200 ") and second.endswith(b'{"live":true}') and not transport.closed
        assert not protocol.tasks  # nothing was handed to the app
        state.ready, transport.data = True, b""
        protocol.data_received(b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert transport.data.startswith(b"HTTP/1.1 200 OK") and transport.data.endswith(b'{"ready":true}')
        # Any other route goes to the app: a task, nothing written yet, and no keep-alive timer over it (a probe
        # answered just before it, in the same packet, armed one).
        transport.data = b""
        protocol.data_received(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                               b"GET /v2/models/resnet18 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert transport.data.endswith(b'{"live":true}') and len(protocol.tasks) == 1
        assert protocol.timeout_keep_alive_task is None
        transport.data = b""
        loop.run_until_complete(asyncio.gather(*list(protocol.tasks)))
        assert transport.data.startswith(b"HTTP/1.1 200 OK") and b'"name":"resnet18"' in transport.data
        # A client that asks to close gets its answer and a closed connection.
        transport.data = b""
        protocol.data_received(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert b"connection: close" in transport.data and transport.data.endswith(b'{"live":true}') and transport.closed
    finally:
        loop.close()
    counts = state.metrics.exposition(0)[0].decode()
    assert 'request_duration_seconds_count{endpoint="live"} 3.0' in counts  # probes are counted as before
    assert 'request_duration_seconds_count{endpoint="ready"} 2.0' in counts


def test_any_number_of_pipelined_probes_is_answered_without_recursion(arts):
    """One packet: a request for the app, then 10,000 pipelined probes. Each probe answered starts the next;
    that chain once recursed (a RecursionError after ~600 and a closed connection)."""
    from runtime.serving.app import ServerState
    from runtime.serving.batcher import DynamicBatcher
    from runtime.serving.metrics import Metrics

    state = ServerState(spec=arts.spec, model_name="resnet18", platform="x", batcher=DynamicBatcher(lambda b: b),
                        metrics=Metrics(8), max_batch_size=8, max_body_bytes=1 << 20, request_timeout_s=1.0)
    protocol, transport, loop = _probe_lane(state)
    try:
        protocol.data_received(b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                               + b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 10_000)
        assert len(protocol.tasks) == 1 and transport.data == b""  # the probes wait behind the app's answer
        loop.run_until_complete(asyncio.gather(*list(protocol.tasks)))
        answers = transport.data.split(b"HTTP/1.1 ")[1:]
        assert len(answers) == 10_001 and b'"name":"resnet-edge"' in answers[0]
        assert all(a.startswith(b"200 ") and a.endswith(b'{"live":true}') for a in answers[1:])
        assert not transport.closed and not protocol.pipeline
    finally:
        loop.close()


def test_loadtest_cli_against_the_server(server, tmp_path):
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "loadtest", f"http://127.0.0.1:{server}",
                          "--concurrency", "1,4", "--duration", "1s", "--api-key", KEY, "--json", str(tmp_path / "l.json"),
                          "--csv", str(tmp_path / "l.csv")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    levels = json.loads((tmp_path / "l.json").read_text())["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 4]
    assert all(lv["errors"] == 0 and lv["requests"] > 10 and lv["p50_ms"] <= lv["p99_ms"] for lv in levels)
    assert all(lv["health_p99_ms"] > 0 for lv in levels)  # health was probed during every level
    assert (tmp_path / "l.csv").read_text().startswith("concurrency,")


def test_loadtest_unreachable_server_is_one_sentence():
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "loadtest", f"http://127.0.0.1:{_free_port()}",
                          "--duration", "1s"], capture_output=True, text=True)
    assert res.returncode == 2 and "Cannot reach" in res.stderr and "Traceback" not in res.stderr


def test_auto_backend_picks_the_fastest_variant_that_passed_parity(arts, monkeypatch):
    import runtime.parity as parity_mod
    import runtime.select as select
    from runtime.serving.server import ServeConfig, choose_variant

    real_parity, timed, checked = parity_mod.run_parity, {}, []

    def parity_failing_fastest(arts_, variants, *args, **kwargs):
        checked.extend((v.backend, v.source.name) for v in variants)
        report = real_parity(arts_, variants, *args, **kwargs)
        for row in report.rows:
            if row.variant == "onnxruntime int8":  # pretend it failed parity here: it must not be chosen
                row.real = parity_mod.ParityResult(1, 1, 0, 0, 0, 0, 1, ("made to fail",))
        return report

    def speed(backend, batch):  # what the timing would find: ORT int8 fastest, then ORT fp16, then the rest
        key = (backend.name, backend.source.name)
        timed[key] = {("onnxruntime", "resnet18_int8.onnx"): 1.0, ("onnxruntime", "resnet18_fp16.onnx"): 2.0}.get(key, 3.0)
        return timed[key]

    monkeypatch.setattr(parity_mod, "run_parity", parity_failing_fastest)
    monkeypatch.setattr(select, "median_latency_s", speed)
    chosen = choose_variant(arts, ServeConfig(artifacts=arts.root, backend="auto"))
    assert len(timed) >= 3 and (chosen.backend, chosen.tag) == ("onnxruntime", "fp16")  # fastest of those that passed
    # parity in order of speed until one passes: the fastest (failed), then the next; the slower ones not at all
    assert checked == [("onnxruntime", "resnet18_int8.onnx"), ("onnxruntime", "resnet18_fp16.onnx")]


def test_explicit_backend_and_unknown_precision(arts):
    from resnet_edge.errors import InvalidInput
    from runtime.serving.server import ServeConfig, choose_variant

    chosen = choose_variant(arts, ServeConfig(backend="onnxruntime", precision="int8"))
    assert (chosen.backend, chosen.precision, chosen.target) == ("onnxruntime", "int8", "any")
    if arts.find("onnx", "int8", "cpu"):  # kept by the export only where it met its parity bound
        chosen = choose_variant(arts, ServeConfig(backend="openvino", precision="int8-cpu"))
        assert (chosen.backend, chosen.precision, chosen.target) == ("openvino", "int8", "cpu")
    else:
        with pytest.raises(InvalidInput, match="no 'int8-cpu' variant"):
            choose_variant(arts, ServeConfig(backend="onnxruntime", precision="int8-cpu"))
    with pytest.raises(InvalidInput, match="has no 'fp64' variant"):
        choose_variant(arts, ServeConfig(backend="onnxruntime", precision="fp64"))
    chosen = choose_variant(arts, ServeConfig(backend="torch", precision="fp32"))  # matched on fields, not labels
    assert (chosen.backend, chosen.precision) == ("torch", "fp32")


def test_serve_with_the_torch_backend(arts):
    proc, port = _start(arts, "--backend", "torch", "--precision", "fp32", "--api-key", KEY)
    try:
        from runtime.preprocess import load_test_inputs

        x, _ = load_test_inputs(arts.spec, 3)
        code, _, body = _http(port, "/v2/models/resnet18/infer", _infer_body(x))
        assert code == 200
        logits = np.array(json.loads(body)["outputs"][0]["data"], np.float32).reshape(3, 10)
        ref = _reference(arts, x)
        assert np.abs(logits - ref).max() <= 1e-4 * np.abs(ref).max()
        assert "torch" in json.loads(_http(port, "/v2/models/resnet18")[2])["platform"]
    finally:
        _stop(proc)


def test_a_backend_that_cannot_load_is_logged_and_the_server_exits_non_zero(arts, tmp_path):
    import shutil

    from resnet_edge.atomic import sha256_file
    from runtime.contract import MANIFEST

    copy = tmp_path / "a"
    shutil.copytree(arts.root, copy, ignore=shutil.ignore_patterns("triton"))
    (copy / "resnet18_fp32.onnx").write_bytes(b"not an onnx model at all")  # and the manifest agrees with it:
    manifest = json.loads((copy / MANIFEST).read_text())  # it loads, verifies, and fails only in the backend
    for a in manifest["artifacts"]:
        if a["path"] == "resnet18_fp32.onnx":
            a["sha256"] = sha256_file(copy / a["path"])
    (copy / MANIFEST).write_text(json.dumps(manifest))
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "serve", str(copy), "--backend", "onnxruntime",
                          "--port", str(_free_port())], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "cannot serve: The onnxruntime backend could not load resnet18_fp32.onnx" in res.stderr
    assert "Traceback" not in res.stderr


def test_large_bodies_are_parsed_off_the_event_loop(arts, monkeypatch):
    import asyncio
    import threading

    import runtime.serving.app as app_mod
    from runtime.serving.app import ServerState, create_app
    from runtime.serving.batcher import DynamicBatcher
    from runtime.serving.metrics import Metrics

    threads = {}
    parse = app_mod.parse_infer

    def spy(*args):
        threads.setdefault("parse", []).append(threading.current_thread())
        return parse(*args)

    monkeypatch.setattr(app_mod, "parse_infer", spy)
    small = _infer_body(np.zeros((1, 1, 28, 28), np.float32))
    large = _infer_body(np.zeros((32, 1, 28, 28), np.float32))
    assert len(small) < app_mod.INLINE_BYTES < len(large)

    async def main():
        batcher = DynamicBatcher(lambda b: np.zeros((len(b), 10), np.float32))
        state = ServerState(spec=arts.spec, model_name="resnet18", platform="x", batcher=batcher, metrics=Metrics(64),
                            max_batch_size=64, max_body_bytes=8 << 20, request_timeout_s=5.0, ready=True)
        await batcher.start()
        app = create_app(state)
        loop_thread = threading.current_thread()
        for body in (small, large):
            assert (await _asgi_async(app, "POST", "/v2/models/resnet18/infer", body))[0] == 200
        await batcher.stop()
        return loop_thread

    loop_thread = asyncio.run(main())
    assert threads["parse"][0] is loop_thread  # a small body: parsed inline, cheaper than a thread hop
    assert threads["parse"][1] is not loop_thread  # a large one never blocks the loop


async def _asgi_async(app, method, path, body=b""):
    messages = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"content-length", str(len(body)).encode())], "scheme": "http", "http_version": "1.1",
             "server": ("127.0.0.1", 0), "client": ("127.0.0.1", 1), "root_path": "", "app": app}
    await app(scope, receive, send)
    return next(m["status"] for m in messages if m["type"] == "http.response.start"), messages


def test_ready_only_after_every_bucket_ran_and_long_lived_objects_are_frozen(arts):
    import asyncio
    import gc

    from runtime.serving.app import ServerState
    from runtime.serving.batcher import DynamicBatcher
    from runtime.serving.metrics import Metrics
    from runtime.serving.server import _load

    class Recorder:
        static_shapes, buckets = True, (1, 2, 4, 8)

        def __init__(self):
            self.loaded, self.sizes = False, []

        def load(self):
            self.loaded = True

        def infer(self, batch):
            assert self.loaded
            self.sizes.append(len(batch))
            return np.zeros((len(batch), 10), np.float32)

        def describe(self):
            return "recorder"

    backend = Recorder()
    state = ServerState(spec=arts.spec, model_name="resnet18", platform="x", batcher=DynamicBatcher(backend.infer),
                        metrics=Metrics(8), max_batch_size=8, max_body_bytes=1 << 20, request_timeout_s=1.0)
    gc.unfreeze()
    try:
        asyncio.run(_load(SimpleNamespace(backend=backend, load=backend.load), state, arts))  # a Predictor's part
        assert state.ready and state.buckets == (1, 2, 4, 8) and backend.sizes == [1, 2, 4, 8]
        assert gc.get_freeze_count() > 0  # full collections no longer walk the libraries and the model
    finally:
        gc.unfreeze()

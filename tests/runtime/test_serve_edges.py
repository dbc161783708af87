"""The server's edges on real sockets: malformed requests of every kind, clients that disconnect, trickle a
body, hold many connections or send many bodies at once, and the model metadata a generic client needs."""

import io
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.runtime.test_serve import _free_port, _http, _infer_body, _stop

pytest.importorskip("uvicorn", reason="uvicorn (a runtime dependency) is not installed")


def _start_logged(arts, tmp_path, *args):
    """A real `resnet-edge serve`, its log in a file (to look for tracebacks afterwards)."""
    port = _free_port()
    with open(tmp_path / f"serve-{port}.log", "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "resnet_edge", "serve", str(arts.root), "--backend",
                                 "onnxruntime", "--port", str(port), *args], stdout=log, stderr=subprocess.STDOUT,
                                text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, port, tmp_path / f"serve-{port}.log"
        except OSError:
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text()
    proc.kill()
    raise RuntimeError("server did not become ready")


def _raw(port, data: bytes, *, read=True, timeout=10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return _response(s) if read else b""


def _response(s: socket.socket) -> bytes:
    """One whole response (head and body may arrive in separate packets), or what came before the timeout."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
            if _complete(out):
                break
    except TimeoutError:
        pass
    return out


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"content-length: *(\d+)", head, re.I)
    return m is not None and len(body) >= int(m[1])


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def _request(method, path, body=b"", headers=()):
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _malformed_corpus(arts) -> list[bytes]:
    """Over 200 malformed requests: headers, bodies, content types, encodings and shapes, at every endpoint."""
    c, s = arts.spec.channels, arts.spec.image_size
    good = {"name": "images", "shape": [1, c, s, s], "datatype": "FP32", "data": [0.0] * (c * s * s)}
    infer = "/v2/models/resnet18/infer"
    bodies = [b"", b"{", b"[]", b"null", b"\xff\xfe\x00", b'{"inputs": 5}', b'{"inputs": [5]}', b'{"inputs": [{}]}',
              b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000, json.dumps({"inputs": [good, good]}).encode(),
              b'{"inputs": [{"name": "images", "shape": "x", "datatype": "FP32", "data": []}]}', b"NaN", b"1e999999"]
    for field, value in (("name", "nope"), ("name", None), ("datatype", "INT8"), ("datatype", 3), ("shape", [1, c, s]),
                         ("shape", [0, c, s, s]), ("shape", [-1, c, s, s]), ("shape", [10**9, c, s, s]),
                         ("shape", [1.5, c, s, s]), ("shape", [True, c, s, s]), ("data", "abc"), ("data", [[1, 2], [3]]),
                         ("data", {"a": 1}), ("data", [10**400]), ("data", [1e39] * (c * s * s)), ("data", [None]),
                         ("data", [0.0] * 3), ("parameters", [1]), ("parameters", "x"),
                         ("parameters", {"binary_data_size": "x"}), ("parameters", {"binary_data_size": -4})):
        bodies.append(json.dumps({"inputs": [{**good, field: value}]}).encode())
    for extra in ({"outputs": 5}, {"outputs": [5]}, {"outputs": [{"name": "x"}]}, {"parameters": [1]},
                  {"outputs": [{"name": "logits", "parameters": [1]}]},
                  {"outputs": [{"name": "logits", "parameters": {"classification": -1}}]},
                  {"outputs": [{"name": "logits", "parameters": {"classification": "3"}}]}):
        bodies.append(json.dumps({"inputs": [good], **extra}).encode())
    # issue 35: lone surrogates, integers of thousands of digits, strings and booleans where numbers belong,
    # "false" as a flag, outputs repeated, a name of 100 KB
    big = "9" * 5000
    raw_good = json.dumps(good)[:-1]
    templates = ['{"id": "\\ud800", "inputs": [GOOD}]}', '{"inputs": [GOOD, "name": "\\udfff"}]}',
                 '{"inputs": [GOOD}], "outputs": [{"name": "\\ud800x"}]}', '{"id": BIG, "inputs": [GOOD}]}',
                 '{"inputs": [GOOD, "shape": [BIG, 1, 28, 28]}]}', '{"inputs": [GOOD, "data": [BIG]}]}',
                 '{"inputs": [GOOD}], "outputs": [{"name": "logits", "parameters": {"classification": BIG}}]}',
                 '{"inputs": [GOOD}], "parameters": {"binary_data_output": BIG}}']
    bodies += [t.replace("GOOD", raw_good).replace("BIG", big).encode() for t in templates]
    bodies += [json.dumps({"inputs": [{**good, "data": ["1e0"] * (c * s * s)}]}).encode(),
               json.dumps({"inputs": [{**good, "data": [True] * (c * s * s)}]}).encode(),
               json.dumps({"inputs": [good], "parameters": {"binary_data_output": "false"}}).encode(),
               json.dumps({"inputs": [good], "outputs": [{"name": "logits", "parameters": {"binary_data": 1}}]}).encode(),
               json.dumps({"inputs": [good], "outputs": [{"name": "logits"}] * 2}).encode(),
               json.dumps({"inputs": [good], "outputs": [{"name": "logits"}] * 2000}).encode(),
               json.dumps({"inputs": [{**good, "name": "n" * 100_000}]}).encode(),
               json.dumps({"inputs": [good], "id": 5}).encode(),
               json.dumps({"inputs": [good], "id": ["x"]}).encode()]
    requests = []
    for body in bodies:
        for ctype in ("application/json", "application/octet-stream", "text/plain; charset=utf-16"):
            requests.append(_request("POST", infer, body, [f"Content-Type: {ctype}"]))
    for header in ("x", "-5", "0", "99999999", "1.5", ""):
        requests.append(_request("POST", infer, b'{"inputs": []}xxxx', [f"Inference-Header-Content-Length: {header}"]))
    png = io.BytesIO()
    Image.new("L", (1, 20_000), 9).save(png, format="PNG")
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("comment", "0" * (4 << 20), zip=True)  # a 4 KB chunk that inflates past Pillow's limit
    bomb = io.BytesIO()
    Image.new("L", (8, 8)).save(bomb, format="PNG", pnginfo=text)
    huge = io.BytesIO()
    np.lib.format.write_array_header_1_0(huge, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    strings, eps = io.BytesIO(), b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto showpage\n"
    np.save(strings, np.array([["a"] * 28] * 28))
    for body, ctype in ((b"", "image/png"), (b"\x89PNG\r\n\x1a\nbroken", "image/png"), (b"GIF89a", "image/gif"),
                        (b"\x93NUMPY\x01\x00garbage", "application/octet-stream"), (b"abc", "multipart/form-data"),
                        (b"garbage", "multipart/form-data; boundary=xyz"), (b"--\r\n", 'multipart/form-data; boundary="'),
                        (b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--\r\n",
                         "multipart/form-data; boundary=b"),
                        (png.getvalue(), "image/png"), (bomb.getvalue(), "image/png"),
                        (huge.getvalue() + b"\0" * 64, "application/octet-stream"),
                        (strings.getvalue(), "application/octet-stream"), (eps, "application/postscript")):
        for query in ("", "?k=0", "?k=x", "?k=99", "?invert=maybe"):
            requests.append(_request("POST", "/v1/classify" + query, body, [f"Content-Type: {ctype}"]))
    for method, path in (("GET", "/v2/models/nope"), ("GET", "/v2/models/resnet18/versions/7"), ("DELETE", "/v2"),
                         ("GET", "/v2/models/resnet18/versions/x/ready"), ("PUT", infer), ("GET", infer),
                         ("POST", "/v2/models/nope/infer"), ("GET", "/%00"), ("GET", "/v2/models/" + "a" * 5000),
                         ("POST", "/v2/repository/index"), ("GET", "/metrics"), ("GET", "/v2/health/ready")):
        requests.append(_request(method, path))
    for header in ("Content-Type: application/json; charset=latin-1", "Content-Type: ", "Content-Type: ;;;",
                   "Content-Type: multipart/mixed", "Content-Type: image/png", "Content-Type: application/x-npy",
                   "Accept: nothing/else", "Content-Encoding: br", "Expect: 100-continue", "Connection: upgrade",
                   "Inference-Header-Content-Length: 2", "Content-Type: application/json; boundary=x"):
        requests.append(_request("POST", infer, b'\xef\xbb\xbf{"inputs": [{"name": "images"}]}', [header]))
    requests.append(_request("POST", infer, b"{}", ["Authorization: Bearer x"]))
    requests.append(_request("POST", infer, b"{}", ["Content-Encoding: gzip"]))
    requests.append(b"POST " + infer.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n")
    requests.append(b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n")
    requests.append(b"NOT-HTTP\r\n\r\n")
    return requests


def test_hundreds_of_malformed_requests_get_no_5xx_and_leave_no_traceback(arts, tmp_path):
    proc, port, log = _start_logged(arts, tmp_path, "--max-body-mb", "1")
    try:
        corpus = _malformed_corpus(arts)
        assert len(corpus) >= 200
        statuses = []
        for data in corpus:
            response = _raw(port, data)
            statuses.append(_status(response))
            assert _status(response) < 500, (data[:200], response[:400])
        assert statuses.count(400) >= 200  # the bad ones got one sentence each, not silence
        name = json.dumps({"inputs": [{"name": "n" * 100_000, "shape": [1], "datatype": "FP32", "data": [0]}]})
        echoed = _raw(port, _request("POST", "/v2/models/resnet18/infer", name.encode()))
        assert _status(echoed) == 400 and len(echoed) < 1000 and b"(100,000 characters)" in echoed  # cut, not echoed
        x = np.zeros((1, *arts.spec.chw), np.float32)
        status, _, body = _http(port, "/v2/models/resnet18/infer", _infer_body(x))
        assert status == 200 and json.loads(body)["outputs"][0]["shape"] == [1, arts.spec.num_classes]
    finally:
        _stop(proc)
    text = log.read_text()
    assert "Traceback" not in text and "Internal server error" not in text, text[-3000:]
    assert max(map(len, text.splitlines())) < 2000  # no request's content copied whole into a log line


def test_a_client_that_disconnects_is_not_inferred_and_leaves_nothing_in_flight(arts, tmp_path):
    # A lone request waits up to 3 s for others to merge with: the client is gone long before that.
    proc, port, log = _start_logged(arts, tmp_path, "--max-queue-delay-us", "3000000")
    try:
        x = np.zeros((1, *arts.spec.chw), np.float32)
        _raw(port, _request("POST", "/v2/models/resnet18/infer", _infer_body(x)), read=False)  # sends, then closes
        time.sleep(4)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            metrics = r.read().decode()
        assert 'resnet_edge_requests_total{endpoint="infer",status="499"} 1.0' in metrics, metrics
        assert "resnet_edge_batch_size_count 0.0" in metrics  # nothing ran for it
        assert "resnet_edge_queue_depth 0.0" in metrics
        status, _, _ = _http(port, "/v2/models/resnet18/infer", _infer_body(x))
        assert status == 200
    finally:
        _stop(proc)


def test_slow_and_greedy_clients_are_bounded(arts, tmp_path):
    proc, port, log = _start_logged(arts, tmp_path, "--body-timeout", "1s", "--max-connections", "8",
                                    "--max-body-mb", "2", "--max-buffer-mb", "1")
    try:
        path = "/v2/models/resnet18/infer"
        # A body trickled in slower than the deadline: 408, and the handler is free again.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n".encode() + b"{" * 10)
            answer = _response(s)
            assert _status(answer) == 408 and b"did not arrive within 1 s" in answer
        # Bodies being read on several connections together: past 1 MB, the next one is refused with 503.
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        first.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 900000\r\n\r\n".encode() + b" " * 700_000)
        time.sleep(0.3)
        second = _raw(port, _request("POST", path, b" " * 900_000))
        assert _status(second) == 503 and b"too many request bodies" in second
        first.sendall(b" " * 200_000)  # the first completes: read whole and answered (400: not JSON), not refused
        assert _status(_response(first)) == 400
        first.close()
        # Connections: past --max-connections, requests get 503 while the others stay open.
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
        try:
            time.sleep(0.3)
            assert _status(_raw(port, _request("GET", "/v2"))) == 503
        finally:
            for s in held:
                s.close()
        time.sleep(0.3)
        assert _status(_raw(port, _request("GET", "/v2"))) == 200
    finally:
        _stop(proc)
    assert "Traceback" not in log.read_text()


def test_model_metadata_names_the_manifests_model_and_its_preprocessing(arts, tmp_path):
    proc, port, _ = _start_logged(arts, tmp_path)
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v2/repository/index",
                                                           data=b"", method="POST")) as r:
            assert json.loads(r.read()) == [{"name": arts.spec.name, "version": "1", "state": "READY"}]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{arts.spec.name}") as r:
            pre = json.loads(r.read())["parameters"]["preprocessing"]
        assert pre["mean"] == list(arts.spec.mean) and pre["std"] == list(arts.spec.std)
        assert (pre["channels"], pre["image_size"], pre["source_size"]) == (1, 28, 28)
    finally:
        _stop(proc)


def test_a_foreign_host_header_is_refused_on_loopback_and_an_empty_key_is_not_a_key(arts, tmp_path):
    """DNS rebinding: a page on evil.example that resolves its name to 127.0.0.1 must not reach the API."""
    proc, port, log = _start_logged(arts, tmp_path)
    try:
        def get(host):
            return _raw(port, f"GET /v2 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode())

        foreign = get(f"evil.example:{port}")
        assert _status(foreign) == 421 and b"not the Host 'evil.example'" in foreign and b"--allowed-hosts" in foreign
        assert _status(get("evil.example")) == 421 and _status(get("")) == 421
        for ok in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
            assert _status(get(ok)) == 200, ok
        x = np.zeros((1, *arts.spec.chw), np.float32)
        infer = _request("POST", "/v2/models/resnet18/infer", _infer_body(x)).replace(b"Host: 127.0.0.1",
                                                                                       b"Host: evil.example")
        assert _status(_raw(port, infer)) == 421  # the fast infer path too
    finally:
        _stop(proc)
    proc, port, log = _start_logged(arts, tmp_path, "--allowed-hosts", "box.lan")
    try:
        assert _status(_raw(port, b"GET /v2 HTTP/1.1\r\nHost: box.lan:8000\r\n\r\n")) == 200
        assert _status(_raw(port, b"GET /v2 HTTP/1.1\r\nHost: evil.example\r\n\r\n")) == 421
    finally:
        _stop(proc)
    import os

    for args, env in ((["--api-key", ""], {}), ([], {"RESNET_EDGE_API_KEY": " "})):
        res = subprocess.run([sys.executable, "-m", "resnet_edge", "serve", str(arts.root), "--port", str(_free_port()),
                              *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env})
        assert res.returncode == 2 and "would switch authentication off" in res.stderr and "Traceback" not in res.stderr


def test_binding_a_public_address_without_a_key_warns_once(arts, tmp_path):
    proc, port, log = _start_logged(arts, tmp_path, "--host", "0.0.0.0")
    try:
        assert _status(_raw(port, b"GET /v2 HTTP/1.1\r\nHost: 10.1.2.3\r\n\r\n")) == 200  # any name: not loopback
    finally:
        _stop(proc)
    assert log.read_text().count("without an API key") == 1


def test_bad_serve_options_are_one_sentence_each(arts, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = str(busy.getsockname()[1])
    try:
        for args, sentence in ((["--request-timeout", "1.2.3s"], "'1.2.3s' is not a duration"),
                               (["--log-level", "verbose"], "--log-level must be one of"),
                               (["--max-body-mb", "nan"], "must be positive (finite) numbers"),
                               (["--drain-timeout", "0s"], "must be positive (finite) numbers"),
                               (["--grpc-port", taken], f"Cannot listen on 127.0.0.1:{taken} (--grpc-port)"),
                               (["--port", taken], f"Cannot listen on 127.0.0.1:{taken} (--port)")):
            cmd = [sys.executable, "-m", "resnet_edge", "serve", str(arts.root), *args]
            if "--port" not in args:
                cmd += ["--port", str(_free_port())]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr[-1500:])
            assert sentence in " ".join(res.stderr.split()), (args, res.stderr)
    finally:
        busy.close()


def test_the_drain_is_bounded_and_a_second_signal_exits_at_once(arts, tmp_path):
    import signal as sig

    x = np.zeros((1, *arts.spec.chw), np.float32)
    for second in (False, True):
        # a lone request waits up to 20 s for company: in flight well past the 1 s drain
        proc, port, log = _start_logged(arts, tmp_path, "--max-queue-delay-us", "20000000", "--drain-timeout", "1s")
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        client.sendall(_request("POST", "/v2/models/resnet18/infer", _infer_body(x)))
        time.sleep(0.5)
        proc.send_signal(sig.SIGTERM)
        if second:
            time.sleep(0.3)
            proc.send_signal(sig.SIGTERM)
        code = proc.wait(timeout=20)  # the batch would have waited 20 s
        client.close()
        if second:
            assert code == 128 + sig.SIGTERM and "second signal: exiting at once, 1 request(s)" in log.read_text()
        else:  # the drain's deadline, not the batch, ended it
            text = log.read_text()
            assert code == 0 and "did not finish within --drain-timeout 1 s" in text, text[-2000:]


def test_request_heads_are_bounded_and_idle_sockets_time_out_while_readiness_tells_the_truth(arts, tmp_path):
    """Issue 35, items 1 and 2: the request line and headers have a size and a time limit; sockets that send nothing
    are closed by the deadline; readiness is 503 (with its reason) while every slot is taken, 200 after."""
    proc, port, log = _start_logged(arts, tmp_path, "--max-connections", "8", "--head-timeout", "1s",
                                    "--max-url-kb", "4", "--max-header-kb", "16")
    try:
        long_url = _raw(port, b"GET /v2/" + b"a" * 6000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _status(long_url) == 414 and b"request line is over 4,096 bytes" in long_url
        flood = b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"p" * 30_000 + b"\r\n\r\n"
        assert _status(_raw(port, flood)) == 431
        trickle = _raw(port, b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\n", timeout=10)  # the head never ends
        assert _status(trickle) == 408 and b"did not arrive within 1 s" in trickle
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        try:
            time.sleep(0.3)
            ready = _raw(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _status(ready) == 503 and b"every connection slot is taken" in ready, ready
            time.sleep(1.5)  # past the head deadline: the idle sockets are closed by the server
            for s in idle:  # each got its 408 and was closed
                answer = _response(s)
                assert _status(answer) == 408 and s.recv(1024) == b"", answer
            ready = _raw(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _status(ready) == 200, ready
        finally:
            for s in idle:
                s.close()
        assert _status(_raw(port, _request("GET", "/v2"))) == 200  # kept-alive traffic is not affected
    finally:
        _stop(proc)
    assert "Traceback" not in log.read_text()


def test_a_body_counts_against_the_buffer_budget_until_its_answer_is_made(arts, tmp_path):
    """Issue 35, item 4: a body waiting in the batcher still holds its bytes, so that N queued requests cannot hold
    N bodies' memory past --max-buffer-mb."""
    proc, port, log = _start_logged(arts, tmp_path, "--max-buffer-mb", "1", "--max-batch-size", "256",
                                    "--max-queue-delay-us", "3000000")
    try:
        x = np.zeros((200, *arts.spec.chw), np.float32)  # 627 KB of binary FP32: one fits the budget, two do not
        head = json.dumps({"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}]}).encode()
        body = head + x.tobytes()
        first = socket.create_connection(("127.0.0.1", port), timeout=30)
        first.sendall(_request("POST", "/v2/models/resnet18/infer", body,
                               [f"Inference-Header-Content-Length: {len(head)}"]))
        time.sleep(0.5)  # read whole, parsed, now waiting up to 3 s in the batcher for company
        second = _raw(port, _request("POST", "/v2/models/resnet18/infer", body,
                                     [f"Inference-Header-Content-Length: {len(head)}"]))
        assert _status(second) == 503 and b"too many request bodies" in second, second[:300]
        assert _status(_response(first)) == 200  # the first is answered: its bytes are released
        first.close()
        third = _raw(port, _request("POST", "/v2/models/resnet18/infer", body,
                                    [f"Inference-Header-Content-Length: {len(head)}"]), timeout=30)
        assert _status(third) == 200
    finally:
        _stop(proc)

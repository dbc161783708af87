"""Our server against the KServe `ModelServer` a Python user would write, on the same FP32 ONNX file.

Usage: python scripts/serve_peers.py ARTIFACTS [--levels 1,16,64] [--duration 10s] [--rounds 2]
                                     [--protocols json,binary,grpc] [--out reports/serve_peers.json]
Needs the peer: pip install '.[kserve]'.

Both servers run ONNX Runtime FP32 on ARTIFACTS' fp32 ONNX file, one after the other in the same run, under the
same `resnet-edge loadtest` levels and protocol; the order alternates each round (ours, peer, then peer, ours)
so that the host's drift over minutes falls on both. The peer is the 25-line `kserve.Model` below: an
ONNX Runtime session, `predict` on each request as it comes (KServe has no dynamic batching), KServe's own
HTTP (uvicorn, FastAPI) and gRPC servers. It prints a table and the ratios at every level.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PY = [sys.executable, "-m", "resnet_edge"]


# -- the peer -------------------------------------------------------------------------------------
def run_peer(onnx_path: str, http_port: int, grpc_port: int, name: str, threads: int) -> None:
    """KServe ModelServer around an ONNX Runtime session: the peer a KServe user writes."""
    import kserve
    import onnxruntime as ort
    from kserve import InferOutput, InferRequest, InferResponse
    from kserve.utils.utils import generate_uuid

    class OnnxModel(kserve.Model):
        def __init__(self) -> None:
            super().__init__(name)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            self.session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
            self.inp, self.out = self.session.get_inputs()[0], self.session.get_outputs()[0]
            self.ready = True

        def get_input_types(self):
            return [{"name": self.inp.name, "datatype": "FP32", "shape": [-1, *self.inp.shape[1:]]}]

        def get_output_types(self):
            return [{"name": self.out.name, "datatype": "FP32", "shape": [-1, self.out.shape[-1]]}]

        async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
            x = payload.inputs[0].as_numpy()
            logits = self.session.run([self.out.name], {self.inp.name: x})[0]
            out = InferOutput(name=self.out.name, shape=list(logits.shape), datatype="FP32")
            out.set_data_from_numpy(logits, binary_data=payload.use_binary_outputs)
            return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=[out],
                                 use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs, from_grpc=payload.from_grpc)

    server = kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1, enable_latency_logging=False)
    for logger in ("kserve", "kserve.trace", "uvicorn.access"):  # no log line per request: the peer at its fastest
        logging.getLogger(logger).setLevel(logging.WARNING)
    server.start([OnnxModel()])


# -- the comparison -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, port: int, what: str) -> None:
    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode} before it was ready.")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} was not ready within 120 s.")


def start(kind: str, artifacts: Path, onnx: Path, threads: int) -> tuple[subprocess.Popen, int, int]:
    http, grpc = free_port(), free_port()
    if kind == "ours":
        cmd = [*PY, "serve", str(artifacts), "--backend", "onnxruntime", "--precision", "fp32", "--port", str(http),
               "--grpc-port", str(grpc), "--log-level", "warning", "--threads", str(threads)]
    else:
        cmd = [sys.executable, __file__, "--peer-serve", str(onnx), "--http-port", str(http), "--grpc-port", str(grpc),
               "--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if kind == "kserve" else None)
    wait_ready(proc, http, kind)
    return proc, http, grpc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def loadtest(http: int, grpc: int, pid: int, protocol: str, levels: str, duration: str) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [*PY, "loadtest", f"http://127.0.0.1:{http}", "--concurrency", levels, "--duration", duration,
               "--server-pid", str(pid), "--json", f.name, "--model", "resnet18"]
        cmd += {"json": ["--json-payload"], "binary": ["--binary"],
                "grpc": ["--protocol", "grpc", "--grpc-url", f"127.0.0.1:{grpc}"]}[protocol]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(Path(f.name).read_text())["levels"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts", nargs="?", type=Path)
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--protocols", default="json,binary,grpc")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for both (0: ONNX Runtime's default)")
    ap.add_argument("--out", default="reports/serve_peers.json")
    ap.add_argument("--peer-serve", help=argparse.SUPPRESS)
    ap.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--name", default="resnet18", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peer_serve:
        run_peer(a.peer_serve, a.http_port, a.grpc_port, a.name, a.threads)
        return
    try:
        import kserve  # noqa: F401
    except ImportError:
        raise SystemExit("The KServe peer needs kserve: pip install '.[kserve]'.") from None
    if a.artifacts is None or not (a.artifacts / "manifest.json").is_file():
        raise SystemExit("Give an artifacts directory with a manifest.json (run 'make export').")
    from runtime.contract import read_manifest

    onnx = next((a.artifacts / v.path for v in read_manifest(a.artifacts).artifacts if v.precision == "fp32"
                 and v.format == "onnx"), None)
    if onnx is None:
        raise SystemExit(f"{a.artifacts} has no FP32 ONNX variant.")

    rows = []
    for r in range(a.rounds):
        order = ("ours", "kserve") if r % 2 == 0 else ("kserve", "ours")
        for kind in order:
            proc, http, grpc = start(kind, a.artifacts, onnx, a.threads)
            try:
                for protocol in a.protocols.split(","):
                    print(f"round {r + 1}: {kind} {protocol} {a.levels} clients, {a.duration} each", flush=True)
                    for lv in loadtest(http, grpc, proc.pid, protocol, a.levels, a.duration):
                        rows.append({**lv, "round": r + 1, "server": kind, "protocol": protocol})
            finally:
                stop(proc)

    def mean(server, protocol, clients, key):
        vals = [x[key] for x in rows if (x["server"], x["protocol"], x["concurrency"]) == (server, protocol, clients)]
        return sum(vals) / len(vals)

    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    Path(a.out).write_text(json.dumps({"levels": rows}, indent=2))  # the raw levels first, whatever follows
    summary = []
    print(f"\n{'protocol':8} {'clients':>7} {'ours req/s':>10} {'kserve req/s':>12} {'ratio':>6} "
          f"{'ours p50/p99 ms':>16} {'kserve p50/p99 ms':>18} {'errors':>7}")
    for protocol in a.protocols.split(","):
        for clients in sorted({x["concurrency"] for x in rows}):
            o = {k: mean("ours", protocol, clients, k) for k in ("throughput_rps", "p50_ms", "p99_ms", "errors")}
            k = {k: mean("kserve", protocol, clients, k) for k in ("throughput_rps", "p50_ms", "p99_ms", "errors")}
            ratio = o["throughput_rps"] / k["throughput_rps"]
            summary.append({"protocol": protocol, "clients": clients, "ours": o, "kserve": k, "throughput_ratio": ratio,
                            "p99_ratio": o["p99_ms"] / k["p99_ms"]})
            print(f"{protocol:8} {clients:>7} {o['throughput_rps']:>10,.0f} {k['throughput_rps']:>12,.0f} {ratio:>5.2f}x "
                  f"{o['p50_ms']:>7.2f}/{o['p99_ms']:<8.2f} {k['p50_ms']:>8.2f}/{k['p99_ms']:<9.2f} "
                  f"{o['errors'] + k['errors']:>7.0f}")
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    Path(a.out).write_text(json.dumps({"levels": rows, "summary": summary}, indent=2))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()

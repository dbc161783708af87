"""Measure the serving goals of the README with real servers and `resnet-edge loadtest`.

Usage: python scripts/serve_perf.py ARTIFACTS_28 [ARTIFACTS_96] [--out reports/serve_perf.json] [--quick]

1. Server overhead at concurrency 1: loadtest p50 minus the in-process backend p50 (same backend, batch 1),
   for JSON and for binary tensors.
2. Dynamic batching: loadtest throughput at concurrency 32 with --max-batch-size 64 vs 1.
3. Soak: concurrency 64 for 30 s: errors and the server's resident memory before/after.
"""

from __future__ import annotations

import argparse
import json
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(artifacts: str, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([*PY, "serve", artifacts, "--backend", "onnxruntime", "--precision", "fp32",
                             "--port", str(port), "--log-level", "warning", *args])
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def loadtest(port: int, concurrency: str, duration: str, binary: bool, pid: int | None = None) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [*PY, "loadtest", f"http://127.0.0.1:{port}", "--concurrency", concurrency, "--duration", duration,
               "--binary" if binary else "--json-payload", "--json", f.name]
        if pid:
            cmd += ["--server-pid", str(pid)]
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
        return json.loads(Path(f.name).read_text())["levels"]


def in_process_p50(artifacts: str) -> float:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([*PY, "bench", artifacts, "--backend", "onnxruntime", "--precision", "fp32", "--batch", "1",
                        "--duration", "3s", "--json", f.name], check=True, stdout=subprocess.DEVNULL)
        rows = json.loads(Path(f.name).read_text())["results"]
    return next(r["p50_ms"] for r in rows if r["label"] == "onnxruntime fp32")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--out", default="reports/serve_perf.json")
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    a = ap.parse_args()
    dur, soak = ("3s", "10s") if a.quick else ("8s", "30s")
    report: dict = {}
    small = a.artifacts[0]
    base = in_process_p50(small)
    proc, port = start(small)
    try:
        for binary in (False, True):
            lv = loadtest(port, "1", dur, binary)[0]
            report[f"overhead_{'binary' if binary else 'json'}_ms"] = lv["p50_ms"] - base
            report[f"server_p50_{'binary' if binary else 'json'}_ms"] = lv["p50_ms"]
    finally:
        stop(proc)
    report["in_process_p50_ms"] = base
    for arts in a.artifacts:
        size = json.loads((Path(arts) / "manifest.json").read_text())["preprocessing"]["image_size"]
        tput = {}
        for mbs in ("64", "1"):
            proc, port = start(arts, "--max-batch-size", mbs)
            try:
                tput[mbs] = loadtest(port, "32", dur, True)[0]
            finally:
                stop(proc)
        report[f"batching_{size}px"] = {"batched_img_s": tput["64"]["images_per_s"],
                                        "unbatched_img_s": tput["1"]["images_per_s"],
                                        "ratio": tput["64"]["images_per_s"] / tput["1"]["images_per_s"],
                                        "errors": tput["64"]["errors"] + tput["1"]["errors"]}
    proc, port = start(small)
    try:
        loadtest(port, "64", "3s", True)  # warm up allocator pools before the first RSS reading
        lv = loadtest(port, "64", soak, True, pid=proc.pid)[0]
        report["soak"] = {"duration": soak, "concurrency": 64, "requests": lv["requests"], "errors": lv["errors"],
                          "rss_start_mb": lv["rss_start_mb"], "rss_end_mb": lv["rss_end_mb"],
                          "rss_growth": lv["rss_end_mb"] / lv["rss_start_mb"] - 1, "p99_ms": lv["p99_ms"]}
    finally:
        stop(proc)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

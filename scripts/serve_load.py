"""The serving-under-load figures (issue 9) for the default server, with real processes on real sockets.

Usage: python scripts/serve_load.py ARTIFACTS [--duration 10s] [--soak 60s] [--out reports/serve_load.json]

Starts `resnet-edge serve ARTIFACTS --backend auto --grpc-port P` (auto picks the fastest verified variant
here, and says which), then drives it with `resnet-edge loadtest` from the same cores:
1. 1, 16 and 64 closed-loop clients with HTTP JSON tensors, HTTP binary tensors and gRPC raw tensors, each
   level with the server's RSS at its start and end and GET /v2/health/ready every 20 ms from a process of
   its own;
2. 64 binary-tensor clients for --soak: errors and RSS growth from ready to the end;
3. the empty call of each protocol at one client, interleaved over rounds, with the load generator's own
   clients: GET /v2/health/live (answered by the HTTP protocol), GET /v2 (through the app) and gRPC
   ServerLive; this is the floor under each protocol's one-client overhead;
4. the same variant in-process at batch 1 (`resnet-edge bench`), right after, so that each protocol's
   overhead at one client is its p50 minus the in-process p50.
It prints every figure next to its goal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_peers import PY, free_port, loadtest, stop, wait_ready  # noqa: E402


def in_process_p50(artifacts: str, label: str) -> float:
    import subprocess

    backend, precision = label.split()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([*PY, "bench", artifacts, "--backend", backend, "--precision", precision, "--batch", "1",
                        "--duration", "5s", "--json", f.name], check=True, stdout=subprocess.DEVNULL)
        rows = json.loads(Path(f.name).read_text())["results"]
    return next(r["p50_ms"] for r in rows if r["label"] == label)


def empty_calls(http: int, grpc_port: int, rounds: int = 4, calls: int = 1500) -> dict[str, float]:
    """p50 ms of an empty call per protocol, one client, rounds interleaved (the host drifts over minutes)."""
    import asyncio
    import time

    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    from runtime.lab.load_client import Connection

    async def timed(call) -> list[float]:
        for _ in range(200):  # warm: connection, caches
            await call()
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await call()
            out.append(time.perf_counter() - t0)
        return out

    async def run() -> dict[str, list[float]]:
        conn = Connection("127.0.0.1", http)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls_by = {"http GET /v2/health/live": lambda: conn.request("GET", "/v2/health/live"),
                    "http GET /v2": lambda: conn.request("GET", "/v2"),
                    "grpc ServerLive": lambda: stub.ServerLive(pb.ServerLiveRequest())}
        seen: dict[str, list[float]] = {k: [] for k in calls_by}
        for _ in range(rounds):
            for name, call in calls_by.items():
                seen[name] += await timed(call)
        await conn.close()
        await channel.close()
        return seen

    return {k: float(np.percentile(v, 50) * 1e3) for k, v in asyncio.run(run()).items()}


def main() -> None:
    import subprocess
    import urllib.request

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--soak", default="60s")
    ap.add_argument("--out", default="reports/serve_load.json")
    a = ap.parse_args()
    http, grpc = free_port(), free_port()
    proc = subprocess.Popen([*PY, "serve", a.artifacts, "--backend", "auto", "--port", str(http), "--grpc-port",
                             str(grpc), "--log-level", "warning"])
    wait_ready(proc, http, "resnet-edge serve")
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/resnet18") as r:
        meta = json.loads(r.read())
    label = meta["platform"].removeprefix("resnet-edge/")
    report: dict = {"auto_chose": label, "batch_buckets": meta["parameters"]["batch_buckets"], "levels": {}}
    try:
        for protocol in ("json", "binary", "grpc"):
            print(f"{protocol}: 1, 16 and 64 clients, {a.duration} each", flush=True)
            report["levels"][protocol] = loadtest(http, grpc, proc.pid, protocol, "1,16,64", a.duration)
        print(f"soak: 64 binary clients for {a.soak}", flush=True)
        report["soak"] = loadtest(http, grpc, proc.pid, "binary", "64", a.soak)[0]
        print("empty calls: one client, each protocol, interleaved", flush=True)
        report["empty_call_p50_ms"] = empty_calls(http, grpc)
    finally:
        stop(proc)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))  # the load figures first, whatever follows
    report["in_process_p50_ms"] = base = in_process_p50(a.artifacts, label)

    lv = report["levels"]
    by = {p: {x["concurrency"]: x for x in rows} for p, rows in lv.items()}
    soak = report["soak"]
    growth = soak["rss_end_mb"] / soak["rss_start_mb"] - 1
    goals = [
        ("RSS growth, 64 clients for " + a.soak, f"{growth:+.1%} ({soak['rss_start_mb']:.0f} -> "
         f"{soak['rss_end_mb']:.0f} MB), {soak['errors']} errors in {soak['requests']:,}",
         growth <= 0.10 and soak["errors"] == 0, "<= +10%, 0 errors"),
    ]
    for p in ("json", "binary", "grpc"):
        r64, r16 = by[p][64], by[p][16]
        goals.append((f"{p}: req/s at 64 vs 16 clients", f"{r64['throughput_rps']:,.0f} vs {r16['throughput_rps']:,.0f} "
                      f"= {r64['throughput_rps'] / r16['throughput_rps']:.2f}x",
                      r64["throughput_rps"] >= 0.9 * r16["throughput_rps"], ">= 0.9x"))
        goals.append((f"{p}: p99 / p50 at 64 clients", f"{r64['p99_ms']:.1f} / {r64['p50_ms']:.1f} ms = "
                      f"{r64['p99_ms'] / r64['p50_ms']:.2f}x", r64["p99_ms"] <= 2.5 * r64["p50_ms"], "<= 2.5x"))
        goals.append((f"{p}: health p99 during 64 clients", f"{r64['health_p99_ms']:.2f} ms",
                      r64["health_p99_ms"] <= 5.0, "<= 5 ms"))
    overhead = {p: by[p][1]["p50_ms"] - base for p in ("json", "binary", "grpc")}
    report["overhead_ms"] = overhead
    goals.append(("1 client: p50 minus in-process p50", ", ".join(f"{p} {v:.3f} ms" for p, v in overhead.items())
                  + f" (in-process {base:.3f} ms)", overhead["grpc"] <= overhead["binary"], "grpc <= binary"))
    floor = report["empty_call_p50_ms"]
    goals.append(("1 client: empty call p50 (the floor)", ", ".join(f"{k} {v:.3f} ms" for k, v in floor.items()),
                  True, "reported"))
    report["goals"] = [{"figure": f, "value": v, "met": bool(m), "goal": g} for f, v, m, g in goals]
    print(f"\nauto chose {label}; buckets {report['batch_buckets']}\n")
    for f, v, m, g in goals:
        print(f"{'met ' if m else 'MISS'}  {f:40} {v:55} goal {g}")
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()

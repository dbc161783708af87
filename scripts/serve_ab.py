"""A/B of the server's load-path choices, interleaved: the current server against itself with one change undone.

Usage: python scripts/serve_ab.py ARTIFACTS [--variants current,no-probe-lane,no-slices] [--protocols json,binary]
                                  [--clients 64] [--duration 10s] [--rounds 2] [--out reports/serve_ab.json]

Each variant is `resnet-edge serve ARTIFACTS --backend auto` started fresh, with one of its options turned off:
- no-probe-lane: `--no-probe-lane`, health probes go through the ASGI app (uvicorn's own httptools protocol);
- no-slices: `--deliver-slice 1000000`, the batcher answers a finished batch all at once instead of 8 requests per
  event-loop turn.
Every round runs every variant, in alternating order (this host drifts by up to 30% over minutes), under
`resnet-edge loadtest` at --clients with GET /v2/health/ready every 20 ms from a process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_peers import free_port, loadtest, stop, wait_ready  # noqa: E402

UNDO = {"current": [], "no-probe-lane": ["--no-probe-lane"], "no-slices": ["--deliver-slice", "1000000"]}


def start(artifacts: str, variant: str, http: int, grpc: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "resnet_edge", "serve", artifacts, "--backend", "auto", "--port",
                             str(http), "--grpc-port", str(grpc), "--log-level", "warning", *UNDO[variant]])
    wait_ready(proc, http, f"server ({variant})")
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts")
    ap.add_argument("--variants", default="current,no-probe-lane,no-slices")
    ap.add_argument("--protocols", default="json,binary")
    ap.add_argument("--clients", default="64")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="reports/serve_ab.json")
    a = ap.parse_args()
    variants = a.variants.split(",")
    if unknown := [v for v in variants if v not in UNDO]:
        raise SystemExit(f"Unknown variant {unknown[0]!r}; choose from {', '.join(UNDO)}.")
    rows = []
    for rnd in range(a.rounds):
        for variant in variants if rnd % 2 == 0 else variants[::-1]:
            http, grpc = free_port(), free_port()
            proc = start(a.artifacts, variant, http, grpc)
            try:
                for protocol in a.protocols.split(","):
                    for lv in loadtest(http, grpc, proc.pid, protocol, a.clients, a.duration):
                        rows.append({**lv, "round": rnd, "variant": variant, "protocol": protocol})
                        print(f"round {rnd} {variant:14} {protocol:6} {lv['concurrency']:3} clients "
                              f"{lv['throughput_rps']:7,.0f} req/s  p50 {lv['p50_ms']:6.2f}  p99 {lv['p99_ms']:6.2f}  "
                              f"health p99 {lv['health_p99_ms']:5.2f} ms", flush=True)
            finally:
                stop(proc)
    print("\nmean over rounds")
    for protocol in a.protocols.split(","):
        for variant in variants:
            mine = [r for r in rows if r["variant"] == variant and r["protocol"] == protocol]
            mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("throughput_rps", "p99_ms", "health_p99_ms")}
            print(f"{variant:14} {protocol:6} {mean['throughput_rps']:7,.0f} req/s  p99 {mean['p99_ms']:6.2f}  "
                  f"health p99 {mean['health_p99_ms']:5.2f} ms  (each round: "
                  + ", ".join(f"{r['health_p99_ms']:.2f}" for r in mine) + ")")
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(a.out) or ".", delete=False, suffix=".tmp") as f:
        json.dump({"rows": rows}, f, indent=2)
    os.replace(f.name, a.out)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()

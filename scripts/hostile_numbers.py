"""Issue 35's numbers for a server under hostile clients, on real sockets.

Usage: python scripts/hostile_numbers.py ARTIFACTS [--idle 1100] [--flood-s 10]

1. A header flood and idle sockets together: `--idle` sockets that send nothing and 8 clients sending 80 KiB heads
   in a loop (each refused with 431), while a prober asks GET /v2/health/ready every 20 ms on its own connection:
   the probes' p99, readiness 503 with its reason while every slot is taken, the idle sockets closed by the head
   deadline (`--head-timeout 5s`), readiness 200 again after.
2. The hostile corpus of tests/runtime/test_serve_edges.py (over 200 requests), sent three times: statuses >= 500,
   tracebacks in the log, and the server's RSS before and after.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.spec import load_artifacts  # noqa: E402
from tests.runtime.test_serve_edges import _malformed_corpus, _raw, _status  # noqa: E402

PY = [sys.executable, "-m", "resnet_edge"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ready(port: int) -> tuple[int, bytes]:
    answer = _raw(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout=5)
    return _status(answer), answer.partition(b"\r\n\r\n")[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts")
    ap.add_argument("--idle", type=int, default=1100)
    ap.add_argument("--flood-s", type=float, default=10.0)
    args = ap.parse_args()
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*PY, "serve", args.artifacts, "--backend", "onnxruntime", "--port", str(port),
                                 "--head-timeout", "5s", "--max-body-mb", "1"], stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                if ready(port)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        # 1. flood + idle sockets
        stop, probes, refused = threading.Event(), [], [0]

        def prober() -> None:
            with socket.create_connection(("127.0.0.1", port)) as s:  # its own kept-alive connection
                while not stop.is_set():
                    t0 = time.perf_counter()
                    s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    data = b""
                    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                        data += s.recv(4096)
                    probes.append(((time.perf_counter() - t0) * 1e3, _status(data)))
                    time.sleep(0.02)

        def flooder() -> None:
            head = b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * (80 << 10) + b"\r\n\r\n"
            while not stop.is_set():
                try:
                    if _status(_raw(port, head, timeout=5)) == 431:
                        refused[0] += 1
                except OSError:
                    time.sleep(0.01)

        threads = [threading.Thread(target=prober)] + [threading.Thread(target=flooder) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        idle = []
        for _ in range(args.idle):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except OSError:
                break
        time.sleep(1.0)
        saturated = ready(port) if len(idle) >= 1024 else None
        time.sleep(max(args.flood_s - 1.5, 6.0))  # past the 5 s head deadline
        closed = 0
        for s in idle:
            s.settimeout(0.5)
            try:
                data = s.recv(4096)
                closed += data == b"" or data.startswith(b"HTTP/1.1 408")
            except OSError:
                pass
            s.close()
        stop.set()
        for t in threads:
            t.join()
        after = ready(port)
        times = sorted(ms for ms, _ in probes)
        p99 = times[int(0.99 * (len(times) - 1))]
        print(f"1. {len(idle)} idle sockets + 8 clients flooding 80 KiB heads for ~{args.flood_s:g} s "
              f"({refused[0]:,} refused with 431): health probes p50 {statistics.median(times):.2f} ms, "
              f"p99 {p99:.2f} ms over {len(times)} probes (goal <= 50 ms); statuses seen "
              f"{sorted({st for _, st in probes})}; readiness while saturated: "
              f"{saturated if saturated else 'not saturated'}; {closed} of {len(idle)} idle sockets closed by the "
              f"server (head deadline 5 s); readiness after: {after}")
        # 2. the hostile corpus
        corpus = _malformed_corpus(load_artifacts(args.artifacts))
        before = rss_mb(proc.pid)
        statuses = [_status(_raw(port, data)) for _ in range(3) for data in corpus]
        end = rss_mb(proc.pid)
        high = sum(st >= 500 for st in statuses)
        print(f"2. hostile corpus: {len(corpus)} requests x 3: {high} responses >= 500, "
              f"{statuses.count(400)} 400s; server RSS {before:.0f} -> {end:.0f} MB ({(end / before - 1) * 100:+.1f}%, "
              f"goal <= +10%); tracebacks in the log: {log.read_text().count('Traceback')}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()

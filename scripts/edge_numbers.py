"""The edge-runtime figures (issue 10): install size, predict start-up and throughput, serve's peak RSS.

Usage: python scripts/edge_numbers.py ARTIFACTS [--edge-venv .venv-edge] [--out reports/edge.json]

1. Creates (once) a virtual environment with `pip install .` only, the edge runtime, and checks that it cannot
   import torch; compares its site-packages size with this environment's (the full install, `make setup`).
2. Writes the 10,000 Fashion-MNIST test images as PNG files, then runs `resnet-edge predict` from the edge
   install over all of them (decode included): images/s, and its accuracy against the manifest's.
3. Time from `resnet-edge predict ARTIFACTS one.png` starting to its result (process start, imports and model
   load included), edge and full install.
4. Peak RSS (VmHWM) of `resnet-edge serve --backend onnxruntime --precision fp32` after ready and 5 s of
   16-client load, edge and full install.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def site_mb(python: Path) -> float:
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    total = 0
    for dirpath, _, names in os.walk(site):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return total / 2**20


def make_edge_venv(path: Path) -> Path:
    python = path / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True)
    if subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0:
        raise SystemExit(f"{path} can import torch: it is not an edge install.")
    return python


def first_result_s(python: Path, artifacts: str, png: Path, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(python), "-m", "resnet_edge", "predict", artifacts, str(png), "--backend", "onnxruntime"],
                       check=True, capture_output=True, cwd=tempfile.gettempdir())
        best = min(best, time.perf_counter() - t0)
    return best


def serve_peak_rss_mb(python: Path, artifacts: str) -> float:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(python), "-m", "resnet_edge", "serve", artifacts, "--backend", "onnxruntime",
                             "--precision", "fp32", "--port", str(port), "--log-level", "warning"],
                            cwd=tempfile.gettempdir())
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        subprocess.run([sys.executable, "-m", "resnet_edge", "loadtest", f"http://127.0.0.1:{port}", "--concurrency",
                        "16", "--duration", "5s"], check=True, capture_output=True)
        with open(f"/proc/{proc.pid}/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    import numpy as np
    from PIL import Image

    from resnet_edge import fmnist

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts")
    ap.add_argument("--edge-venv", type=Path, default=ROOT / ".venv-edge")
    ap.add_argument("--out", default="reports/edge.json")
    a = ap.parse_args()
    artifacts = str(Path(a.artifacts).resolve())
    edge, full = make_edge_venv(a.edge_venv), Path(sys.executable)
    report: dict = {"site_packages_mb": {"edge": site_mb(edge), "full": site_mb(full)}}
    print(f"site-packages: edge {report['site_packages_mb']['edge']:.0f} MB, full {report['site_packages_mb']['full']:.0f} MB")

    data = fmnist.load_arrays()
    with tempfile.TemporaryDirectory() as tmp:
        pngs = Path(tmp) / "pngs"
        pngs.mkdir()
        for i, img in enumerate(data.test_images):
            Image.fromarray(img).save(pngs / f"{i:05d}.png")
        report["first_result_s"] = {name: first_result_s(py, artifacts, pngs / "00000.png") for name, py in
                                    (("edge", edge), ("full", full))}
        print(f"predict start to first result: {report['first_result_s']}")
        out = Path(tmp) / "pred.json"
        t0 = time.perf_counter()
        subprocess.run([str(edge), "-m", "resnet_edge", "predict", artifacts, str(pngs), "--backend", "onnxruntime",
                        "--invert", "no", "--json", str(out)], check=True, stdout=subprocess.DEVNULL,
                       cwd=tempfile.gettempdir())
        wall = time.perf_counter() - t0
        doc = json.loads(out.read_text())
    top1 = np.array([p["top"][0]["index"] for p in doc["predictions"]])
    from runtime.contract import read_manifest

    fp32 = next(x for x in read_manifest(Path(artifacts)).artifacts if x.format == "onnx" and x.precision == "fp32")
    report["predict_10k"] = {"images": len(top1), "wall_s": wall, "images_per_s": len(top1) / wall,
                             "in_process_s": doc["seconds"], "accuracy": float((top1 == data.test_labels).mean()),
                             "manifest_accuracy": fp32.test_accuracy, "variant": doc["variant"]}
    print(f"predict over 10,000 PNGs (edge install): {report['predict_10k']}")
    report["serve_peak_rss_mb"] = {name: serve_peak_rss_mb(py, artifacts) for name, py in (("edge", edge), ("full", full))}
    print(f"serve peak RSS: {report['serve_peak_rss_mb']}")
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

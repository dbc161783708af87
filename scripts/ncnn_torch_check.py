"""ncnn and PyTorch in one process (issue 20): the same ncnn files run over golden images in four processes: ncnn
alone, torch imported first, torch imported and run first, and torch computing in another thread meanwhile; each
prints its largest difference from the golden set's PyTorch logits and the OpenMP runtimes it has mapped.

Usage: python scripts/ncnn_torch_check.py ARTIFACTS [--images 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r'''
import sys, threading
mode, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode != "alone":
    import torch
    conv = torch.nn.Conv2d(1, 64, 7, 2, 3)
    if mode in ("torch-run", "torch-thread"):
        with torch.no_grad():
            conv(torch.randn(64, 1, 28, 28))
import numpy as np
from resnet_edge.images import to_input
from runtime import backends
from runtime.spec import load_artifacts

arts = load_artifacts(root)
art = arts.find("ncnn", "fp32")
images, _, ref = arts.golden()
x = to_input(images[:n], arts.spec.mean, arts.spec.std, arts.spec.image_size)
stop = []
def busy():
    with torch.no_grad():
        while not stop:
            conv(torch.randn(64, 1, 28, 28))
worker = threading.Thread(target=busy) if mode == "torch-thread" else None
if worker:
    worker.start()
options = {"winograd": art.row.details["winograd"]} if "winograd" in art.row.details else {}
with backends.create("ncnn", arts.spec, art.path, precision="fp32", max_batch=n, **options) as b:
    y = b.infer(x)
stop.append(1)
if worker:
    worker.join()
omp = sorted({line.split()[-1].rsplit("/", 1)[-1] for line in open("/proc/self/maps") if "gomp" in line or "iomp" in line})
d = float(np.abs(y - ref[:n]).max())
print(f"{mode:<13} max |d| {d:.3g} ({d / float(np.abs(ref[:n]).max()):.2g} relative), top-1 agreement "
      f"{(y.argmax(1) == ref[:n].argmax(1)).mean():.2%}, OpenMP runtimes mapped: {', '.join(omp)}")
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts")
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()
    for mode in ("alone", "torch-import", "torch-run", "torch-thread"):
        res = subprocess.run([sys.executable, "-c", CHILD, mode, args.artifacts, str(args.images)], capture_output=True,
                             text=True)
        print(res.stdout.strip() or res.stderr.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Peak RSS of `resnet-edge predict` over a folder of image files (issue 18, item 5).

Usage: python scripts/predict_rss.py ARTIFACTS [--files 2000,20000] [--out reports/predict_rss.json]

Writes real Fashion-MNIST images (the test set, then training images) as PNG files, then runs `resnet-edge
predict ARTIFACTS DIR` over the first N of them, each run in a fresh process whose peak RSS (ru_maxrss of the
child) is read by a small wrapper. Each N runs twice, interleaved: the streamed decoding of the CLI as it is
(at most two batches decoded ahead of inference), and the same CLI with ``Executor.map`` put back (every decode
submitted at once), so that the difference is the window alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from resnet_edge.atomic import atomic_write_text
from resnet_edge.fmnist import load_arrays

WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "sys.stderr.write(r.stderr[-2000:] if r.returncode else ''); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
# The CLI with its window replaced by what it was before: Executor.map submits every file at once.
UNBOUNDED = ("import sys, runtime.predict_cli as m; m.decode_ahead = lambda pool, fn, items, ahead: pool.map(fn, items); "
             "from resnet_edge.cli import main; sys.argv[0] = 'resnet-edge'; main()")
STREAMED = "import sys; from resnet_edge.cli import main; sys.argv[0] = 'resnet-edge'; main()"


def write_pngs(folder: Path, n: int) -> list[Path]:
    arrays = load_arrays()
    images = np.concatenate([arrays.test_images, arrays.train_images])[:n]
    folder.mkdir(parents=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{i:06d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def peak_mb(code: str, artifacts: Path, folder: Path, json_out: Path) -> float:
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-c", code, "predict", str(artifacts), str(folder),
           "--json", str(json_out), "--backend", "onnxruntime", "--precision", "fp32"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    kib, rc = int(out[0]), int(out[1])
    if rc != 0:
        raise SystemExit(f"predict exited {rc}")
    return kib / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", type=Path)
    ap.add_argument("--files", default="2000,20000")
    ap.add_argument("--out", type=Path, default=Path("reports/predict_rss.json"))
    args = ap.parse_args()
    counts = [int(c) for c in args.files.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="predict-rss-") as tmp:
        tmp = Path(tmp)
        paths = write_pngs(tmp / "all", max(counts))
        for n in counts:
            folder = tmp / f"n{n}"
            folder.mkdir()
            for p in paths[:n]:
                (folder / p.name).symlink_to(p)
            row = {"files": n}
            for name, code in (("streamed", STREAMED), ("executor_map", UNBOUNDED)):
                row[f"{name}_peak_rss_mb"] = round(peak_mb(code, args.artifacts, folder, tmp / "p.json"), 1)
            done = json.loads((tmp / "p.json").read_text())
            row["classified"] = len(done["predictions"])
            rows.append(row)
            print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

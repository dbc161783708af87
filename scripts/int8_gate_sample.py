"""Why the INT8 accuracy gate failed on a 500-image evaluation (issue 34, first item): the sample, not the CPU.

For each calibration size and seed, quantize the checkpoint's FP32 ONNX as export does, then count how many disjoint
windows of n test images (export's ``--limit n`` evaluates the first n) miss the int8 row's 0.5 pt accuracy bound,
next to the drop on all 10,000 images.

Usage: python scripts/int8_gate_sample.py CHECKPOINT [SIZES] [SEEDS]   (defaults: 128,256,1000 and 0,1,2,3,4)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from export import quantize
from export.onnx import model_metadata, onnx_from_model
from export.parity import TOLERANCES, ort_logits
from export.source import ExportSource

WINDOWS = (500, 1000, 2000)


def main(ckpt: Path, sizes: list[int], seeds: list[int]) -> None:
    src = ExportSource.load(ckpt)
    src.load_data(data_dir=None, folder=None, limit=None, calib_size=max(sizes), heldout_size=0, seed=0)
    src.reference()
    bound = TOLERANCES["int8"].max_acc_drop_pt
    ref_ok = src.ref.argmax(1) == src.labels
    misses = {n: [0, 0] for n in WINDOWS}
    with tempfile.TemporaryDirectory() as tmp:
        meta = model_metadata(src.state, src.sha256, src.fold.ref_accuracy)
        fp32 = onnx_from_model(src.folded, Path(tmp) / "fp32.onnx", metadata=meta)
        for size in sizes:
            for seed in seeds:
                rows = np.random.default_rng(seed).permutation(len(src.calib_x))[:size]
                q = quantize.to_int8(fp32, Path(tmp) / "q.onnx", np.ascontiguousarray(src.calib_x[rows]))
                ok = ort_logits(q, src.test_x).argmax(1) == src.labels
                drops = {n: [(ref_ok[w:w + n].mean() - ok[w:w + n].mean()) * 100 for w in range(0, len(ok), n)]
                         for n in WINDOWS}
                for n, d in drops.items():
                    misses[n][0] += sum(x > bound for x in d)
                    misses[n][1] += len(d)
                print(f"calibration {size:5d} images, seed {seed}: drop on 10k {(ref_ok.mean() - ok.mean()) * 100:+.2f} "
                      f"pt, on the first 500 {drops[500][0]:+.2f} pt", flush=True)
    for n, (miss, total) in misses.items():
        print(f"windows of {n:5d} test images that miss the {bound} pt bound: {miss}/{total} ({miss / total:.1%})")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    main(Path(args[0]), [int(s) for s in (args[1] if len(args) > 1 else "128,256,1000").split(",")],
         [int(s) for s in (args[2] if len(args) > 2 else "0,1,2,3,4").split(",")])

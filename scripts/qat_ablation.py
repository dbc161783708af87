"""What quantization-aware fine-tuning brings (issue 34): from one distilled student, one more epoch with export's INT8
rounding in the loop (``compress --qat on``) against the same epoch in float (the same schedule, the rounding
switched off), each then quantized as export does (ONNX Runtime, the same calibration images) and evaluated on the
10,000 test images against its own FP32 logits: the int8 row of the tolerance table.

Usage: python scripts/qat_ablation.py TEACHER --out DIR [--ratio 0.5] [--epochs 1] [--limit-train 4096]
(the defaults: the suite's case, a one-epoch student on 4,096 images, whose post-training INT8 misses the row)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from export import quantize
from export.onnx import model_metadata, onnx_from_model
from export.parity import compare, ort_logits
from export.source import ExportSource
from train import qat
from train.compress import CompressConfig, compress


def int8_row(checkpoint: Path) -> str:
    src = ExportSource.load(checkpoint)
    src.load_data(data_dir=None, folder=None, limit=None, calib_size=1000, heldout_size=0, seed=0)
    src.reference()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = onnx_from_model(src.folded, Path(tmp) / "fp32.onnx",
                               metadata=model_metadata(src.state, src.sha256, src.fold.ref_accuracy))
        path = quantize.to_int8(fp32, Path(tmp) / "int8.onnx", src.calib_x, quantize.Int8Options())
        r = compare(src.ref, ort_logits(path, src.test_x), "int8", src.labels)
    return (f"FP32 {r.ref_accuracy:.2%}, INT8 {r.accuracy:.2%} ({r.delta_acc_pt:+.2f} pt), top-1 agreement "
            f"{r.top1_agreement:.2%}: {'passes' if r else 'fails'} the int8 row")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit-train", type=int, default=4096)
    args = ap.parse_args()
    console = Console(stderr=True)
    cc = CompressConfig(ratio=args.ratio, epochs=args.epochs, limit_train=args.limit_train, qat="off")
    distilled = args.out / "distilled"
    compress(args.teacher, distilled, cc, console=console)
    arms = {"QAT (INT8 rounding in the loop)": args.out / "qat", "the same epoch in float": args.out / "float"}
    install = qat.install
    for where in arms.values():
        where.mkdir(parents=True, exist_ok=True)
        for f in ("best.pt", "last.pt"):
            shutil.copy(distilled / f, where / f)
        qat.install = install if where.name == "qat" else (lambda model: [])
        try:
            compress(args.teacher, where, CompressConfig(**{**cc.__dict__, "qat": "on"}), resume=True, console=console)
        finally:
            qat.install = install
    print(f"distilled ({args.epochs} epoch(s), ratio {args.ratio}, {args.limit_train or 'all'} training images): "
          f"{int8_row(distilled / 'best.pt')}")
    for name, where in arms.items():
        print(f"+ 1 epoch, {name}: {int8_row(where / 'best.pt')}")


if __name__ == "__main__":
    main()

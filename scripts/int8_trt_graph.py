"""The INT8 graph TensorRT consumes against the one ONNX Runtime quantized before (issue 39): both made from the
same FP32 ONNX on the same calibration images, each parsed by TensorRT-RTX's ONNX parser, evaluated on the 10,000 test
images on ONNX Runtime, and timed at batch 1 and 64 in one interleaved run (the files take turns every round).

Usage: python scripts/int8_trt_graph.py CHECKPOINT [--calib-size 1000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from export import quantize, tensorrt
from export.onnx import model_metadata, onnx_from_model
from export.parity import compare, interleaved_latency_ms, ort_logits
from export.source import ExportSource
from resnet_edge.errors import ArtifactMismatch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--calib-size", type=int, default=1000)
    args = ap.parse_args()
    src = ExportSource.load(args.checkpoint)
    src.load_data(data_dir=None, folder=None, limit=None, calib_size=args.calib_size, heldout_size=0, seed=0)
    src.reference()
    with tempfile.TemporaryDirectory() as tmp:
        meta = model_metadata(src.state, src.sha256, src.fold.ref_accuracy)
        fp32 = onnx_from_model(src.folded, Path(tmp) / "fp32.onnx", metadata=meta)
        graphs = {"int32 biases (ONNX Runtime's default, before)": quantize.Int8Options(quantize_bias=True),
                  "float biases (TensorRT's convention, now)": quantize.Int8Options()}
        paths = {name: quantize.to_int8(fp32, Path(tmp) / f"q{i}.onnx", src.calib_x, opts)
                 for i, (name, opts) in enumerate(graphs.items())}
        for name, path in paths.items():
            try:
                _, _, network, _ = tensorrt.parse_onnx(path, tensorrt.TENSORRT_RTX)
                parsed = f"TensorRT-RTX parser: 0 errors, {network.num_layers} layers"
            except ArtifactMismatch as exc:
                parsed = f"TensorRT-RTX parser: {str(exc)[:160]}"
            r = compare(src.ref, ort_logits(path, src.test_x), "int8", src.labels)
            print(f"{name}: accuracy {r.accuracy:.2%} ({r.delta_acc_pt:+.2f} pt vs PyTorch {r.ref_accuracy:.2%}), "
                  f"top-1 agreement {r.top1_agreement:.2%}, {'passes' if r else 'fails'} the int8 row; {parsed}")
        for batch in (1, 64):
            ms = interleaved_latency_ms(list(paths.values()), src.test_x[:batch], rounds=15)
            print(f"batch {batch:2d}, ONNX Runtime CPU, p50 of 15 interleaved rounds: "
                  + "; ".join(f"{n.split(' (')[0]} {m:.3f} ms" for n, m in zip(paths, ms))
                  + f" (before / now {ms[0] / ms[1]:.2f}x)")


if __name__ == "__main__":
    main()

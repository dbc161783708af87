"""INT8 on x86 CPUs without VNNI: 8-bit against 7-bit weights, natively and on an emulated Haswell (AVX2).

Usage: python scripts/int8_no_vnni.py CHECKPOINT ARTIFACTS [--cpu Haswell-v4] [--out reports/int8_no_vnni.json]

CPUs without VNNI (AVX2, AVX-512F) multiply uint8 activations by int8 weights in pairs summed into 16 bits
(VPMADDUBSW), which saturates with full-range weights. This script quantizes the export's FP32 ONNX both ways,
on the export's own calibration images (``export.pipeline``), then measures each file's agreement with the
golden set's PyTorch FP32 logits: on this host's ONNX Runtime over the 10,000 test images, and, where Debian's
qemu-user-static is installed, on the same ONNX Runtime under ``qemu-x86_64-static -cpu Haswell-v4`` over the
1,000 golden images (emulated timings mean nothing; emulated answers are the real kernels').
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from export import quantize
from export.source import ExportSource
from resnet_edge.atomic import atomic_write_text

# Run inside the emulator: the golden set through one ONNX file, agreement with the PyTorch logits.
EMULATED = """
import sys, numpy as np, onnxruntime as ort
g = np.load(sys.argv[1]); x = np.load(sys.argv[2])
s = ort.InferenceSession(sys.argv[3], providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
out = np.concatenate([s.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
print(float((out.argmax(1) == g["logits"].argmax(1)).mean()))
"""


def agreement(path: Path, x: np.ndarray, ref: np.ndarray) -> float:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out = np.concatenate([s.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)])
    return float((out.argmax(1) == ref.argmax(1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("artifacts", type=Path)
    ap.add_argument("--cpu", default="Haswell-v4")
    ap.add_argument("--out", type=Path, default=Path("reports/int8_no_vnni.json"))
    args = ap.parse_args()
    ex = ExportSource.load(args.checkpoint)  # what export evaluates and calibrates on, as export loads it
    ex.load_data(data_dir=None, folder=None, limit=None, calib_size=1000, heldout_size=0, seed=0)
    ex.reference()
    golden = args.artifacts / "golden.npz"
    qemu = shutil.which("qemu-x86_64-static")
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-no-vnni-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "golden_x.npy", ex.test_x[:1000])
        (tmp / "emulated.py").write_text(EMULATED)
        for act in (quantize.Activations.S8, quantize.Activations.U8):
            for bits in (8, 7):
                opts = replace(quantize.Int8Options(), activations=act, reduce_range=bits == 7)
                path = quantize.to_int8(args.artifacts / "resnet18_fp32.onnx", tmp / f"{act.value}_{bits}.onnx",
                                        ex.calib_x, opts)
                row = {"activations": act.value, "weight_bits": bits,
                       "native_top1_agreement_10k": agreement(path, ex.test_x, ex.ref)}
                if qemu:
                    res = subprocess.run([qemu, "-cpu", args.cpu, sys.executable, str(tmp / "emulated.py"), str(golden),
                                          str(tmp / "golden_x.npy"), str(path)], capture_output=True, text=True)
                    row[f"emulated_{args.cpu}_top1_agreement_golden"] = float(res.stdout.split()[-1])
                row["native_top1_agreement_golden"] = agreement(path, ex.test_x[:1000], ex.ref[:1000])
                rows.append(row)
                print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Print the INT8 calibration table of the README: each calibration choice's accuracy and top-1 agreement
with PyTorch FP32, on the held-out training images (where the choice is made) and on the test set, with
ONNX Runtime and OpenVINO, next to OpenVINO + NNCF; and the same INT8 with and without quant_pre_process.

Usage: python scripts/int8_calibration.py [CHECKPOINT] [FP32_ONNX]  (defaults: the `make export` outputs)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from export import quantize
from export.parity import compare
from export.pipeline import ExportConfig
from export.source import GOLDEN_N, ExportSource
from runtime.lab import peers

EVERY = {"float_ends": False}  # every layer in int8, the stem conv and the classifier included (the default until
# issue 20's third session)
CHOICES = {
    "s8, percentile 99.999, every layer": quantize.Int8Options(percentile=99.999, **EVERY),
    "s8, percentile 99.99, every layer": quantize.Int8Options(percentile=99.99, **EVERY),
    "s8, min-max, every layer": quantize.Int8Options(calibration=quantize.CalibMethod.MINMAX, **EVERY),
    "s8, entropy, every layer": quantize.Int8Options(calibration=quantize.CalibMethod.ENTROPY, **EVERY),
    "s8, percentile 99.99, stem + classifier in float (default)": quantize.Int8Options(),
    "s8, min-max, stem + classifier in float": quantize.Int8Options(calibration=quantize.CalibMethod.MINMAX),
    "u8, percentile 99.99, every layer": quantize.Int8Options(activations=quantize.Activations.U8, **EVERY),
    "u8, percentile 99.99, stem + classifier in float": quantize.Int8Options(activations=quantize.Activations.U8),
}


def logits_ort(path: Path, x: np.ndarray) -> np.ndarray:
    from export.parity import ort_logits

    return ort_logits(path, x)


def logits_openvino(path: Path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU")
    return np.concatenate([compiled(x[i:i + 500])[0] for i in range(0, len(x), 500)])


def main() -> None:
    ckpt = Path(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/best.pt")
    fp32 = Path(sys.argv[2] if len(sys.argv) > 2 else "artifacts/resnet18_fp32.onnx")
    cfg = ExportConfig()
    src = ExportSource.load(ckpt)  # the images export itself calibrates on, holds out and evaluates on
    src.load_data(data_dir=None, folder=None, limit=None, calib_size=cfg.calib_size, heldout_size=cfg.heldout_size,
                  seed=cfg.seed)
    src.reference()
    calib = src.calib_x
    sets = {"held-out": (src.heldout_x, src.heldout_labels), "test": (src.test_x, src.labels)}
    refs = {"held-out": src.heldout_ref, "test": src.ref}
    golden = GOLDEN_N  # the first test images: the golden set that parity runs on devices

    def cells(path: Path, runners=(logits_ort, logits_openvino)) -> list[str]:
        out = []
        for name, (x, y) in sets.items():
            for run in runners:
                got = run(path, x)
                s = compare(refs[name], got, "int8", y)
                out.append(f"{s.accuracy:.2%} / {s.top1_agreement:.2%}")
                if name == "test":
                    g = compare(refs[name][:golden], got[:golden], "int8", y[:golden])
                    out.append(f"{g.top1_agreement:.1%}")
        return out

    tmp = Path(tempfile.mkdtemp(prefix="int8-calibration-"))
    print("| calibration | held-out, ORT | held-out, OpenVINO | test, ORT | golden, ORT | test, OpenVINO "
          "| golden, OpenVINO |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, opts in CHOICES.items():
        path = quantize.to_int8(fp32, tmp / f"{label.replace(' ', '_').replace(',', '')}.onnx", calib, opts)
        print(f"| {label} | " + " | ".join(cells(path)) + " |", flush=True)
    nncf = peers.nncf_int8(fp32, calib[: peers.CALIBRATION_IMAGES], tmp / "nncf.xml")
    held, test, gold = cells(nncf, runners=(logits_openvino,))
    print(f"| OpenVINO + NNCF defaults (peer) | | {held} | | | {test} | {gold} |")
    for pre in (False, True):
        path = quantize.to_int8(fp32, tmp / f"pre_{pre}.onnx", calib, quantize.Int8Options(percentile=99.999,
                                                                                            preprocess=pre))
        s = compare(refs["test"], logits_ort(path, sets["test"][0]), "int8", sets["test"][1])
        print(f"quant_pre_process={pre}: test accuracy {s.accuracy:.2%}, agreement {s.top1_agreement:.2%} (ORT)")


if __name__ == "__main__":
    main()

"""Issue 11's figures: bring your own ResNet, on this machine's CPU.

1. The Fashion-MNIST RGB folder: the real images as RGB PNGs, train/ (2,000 a class) and val/ (the 10,000 test
   images), the layout a torchvision user's data has.
2. A 224 px, 3-channel ResNet-50 with random weights and BatchNorm statistics recalibrated on 512 training images of
   that folder (upscaled by its resize policy), saved as a torchvision state_dict and brought in with
   `resnet-edge import`; its export time (`export --data`, fp32 and fp16: a random-weight model cannot pass the
   INT8 gate, which is the point of the gate); the INT8 top-1 agreement with FP32 of our quantizer on real images
   (reported, not gated); and `bench --peers` at batch 1 and 64 against ONNX Runtime and OpenVINO defaults.
3. A ResNet-18 imported the same way, fine-tuned with `train --init` on the RGB folder at 64 px for one epoch on
   the 20,000 training images: its accuracy on the 10,000 val images.

    python scripts/byo_numbers.py --out reports/byo      (about 15 minutes on 2 cores)

With --summary (issue 20), the ResNet-50 alone, exported to every format in FP32 and FP16 (a random-weight model
cannot pass the INT8 gate) on a small folder (100 training and 50 val images a class), and `bench --summary` on it
(accuracy: export's, on the 500 val images PyTorch's own came from): reports/byo/summary50/summary.{md,csv,json,png}.

    python scripts/byo_numbers.py --out reports/byo --summary      (about 30 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnet_edge import fmnist
from train.data import load_image_folder
from train.model import resnet18, resnet50

CLI = [sys.executable, "-m", "resnet_edge"]


def sh(args: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        res = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, text=True)
    if res.returncode:
        sys.exit(f"{' '.join(args)} failed ({res.returncode}); see {log}")
    return time.perf_counter() - t0


def write_folder(root: Path, per_class: int, val_per_class: int | None = None) -> None:
    if (root / "val").is_dir():
        return
    a = fmnist.load_arrays()
    for split, images, labels, keep in (("train", a.train_images, a.train_labels, per_class),
                                        ("val", a.test_images, a.test_labels, val_per_class)):
        for c, name in enumerate(fmnist.CLASS_NAMES):
            d = root / split / f"{c}_{name.replace('/', '_').replace(' ', '_')}"
            d.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == c)[:keep]:
                Image.fromarray(images[i]).convert("RGB").save(d / f"{i:05d}.png")


def random_torchvision_weights(model: torch.nn.Module, folder: Path, size: int, resize: int, out: Path) -> Path:
    """Random weights, BN running statistics recalibrated on real images (a cumulative average over 512)."""
    data = load_image_folder(folder, size, resize, 3)
    imagenet_mean, imagenet_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    from resnet_edge.images import to_input

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    idx = np.random.default_rng(0).permutation(len(data.train))[:512]
    with torch.no_grad():
        for i in range(0, len(idx), 32):
            x = to_input(data.train.images.numpy()[idx[i:i + 32]], imagenet_mean, imagenet_std, size)
            model(torch.from_numpy(x))
    torch.save(model.eval().state_dict(), out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/byo"))
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--summary", action="store_true", help="only the ResNet-50's summary table of every format")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.summary:
        return summary50(out)
    folder = out / "fmnist_rgb"
    figures: dict = {"machine": "this host's CPU (2 cores, AMD EPYC), torch " + torch.__version__}
    t0 = time.perf_counter()
    write_folder(folder, args.per_class)
    figures["folder_written_s"] = time.perf_counter() - t0

    # -- ResNet-50, 224 px ------------------------------------------------------------------------------
    torch.manual_seed(0)
    w50 = random_torchvision_weights(resnet50(in_channels=3, num_classes=10), folder, 224, 256, out / "r50.pth")
    ck50 = out / "r50.pt"
    figures["r50_import_s"] = sh(CLI + ["import", str(w50), "--arch", "resnet50", "--num-classes", "10",
                                        "--image-size", "224", "--data", str(folder), "--out", str(ck50)],
                                 out / "r50_import.log")
    figures["r50_export_s"] = sh(CLI + ["export", str(ck50), "--out", str(out / "art50"), "--data", str(folder),
                                        "--precision", "fp32,fp16", "--limit", "500", "--no-aoti"],
                                 out / "r50_export.log")
    figures["r50_export_command"] = ("resnet-edge export r50.pt --data fmnist_rgb --precision fp32,fp16 --limit 500 "
                                     "--no-aoti")
    figures["r50_int8"] = int8_agreement(out / "art50", ck50, folder)
    figures["r50_bench_s"] = sh(CLI + ["bench", str(out / "art50"), "--backend", "onnxruntime,openvino,torch",
                                       "--precision", "fp32,bf16", "--batch", "1,64", "--peers", "--rounds", "3",
                                       "--duration", "6s", "--accuracy-images", "0", "--json",
                                       str(out / "bench50.json"), "--plot", str(out / "bench50.png")],
                                out / "r50_bench.log")
    figures["r50_bench"] = json.loads((out / "bench50.json").read_text())["speedups"]

    # -- ResNet-18 fine-tuned from --init at 64 px ----------------------------------------------------------
    torch.manual_seed(0)
    w18 = out / "r18.pth"
    torch.save(resnet18(in_channels=3, num_classes=1000).state_dict(), w18)  # torchvision's head: 1000 classes
    ck18 = out / "r18_imported.pt"
    sh(CLI + ["import", str(w18), "--arch", "resnet18", "--num-classes", "1000", "--image-size", "64",
              "--out", str(ck18)], out / "r18_import.log")
    figures["r18_finetune_s"] = sh(CLI + ["train", "--data", str(folder), "--arch", "resnet18", "--image-size", "64",
                                          "--epochs", "1", "--init", str(ck18), "--out", str(out / "ft18")],
                                   out / "r18_finetune.log")
    figures["r18_finetune_command"] = ("resnet-edge train --data fmnist_rgb --arch resnet18 --image-size 64 "
                                       "--epochs 1 --init r18_imported.pt")
    sh(CLI + ["eval", str(out / "ft18" / "best.pt"), "--data", str(folder), "--json", str(out / "ft18_eval.json")],
       out / "r18_eval.log")
    figures["r18_finetune_accuracy"] = json.loads((out / "ft18_eval.json").read_text())["accuracy"]
    (out / "byo.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


def summary50(out: Path) -> None:
    folder = out / "fmnist_rgb_small"
    write_folder(folder, 100, 50)
    torch.manual_seed(0)
    w50 = random_torchvision_weights(resnet50(in_channels=3, num_classes=10), folder, 224, 256, out / "r50s.pth")
    ck50, arts = out / "r50s.pt", out / "art50s"
    figures = {"import_s": sh(CLI + ["import", str(w50), "--arch", "resnet50", "--num-classes", "10", "--image-size",
                                     "224", "--data", str(folder), "--out", str(ck50)], out / "r50s_import.log")}
    export = ["export", str(ck50), "--out", str(arts), "--data", str(folder), "--precision", "fp32,fp16",
              "--formats", "onnx,openvino,litert,ncnn,executorch", "--no-aoti"]
    figures["export_s"] = sh(CLI + export, out / "r50s_export.log")
    bench = ["bench", str(arts), "--summary", "--summary-dir", str(out / "summary50"), "--batch", "1,8",
             "--warmup", "0.5s", "--duration", "2s", "--rounds", "3", "--accuracy-images", "0"]
    figures["bench_s"] = sh(CLI + bench, out / "r50s_bench.log")
    figures["commands"] = ["resnet-edge " + " ".join(export), "resnet-edge " + " ".join(bench)]
    (out / "summary50.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    print((out / "summary50" / "summary.md").read_text())


def int8_agreement(arts: Path, ckpt: Path, folder: Path) -> dict:
    """Our INT8 quantizer on the exported FP32 ONNX, calibrated on 256 training images of the folder, against FP32
    on the export's 500 evaluation images: top-1 agreement (a random-weight model: reported, not gated)."""
    from export.parity import ort_logits
    from export.quantize import to_int8
    from resnet_edge.images import to_input
    from train.checkpoint import Checkpoint
    from train.heldout import evaluation_data

    state = Checkpoint.read(ckpt)
    cfg = state.model(ckpt).config
    evald = evaluation_data(cfg, state.split, folder=folder, limit=500, calib_size=256)
    calib = to_input(evald.calibration.images.numpy(), cfg.mean, cfg.std, cfg.image_size)
    x = to_input(evald.test.images.numpy(), cfg.mean, cfg.std, cfg.image_size)
    t0 = time.perf_counter()
    q = to_int8(arts / "resnet50_fp32.onnx", arts.parent / "r50_int8.onnx", calib)
    quant_s = time.perf_counter() - t0
    fp32, int8 = ort_logits(arts / "resnet50_fp32.onnx", x), ort_logits(q, x)
    return {"top1_agreement": float((fp32.argmax(1) == int8.argmax(1)).mean()), "images": len(x),
            "calibration_images": len(calib), "quantize_s": quant_s}


if __name__ == "__main__":
    main()

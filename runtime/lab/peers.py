"""What a user would run instead of us, per precision class, built in the bench run from the same FP32 ONNX.

FP32: PyTorch eager on the unfolded checkpoint, a default ONNX Runtime session, default OpenVINO (which
silently computes in bf16 on CPUs that have it, and is then compared in the bf16 class).
INT8: ONNX Runtime's ``quantize_static`` with its default settings, and OpenVINO with NNCF post-training
quantization (the `nncf` extra): the ten lines an OpenVINO user writes. Both calibrate on the same
training images our export uses, never on the test set.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from runtime import backends
from runtime.formats import FORMATS
from runtime.spec import Artifacts
from runtime.variants import Variant

CALIBRATION_IMAGES = 300  # NNCF's default subset size; ORT gets the same images


def ort_default_int8(fp32: Path, calib: np.ndarray, out: Path) -> Path:
    """``quantize_static`` as its documentation's example calls it: defaults throughout (QDQ, per-tensor,
    MinMax), one image per calibration batch."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    name = _input_name(fp32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {name: x}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(fp32), str(out), Reader())
    finally:
        root.setLevel(level)
    return out


def nncf_int8(fp32: Path, calib: np.ndarray, out: Path) -> Path:
    """``nncf.quantize`` with its defaults on the OpenVINO model, saved as OpenVINO IR (``out`` is the .xml)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantized = nncf.quantize(model, nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]),
                                  subset_size=len(calib))
    ov.save_model(quantized, str(out))
    return out


def nncf_unavailable() -> str | None:
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "The OpenVINO + NNCF INT8 peer needs OpenVINO (pip install 'resnet-edge[openvino]')."
    if importlib.util.find_spec("nncf") is None:
        return "The OpenVINO + NNCF INT8 peer needs NNCF (pip install 'resnet-edge[nncf]')."
    return None


def _input_name(path: Path) -> str:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].name


def workdir() -> Path:
    """Where peer models are built: a fresh temporary directory, removed at exit."""
    import atexit
    import shutil

    path = Path(tempfile.mkdtemp(prefix="resnet-edge-peers-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _edge_defaults(arts: Artifacts, threads: int) -> list[Variant]:
    """Each edge runtime as its documentation shows it, on the plain FP32 conversion: LiteRT's interpreter resized
    when the batch changes, ncnn with its own option defaults (which pick fp16 or bf16 storage where the CPU has
    them, so it is compared in the class it computes in)."""
    found = []
    for row in (f for f in FORMATS.values() if f.own_defaults):
        art, backend = arts.find(row.name, "fp32"), row.backends[0]
        if art is not None and backends.unavailable_reason(backend) is None:
            found.append(Variant(backend, art.path, "fp32", row.defaults_peer, {"defaults": True, "threads": threads},
                                 art, peer=True))
    return found


COMPILE_PEER_PRECISIONS = ("fp16",)  # torch.compile peers on CUDA; each costs minutes of compiling per batch size


def peer_variants(arts: Artifacts, *, threads: int = 0, calibration: np.ndarray | None = None,
                  device: str = "cpu", compile_precisions: tuple[str, ...] = COMPILE_PEER_PRECISIONS,
                  ) -> tuple[list[Variant], list[str]]:
    """Default settings of what users would otherwise run: FP32 peers on the FP32 model, and, given
    calibration images, INT8 peers quantized from the same FP32 ONNX by their own tools.

    On CUDA the peers are what a PyTorch user runs on the GPU without TensorRT (ONNX Runtime's CUDA provider is not
    part of this toolkit's GPU story): PyTorch eager fp32 on the unfolded model (the reference program), and
    ``torch.compile`` with ``mode="max-autotune"`` on the folded model's program in each of ``compile_precisions``
    (static shapes, compiled per batch size at load; its compile time is reported apart)."""
    from runtime import reference

    fp32, folded = arts.find("onnx", "fp32"), arts.find("torch", "fp32")
    found, skipped = [], []
    common = {"defaults": True, "threads": threads}
    cuda = device.startswith("cuda")
    if not reference.available(arts):
        why = reference.HINT if not reference.torch_installed() else f"re-export: {arts.root} has none"
        skipped.append(f"The PyTorch peers need PyTorch and the artifacts' reference program ({why}).")
    else:
        found.append(Variant("torch", reference.program(arts), "fp32", "peer: PyTorch eager (unfolded)",
                             {"channels_last": False, "threads": threads, "device": device if cuda else "cpu"}, peer=True))
        for p in compile_precisions if cuda and folded else ():
            found.append(Variant("torch", folded.path, p, f"peer: torch.compile max-autotune {p}",
                                 {"compile": "max-autotune", "device": device}, peer=True))
    if cuda:
        return found, skipped
    if fp32 is None:
        return found, skipped
    found.append(Variant("onnxruntime", fp32.path, "fp32", "peer: ONNX Runtime defaults", common, fp32, peer=True))
    found += _edge_defaults(arts, threads)
    have_openvino = backends.unavailable_reason("openvino") is None
    if have_openvino:
        found.append(Variant("openvino", fp32.path, "fp32", "peer: OpenVINO defaults", common, fp32, peer=True))
    if calibration is None:
        return found, skipped
    import importlib.util

    work = workdir()
    if importlib.util.find_spec("onnx") is None:  # ONNX Runtime's quantizer is written on the onnx package
        skipped.append("The ONNX Runtime INT8 peer needs the 'onnx' package (pip install onnx).")
    else:
        ort_q = ort_default_int8(fp32.path, calibration, work / "ort_default_int8.onnx")
        found.append(Variant("onnxruntime", ort_q, "int8", "peer: ONNX Runtime quantize_static defaults", common,
                             peer=True))
    reason = nncf_unavailable()
    if reason:
        skipped.append(reason)
    else:
        ov_q = nncf_int8(fp32.path, calibration, work / "nncf_int8.xml")
        found.append(Variant("openvino", ov_q, "int8", "peer: OpenVINO + NNCF INT8", common, peer=True))
        # The same model compiled as our OpenVINO variants are (a static shape per batch bucket, the LATENCY
        # hint): what a user who tunes OpenVINO runs, so that the INT8 ratio is reported both ways.
        found.append(Variant("openvino", ov_q, "int8", "peer: OpenVINO + NNCF INT8, tuned as ours",
                             {"threads": threads}, peer=True))
    return found, skipped

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

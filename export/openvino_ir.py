"""OpenVINO IR (``.xml`` + ``.bin``), so that an OpenVINO device reads IR instead of converting ONNX at start-up.

FP32 is our FP32 ONNX converted by ``openvino.convert_model`` and saved uncompressed (fp32 weights). INT8 comes
from one of two quantizers (``--int8-quantizer``): ``ort``, our QDQ ONNX converted as is (its QuantizeLinear and
DequantizeLinear pairs become OpenVINO FakeQuantize), or ``nncf``, ``nncf.quantize`` on the FP32 model with the
same calibration images. ``auto`` builds both and keeps the one the held-out split prefers (``choose``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np

INT8_QUANTIZERS = ("auto", "ort", "nncf")


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return "OpenVINO IR needs 'openvino' (pip install 'resnet-edge[openvino]')."
    return None


def nncf_unavailable() -> str | None:
    return None if importlib.util.find_spec("nncf") else "NNCF is not installed (pip install 'resnet-edge[nncf]')"


def weights_path(xml: Path) -> Path:
    return Path(xml).with_suffix(".bin")


def from_onnx(onnx_path: Path, out: Path) -> dict[str, Any]:
    """``onnx_path`` (FP32, or QDQ INT8) as IR at ``out``."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(out), compress_to_fp16=False)
    return {"converter": f"openvino {ov.__version__} convert_model", "from": Path(onnx_path).name}


def nncf_int8(onnx_fp32: Path, out: Path, calibration: np.ndarray) -> dict[str, Any]:
    """``nncf.quantize`` (its defaults: mixed preset, min-max with bias correction) on the FP32 model, as IR."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_fp32))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantized = nncf.quantize(model, nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))]),
                                  subset_size=len(calibration))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return {"converter": f"nncf {nncf.__version__} quantize, openvino {ov.__version__}",
            "calibration_images": len(calibration)}


def choose(held: dict[str, Any]) -> tuple[str, str]:
    """The INT8 quantizer the held-out split prefers: the higher top-1 agreement with PyTorch, then accuracy, then
    ours on a tie (what the other formats were made from). ``held``: quantizer -> ParityResult."""
    rule = ("the higher top-1 agreement with PyTorch on the held-out split, then the higher accuracy there; ort "
            "(our QDQ ONNX) on a tie")
    best = max(held, key=lambda q: (held[q].top1_agreement, held[q].accuracy or 0.0, q == "ort"))
    return best, rule

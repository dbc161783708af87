"""OpenVINO on CPU (the `openvino` extra): the runtime Intel-CPU edge users pick today."""

from __future__ import annotations

import numpy as np

from runtime.backends.base import Backend
from train.errors import InvalidInput


class OpenVinoBackend(Backend):
    """``source`` is an ONNX file. Options: ``hint`` (LATENCY|THROUGHPUT), ``threads``,
    ``defaults`` (compile with no configuration at all: the peer baseline)."""

    name = "openvino"

    def _load(self) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(self.source))
        if self.options.get("defaults"):
            config: dict[str, str] = {}
        else:
            hint = self.options.get("hint", "LATENCY").upper()
            if hint not in ("LATENCY", "THROUGHPUT"):
                raise InvalidInput(f"OpenVINO hint must be LATENCY or THROUGHPUT, not '{hint}'.")
            # FP32 artifacts run in f32: on CPUs with native bf16 the plugin would otherwise pick bf16.
            config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"}
            if self.options.get("threads"):
                config["INFERENCE_NUM_THREADS"] = str(self.options["threads"])
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def describe(self) -> str:
        mode = "defaults" if self.options.get("defaults") else self.options.get("hint", "LATENCY").lower()
        return f"openvino {self.precision} (CPU, {mode})"

    def _close(self) -> None:
        del self.request, self.compiled

"""OpenVINO on CPU (the `openvino` extra): the runtime Intel-CPU edge users pick today."""

from __future__ import annotations

import numpy as np

from resnet_edge.errors import InvalidInput
from runtime.backends.base import Backend, Offer


class OpenVinoBackend(Backend):
    """``source`` is an ONNX file. Options: ``threads``, ``inference_precision`` (f32 by default; bf16
    where the CPU has it), and ``defaults`` (one dynamic-shape compile with no configuration at all:
    the peer baseline). Otherwise the LATENCY hint and one static-shape compile per batch bucket, all
    made at load: OpenVINO runs a static shape faster than a dynamic one."""

    name = "openvino"

    @classmethod
    def offers(cls, art, device, threads, gpu_index=0, skipped=None) -> list[Offer]:
        """The file as pinned (f32); an FP32 file in bf16 too where the CPU has it (held to the bf16 row). The same
        backend reads ONNX and IR: two labels."""
        from runtime.backends.cpu_features import cpu_has_bf16

        kind = "openvino IR" if art.format == "openvino" else cls.name
        found = [Offer(art.precision, f"{kind} {art.tag}", {"threads": threads})]
        if art.precision == "fp32" and cpu_has_bf16():
            found.append(Offer("bf16", f"{kind} bf16", {"threads": threads, "inference_precision": "bf16"}))
        return found

    def _load(self) -> None:
        import openvino as ov

        self.core = ov.Core()
        self.static_shapes = not self.options.get("defaults")
        if self.options.get("defaults"):
            self.config: dict[str, str] = {}
            self.requests: dict[int, object] = {0: self._compile(None)}
            return
        precision = self.options.get("inference_precision", "f32")
        if precision not in ("f32", "bf16"):
            raise InvalidInput(f"OpenVINO inference_precision must be f32 or bf16, not '{precision}'.")
        # Explicit, because on CPUs with native bf16 the plugin silently picks bf16 for FP32 models.
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if self.options.get("threads"):
            self.config["INFERENCE_NUM_THREADS"] = str(self.options["threads"])
        self.requests = {b: self._compile(b) for b in self.buckets}

    def _compile(self, batch: int | None):
        model = self.core.read_model(str(self.source))
        if batch is not None:
            model.reshape({0: [batch, *self.spec.chw]})
        return self.core.compile_model(model, "CPU", self.config).create_infer_request()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        request = self.requests[batch.shape[0] if self.static_shapes else 0]
        request.infer({0: batch}, share_inputs=True, share_outputs=True)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def describe(self) -> str:
        mode = "defaults" if self.options.get("defaults") else "latency"
        if not self.options.get("defaults") and self.options.get("inference_precision", "f32") != "f32":
            mode += ", " + self.options["inference_precision"]
        return f"openvino {self.precision} (CPU, {mode})"

    @property
    def effective_precision(self) -> str:
        """OpenVINO's CPU plugin computes FP32 models in bf16 by default where the CPU has it."""
        if self.precision != "fp32" or not getattr(self, "requests", None):
            return self.precision
        compiled = next(iter(self.requests.values())).get_compiled_model()
        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()  # e.g. "<Type: 'bfloat16'>"
        if "bfloat16" in hint or "bf16" in hint:
            return "bf16"
        if "float16" in hint or "'f16'" in hint:  # bf16 was matched above
            return "fp16"
        return "fp32"

    def _close(self) -> None:
        self.requests.clear()

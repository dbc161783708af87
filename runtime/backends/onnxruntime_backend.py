"""ONNX Runtime: explicit provider order (TensorRT EP, CUDA EP, CPU EP), threads, full graph
optimisation, and IO binding on CUDA."""

from __future__ import annotations

import numpy as np

from resnet_edge.errors import InvalidInput
from runtime.backends.base import Backend, Offer

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeBackend(Backend):
    """Options: ``providers`` (tuple, in priority order), ``threads`` (0 = ORT's choice), ``defaults``
    (a plain InferenceSession, given only the thread count: the peer baseline)."""

    name = "onnxruntime"

    @classmethod
    def offers(cls, art, device, threads, gpu_index=0, skipped=None) -> list[Offer]:
        providers = None if device.startswith("cuda") else ("CPUExecutionProvider",)
        return [Offer(art.precision, f"{cls.name} {art.tag}", {"providers": providers, "threads": threads})]

    def _load(self) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = tuple(self.options.get("providers") or DEFAULT_PROVIDERS)
        explicit = self.options.get("providers") is not None
        missing = [p for p in wanted if p not in available]
        if explicit and missing:
            raise InvalidInput(f"ONNX Runtime {ort.__version__} here lacks {', '.join(missing)} "
                               f"(it has {', '.join(available)}); pip install 'resnet-edge[gpu]' for CUDA.")
        providers = [p for p in wanted if p in available]
        opts = ort.SessionOptions()
        if self.options.get("threads"):
            opts.intra_op_num_threads = int(self.options["threads"])
        if self.options.get("defaults"):
            self.session = ort.InferenceSession(str(self.source), opts, providers=["CPUExecutionProvider"])
        else:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 3
            opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(self.source), opts, providers=providers)
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._on_cuda = self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self._on_cuda:  # IO binding: output stays on the GPU until we copy it once
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, batch)
            binding.bind_output(self.output_name, "cuda")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def describe(self) -> str:
        provider = getattr(self, "providers", ["?"])[0].replace("ExecutionProvider", "")
        mode = " defaults" if self.options.get("defaults") else ""
        return f"onnxruntime {self.precision} ({provider}{mode})"

    @property
    def device(self) -> str:
        return "cuda" if getattr(self, "_on_cuda", False) else "cpu"

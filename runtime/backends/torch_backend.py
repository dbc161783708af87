"""PyTorch: the original or BN-folded checkpoint, on CPU or CUDA, in fp32, fp16 or bf16, with
channels_last, optional CUDA graphs (static shapes, one graph per batch size) and optional torch.compile."""

from __future__ import annotations

import numpy as np

from runtime.backends.base import Backend
from train.errors import InvalidInput

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchBackend(Backend):
    """``source`` is a checkpoint. Options: ``device`` (cpu|cuda), ``folded`` (default True),
    ``channels_last`` (default True), ``cuda_graphs``, ``compile``, ``threads``."""

    name = "torch"

    def _load(self) -> None:
        import torch

        from export.fold import fold_batchnorm
        from train.checkpoint import load_model

        if self.precision not in DTYPES:
            raise InvalidInput(f"torch precision must be one of {', '.join(DTYPES)}, not '{self.precision}'.")
        self._device = torch.device(self.options.get("device", "cpu"))
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidInput("The torch backend was asked for CUDA, but PyTorch sees no CUDA GPU here.")
        if self.precision == "fp16" and self._device.type == "cpu":
            raise InvalidInput("torch fp16 inference needs CUDA; use fp32 or bf16 on CPU.")
        if self.options.get("threads"):
            torch.set_num_threads(int(self.options["threads"]))
        model = load_model(self.source)
        if self.options.get("folded", True):
            model = fold_batchnorm(model)
        self._dtype = getattr(torch, DTYPES[self.precision])
        self._format = torch.channels_last if self.options.get("channels_last", True) else torch.contiguous_format
        model = model.to(self._device, self._dtype).to(memory_format=self._format).eval()
        if self.options.get("compile"):
            model = torch.compile(model, dynamic=False)
        self.model = model
        self._graphs: dict[int, tuple] = {}

    def _to_device(self, batch: np.ndarray):
        import torch

        x = torch.from_numpy(batch).to(self._device, non_blocking=True)
        return x.to(self._dtype).contiguous(memory_format=self._format)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if self.options.get("cuda_graphs") and self._device.type == "cuda":
                return self._graph_infer(batch)
            return self.model(self._to_device(batch)).float().cpu().numpy()

    def _graph_infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        n = batch.shape[0]
        if n not in self._graphs:
            static_in = self._to_device(batch)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm up cuDNN autotuning outside the capture
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
            self._graphs[n] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[n]
        static_in.copy_(self._to_device(batch))
        graph.replay()
        return static_out.float().cpu().numpy()

    def compute_only_ms(self, batch: np.ndarray, iterations: int = 50) -> float | None:
        """Median GPU time of the forward pass alone (CUDA events; the input already on the device)."""
        import torch

        if self._device.type != "cuda":
            return None
        x = self._to_device(batch)
        times = []
        with torch.inference_mode():
            for _ in range(5):
                self.model(x)
            for _ in range(iterations):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                self.model(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        return float(np.median(times))

    def describe(self) -> str:
        parts = [self.options.get("device", "cpu")]
        parts.append("folded" if self.options.get("folded", True) else "unfolded eager")
        if self.options.get("channels_last", True):
            parts.append("channels_last")
        if self.options.get("cuda_graphs"):
            parts.append("CUDA graphs")
        if self.options.get("compile"):
            parts.append("compiled")
        return f"torch {self.precision} ({', '.join(parts)})"

    @property
    def device(self) -> str:
        return str(self.options.get("device", "cpu"))

    def _close(self) -> None:
        self._graphs.clear()

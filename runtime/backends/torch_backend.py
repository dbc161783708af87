"""PyTorch: a ``torch.export`` program from the artifacts (the BN-folded model, or the unfolded reference), on CPU
or CUDA, in fp32, fp16 or bf16, with channels_last and optional CUDA graphs (one per batch bucket, all captured at
load).

``compile`` (a ``torch.compile`` mode, e.g. ``max-autotune``) is for bench's peer only: what a PyTorch user runs
without TensorRT. It compiles one static-shape program per batch bucket at load, and records the time it took
(``compile_s``) so that bench reports it apart from the latency."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from resnet_edge.errors import ArtifactMismatch, InvalidInput
from runtime.backends.base import Backend, Offer

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def load_program(path: Path):
    """A ``torch.export`` program (``export.program``) as a module; one sentence if the file is not one."""
    import torch

    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:  # torch raises many kinds here (zip, pickle, schema version)
        raise ArtifactMismatch(f"{path.name} is not a torch.export program this torch {torch.__version__} can load "
                               f"({type(exc).__name__}); re-export it.") from None


class TorchBackend(Backend):
    """``source`` is a ``torch.export`` program: the folded model (an artifact) or the unfolded reference.
    Options: ``device`` (cpu|cuda), ``channels_last`` (default True), ``cuda_graphs``, ``compile`` (a torch.compile
    mode; peers only),
    ``threads`` (CPU threads for this backend's calls only: torch's thread count is process-wide, so it is set
    around each call and restored)."""

    compile_s: float | None = None

    name = "torch"

    @classmethod
    def offers(cls, art, device, threads, gpu_index=0, skipped=None) -> list[Offer]:
        """fp32, and the reduced precision the device has (fp16 on CUDA, with and without CUDA graphs; bf16 on a
        CPU with native bf16)."""
        dev = device if device != "auto" else "cpu"
        cuda = dev.startswith("cuda")
        found = [Offer(p, f"torch {p} folded", {"device": dev, "threads": threads})
                 for p in ["fp32"] + (["fp16"] if cuda else ["bf16"] if onednn_bf16() else [])]
        if cuda:
            found.append(Offer("fp16", "torch fp16 folded+graphs", {"device": dev, "cuda_graphs": True}))
        return found

    def _load(self) -> None:
        import torch

        if self.precision not in DTYPES:
            raise InvalidInput(f"torch precision must be one of {', '.join(DTYPES)}, not '{self.precision}'.")
        self._device = torch.device(self.options.get("device", "cpu"))
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidInput("The torch backend was asked for CUDA, but PyTorch sees no CUDA GPU here.")
        if self.precision == "fp16" and self._device.type == "cpu":
            raise InvalidInput("torch fp16 inference needs CUDA; use fp32 or bf16 on CPU.")
        self._threads = int(self.options.get("threads") or 0)
        model = load_program(self.source)
        self._dtype = getattr(torch, DTYPES[self.precision])
        self._format = torch.channels_last if self.options.get("channels_last", True) else torch.contiguous_format
        self.model = model.to(self._device, self._dtype).to(memory_format=self._format)  # exported in eval mode
        self._graphs: dict[int, tuple] = {}
        graphs = bool(self.options.get("cuda_graphs")) and self._device.type == "cuda"
        if self.options.get("compile") and graphs:
            raise InvalidInput("torch.compile and this backend's own CUDA graphs are exclusive; pick one.")
        self.static_shapes = graphs or bool(self.options.get("compile"))  # both pad batches to the buckets
        if graphs:
            self._capture_all()
        elif self.options.get("compile"):
            self._compile(str(self.options["compile"]))

    def _compile(self, mode: str) -> None:
        """``torch.compile(mode=...)`` with static shapes, compiled now for every bucket (never on the request path,
        where a new batch size would otherwise recompile for minutes); the time it took is ``compile_s``."""
        import time

        import torch

        compiled = torch.compile(self.model, mode=mode, dynamic=False)
        t0 = time.perf_counter()
        with self._scope():
            for n in self.buckets:
                x = torch.zeros((n, *self.spec.chw), device=self._device, dtype=self._dtype)
                x = x.contiguous(memory_format=self._format)
                for _ in range(3):  # the first call compiles; later ones record and replay its CUDA graphs
                    compiled(x)
        if self._device.type == "cuda":
            torch.cuda.synchronize()
        self.compile_s = time.perf_counter() - t0
        self.model = compiled

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        """Inference mode, this backend's CPU threads, and on CUDA no TF32 for fp32: fp32 parity means fp32."""
        import torch

        previous = torch.get_num_threads()
        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        strict = self._device.type == "cuda" and self.precision == "fp32"
        try:
            if self._threads and self._threads != previous:
                torch.set_num_threads(self._threads)
            if strict:
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            with torch.inference_mode():
                yield
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)
            if strict:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32

    def _to_device(self, batch: np.ndarray):
        import torch

        x = torch.from_numpy(batch).to(self._device, non_blocking=True)
        return x.to(self._dtype).contiguous(memory_format=self._format)

    def _capture_all(self) -> None:
        """One CUDA graph per bucket, captured now (never on the request path), sharing one memory pool,
        each with a static device input and output and pinned host buffers for non-blocking copies."""
        import torch

        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream()
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True  # each bucket's warm-up times cuDNN's algorithms; the graph keeps the best
        try:
            self._capture_buckets(pool, stream)
        finally:
            torch.backends.cudnn.benchmark = benchmark
        torch.cuda.synchronize()

    def _capture_buckets(self, pool, stream) -> None:
        import torch

        with self._scope():
            for n in sorted(self.buckets, reverse=True):  # largest first, so smaller graphs reuse its pool
                static_in = torch.zeros((n, *self.spec.chw), device=self._device, dtype=self._dtype)
                static_in = static_in.contiguous(memory_format=self._format)
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):  # cuDNN autotuning and lazy init happen outside the capture
                        self.model(static_in)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    static_out = self.model(static_in)
                host_in = torch.empty((n, *self.spec.chw), dtype=torch.float32, pin_memory=True)
                host_out = torch.empty(tuple(static_out.shape), dtype=torch.float32, pin_memory=True)
                self._graphs[n] = (graph, static_in, static_out, host_in, host_out)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._scope():
            if self._graphs:
                return self._graph_infer(batch)
            return self.model(self._to_device(batch)).float().cpu().numpy()

    def _graph_infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        graph, static_in, static_out, host_in, host_out = self._graphs[batch.shape[0]]
        host_in.numpy()[...] = batch
        static_in.copy_(host_in, non_blocking=True)
        graph.replay()
        host_out.copy_(static_out, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return host_out.numpy().copy()

    def compute_only_ms(self, batch: np.ndarray, iterations: int = 50) -> float | None:
        """Median GPU time of the forward pass alone (CUDA events, the input already on the device):
        the graph replay when graphs are on, else the eager forward."""
        import torch

        if self._device.type != "cuda":
            return None
        times = []
        with self._scope():
            if self._graphs:
                graph, static_in, _, _, _ = self._graphs[next(b for b in self.buckets if b >= batch.shape[0])]
                static_in[: batch.shape[0]].copy_(self._to_device(batch))
                run = graph.replay
            else:
                x = self._to_device(batch)
                run = lambda: self.model(x)  # noqa: E731
            for _ in range(5):
                run()
            for _ in range(iterations):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        return float(np.median(times))

    def describe(self) -> str:
        parts = [self.options.get("device", "cpu")]
        parts.append(self.source.name)
        if self.options.get("channels_last", True):
            parts.append("channels_last")
        if self.options.get("cuda_graphs"):
            parts.append("CUDA graphs")
        if self.options.get("compile"):
            parts.append(f"torch.compile {self.options['compile']}")
        return f"torch {self.precision} ({', '.join(parts)})"

    @property
    def device(self) -> str:
        """Where it runs: once loaded, the device the model is on (an AOTI package decides its own)."""
        loaded = getattr(self, "_device", None)
        return loaded.type if loaded is not None else str(self.options.get("device", "cpu"))

    def _close(self) -> None:
        self._graphs.clear()


def onednn_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (its own answer)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False

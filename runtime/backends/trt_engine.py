"""Running serialized TensorRT and TensorRT-RTX engines (the named-tensor API both share): the runtime's half.

The two libraries are two ``Library`` rows, not two copies of the code: TensorRT 10/11 (``tensorrt``, engines for
one GPU, built on that GPU) and TensorRT for RTX (``tensorrt_rtx``, engines built ahead of time on any machine, GPU
or not, for a set of compute capabilities). Export builds engines (``export.tensorrt``) and verifies them with the
same :class:`EngineRunner` the runtime backends serve with. Everything known about an engine lives in its JSON
sidecar, which is checked against the running library and GPU before the plan is deserialized. The library (and
torch, whose CUDA tensors are the buffers) is imported lazily: without it the caller gets one sentence naming what
to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_edge.errors import ArtifactMismatch, InvalidInput, MissingDependency


@dataclass(frozen=True)
class Library:
    """One of the two TensorRT libraries, and where they differ."""

    title: str  # as sentences name it
    module: str  # what ``import`` takes
    fmt: str  # the formats table's row (and the manifest's ``format``)
    extra: str  # the pip extra that installs it
    version_key: str  # the sidecar's field for the library version
    builds_without_gpu: bool  # TensorRT-RTX's ahead-of-time build needs no GPU; TensorRT's builder times on one
    always_strongly_typed: bool  # TensorRT-RTX has no precision flags: the precision comes from the graph
    # compute capabilities a GPU must have to run its engines (empty: any that the library itself supports)
    runs_on: tuple[str, ...] = ()

    @property
    def install_hint(self) -> str:
        where = " on a machine with an NVIDIA GPU" if not self.builds_without_gpu else ""
        return f"pip install 'resnet-edge[{self.extra}]'{where}"

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ImportError:  # a broken install, or a finder that refuses the name
            return False

    def load(self) -> Any:
        if not self.installed():
            raise MissingDependency(f"{self.title} is not installed ({self.install_hint}).")
        return importlib.import_module(self.module)

    def strongly_typed(self, trt: Any) -> bool:
        return self.always_strongly_typed or int(str(trt.__version__).split(".")[0]) >= 11


TENSORRT = Library("TensorRT", "tensorrt", "tensorrt", "gpu", "tensorrt_version", builds_without_gpu=False,
                   always_strongly_typed=False)
# Turing to Blackwell RTX and workstation cards, A100, A10, L4/L40; not Hopper, not Jetson (TensorRT-RTX 1.7).
TENSORRT_RTX = Library("TensorRT-RTX", "tensorrt_rtx", "tensorrt_rtx", "rtx", "tensorrt_rtx_version",
                       builds_without_gpu=True, always_strongly_typed=True,
                       runs_on=("7.5", "8.0", "8.6", "8.9", "12.0", "12.1"))
LIBRARIES = {lib.fmt: lib for lib in (TENSORRT, TENSORRT_RTX)}


def gpu_capability() -> str | None:
    """The compute capability of the current CUDA GPU as torch sees it ("8.6"), or None without one (or torch)."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(torch.cuda.current_device())
    return f"{major}.{minor}"


def run_unavailable_reason(lib: Library = TENSORRT) -> str | None:
    """None when ``lib``'s engines can run here; otherwise why not, as one sentence."""
    if not lib.installed():
        return f"{lib.title} is not installed ({lib.install_hint})."
    if importlib.util.find_spec("torch") is None:
        return f"{lib.title} engines run on torch's CUDA buffers, and torch is not installed (pip install 'resnet-edge[train]')."
    cc = gpu_capability()
    if cc is None:
        return f"{lib.title} is installed but PyTorch sees no CUDA GPU."
    if lib.runs_on and cc not in lib.runs_on:
        return (f"{lib.title} engines do not run on this GPU (compute capability {cc}; {lib.title} runs on "
                f"{', '.join(lib.runs_on)}).")
    return None


def engine_unavailable_reason(engine: Path, lib: Library = TENSORRT) -> str | None:
    """None when this engine can run here; otherwise why not, as one sentence (a TensorRT-RTX engine also needs this
    GPU among the compute capabilities it was built for)."""
    reason = run_unavailable_reason(lib)
    if reason is None and lib.builds_without_gpu:
        cc = gpu_capability()
        if cc not in EngineSidecar.read(engine).targets:
            reason = f"this GPU's compute capability {cc} is not among the targets built for."
    return reason


def unavailable_reason(lib: Library = TENSORRT) -> str | None:
    """None when ``lib``'s engines can be built here; otherwise why not, as one sentence."""
    if lib.builds_without_gpu:
        return None if lib.installed() else f"{lib.title} is not installed ({lib.install_hint})."
    return run_unavailable_reason(lib)


def _trt(lib: Library = TENSORRT, *, to_run: bool = True) -> Any:
    reason = run_unavailable_reason(lib) if to_run else unavailable_reason(lib)
    if reason:
        raise MissingDependency(reason)
    return lib.load()


def device_identity() -> dict[str, str]:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(engine.suffix + ".json")


@dataclass(frozen=True)
class EngineSidecar:
    """An engine's JSON sidecar, read and checked once per load: the library that built it and its version, the
    optimization profile, the GPU (TensorRT) or the compute capabilities (TensorRT-RTX) it was built for, and the
    whole document for people (``doc``)."""

    engine: Path
    lib: Library
    library_version: str | None
    min_batch: int
    max_batch: int
    targets: tuple[str, ...]  # TensorRT-RTX: the compute capabilities built for
    gpu: str | None  # TensorRT: the GPU it was built on
    compute_capability: str | None
    doc: dict[str, Any]

    @classmethod
    def read(cls, engine: Path) -> EngineSidecar:
        side = sidecar_path(Path(engine))
        try:
            doc = json.loads(side.read_text())
        except (OSError, ValueError):
            raise ArtifactMismatch(f"{engine} has no readable sidecar {side.name}; rebuild it with 'resnet-edge "
                                   "export'.") from None
        if not isinstance(doc, dict):
            raise ArtifactMismatch(f"{side} is not a JSON object; rebuild the engine with 'resnet-edge export'.")
        lib = LIBRARIES.get(str(doc.get("format", "tensorrt")))  # TensorRT for sidecars older than the field
        if lib is None:
            raise ArtifactMismatch(f"{side} names the format {str(doc.get('format'))[:40]!r}, which is neither "
                                   "tensorrt nor tensorrt_rtx; rebuild the engine with 'resnet-edge export'.")
        try:
            profile = doc["profile"]
            lo, hi = int(profile["min_batch"]), int(profile["max_batch"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactMismatch(f"{engine} has no readable sidecar {side.name} (its optimization profile is "
                                   "missing); rebuild it with 'resnet-edge export --trt'.") from None
        version = doc.get(lib.version_key)
        return cls(Path(engine), lib, None if version is None else str(version), lo, hi,
                   tuple(str(c) for c in doc.get("compute_capabilities") or ()), doc.get("gpu"),
                   doc.get("compute_capability"), doc)


def read_sidecar(engine: Path) -> dict[str, Any]:
    """The sidecar's whole document (for people and reports); the runtime reads :class:`EngineSidecar`."""
    return EngineSidecar.read(engine).doc


def library_of(engine: Path) -> Library:
    """The library whose sidecar fields an engine's sidecar carries (TensorRT for sidecars older than the field)."""
    return EngineSidecar.read(engine).lib


def check_compatible(engine: Path, lib: Library | None = None, side: EngineSidecar | None = None) -> EngineSidecar:
    """Refuse, in one sentence naming both sides, an engine built by another library version or for another GPU."""
    side = side or EngineSidecar.read(engine)
    lib = lib or side.lib
    trt = lib.load()
    here_version, built_version = str(trt.__version__), side.library_version
    if built_version != here_version:  # told before anything needs a GPU
        raise ArtifactMismatch(f"{engine} was built by {lib.title} {built_version} but this machine has {lib.title} "
                               f"{here_version}; rebuild it with 'resnet-edge export'.")
    if lib.builds_without_gpu:  # built for a set of compute capabilities, on any machine
        if gpu_capability() is None:
            raise MissingDependency(run_unavailable_reason(lib) or f"{lib.title} engines need a CUDA GPU.")
        here = device_identity()
        targets = side.targets
        if here["compute_capability"] not in targets:
            raise ArtifactMismatch(f"{engine} was built for compute capabilities {', '.join(targets) or 'none'} but "
                                   f"this GPU ({here['gpu']}) has {here['compute_capability']}; rebuild it with "
                                   f"'resnet-edge export --trt-rtx-cc {here['compute_capability']}'.")
        return side
    _trt(lib)
    here = device_identity()
    for built, key, label in ((side.gpu, "gpu", "GPU"), (side.compute_capability, "compute_capability",
                                                          "compute capability")):
        if built != here[key]:
            raise ArtifactMismatch(f"{engine} was built for {label} {built} but this machine has "
                                   f"{here[key]}; rebuild it here with 'resnet-edge export --trt'.")
    return side


def load_engine(engine: Path, lib: Library | None = None, side: EngineSidecar | None = None):
    """Deserialize a compatible engine (checked against its sidecar first)."""
    side = side or EngineSidecar.read(engine)
    lib = lib or side.lib
    check_compatible(engine, lib, side)
    trt = lib.load()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    cuda_engine = runtime.deserialize_cuda_engine(engine.read_bytes())
    if cuda_engine is None:
        raise ArtifactMismatch(f"{lib.title} could not deserialize {engine}.")
    return cuda_engine


def runtime_cache_path(engine: Path) -> Path:
    """TensorRT-RTX's runtime cache (the kernels its JIT compiled for this GPU), kept beside the engine."""
    return engine.with_suffix(engine.suffix + ".runtime-cache")


class EngineRunner:
    """The one way an engine runs here (export verifies with it, the runtime backends serve with it):
    named tensors, torch CUDA tensors as buffers, copy-in, execute and copy-out on one stream."""

    def __init__(self, engine: Path, lib: Library | None = None, side: EngineSidecar | None = None) -> None:
        import torch

        self.path = Path(engine)
        self.side = side or EngineSidecar.read(self.path)
        self.lib = lib or self.side.lib
        trt = self.lib.load()
        self.engine = load_engine(self.path, self.lib, self.side)  # checks the sidecar against the library and GPU
        self.meta = self.side.doc
        self.context = self._context(trt)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.max_batch = self.side.max_batch
        self.stream = torch.cuda.Stream()

    def _context(self, trt: Any):
        if not self.lib.builds_without_gpu:
            return self.engine.create_execution_context()
        # TensorRT-RTX compiles its kernels for this GPU when a context is made: a runtime cache beside the engine
        # keeps them across processes (written back on close).
        config = self.engine.create_runtime_config()
        self.cache = config.create_runtime_cache()
        cache_file = runtime_cache_path(self.path)
        if cache_file.is_file():
            self.cache.deserialize(cache_file.read_bytes())
        config.set_runtime_cache(self.cache)
        return self.engine.create_execution_context(config)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.cuda.stream(self.stream):
            xb = torch.from_numpy(np.ascontiguousarray(x)).pin_memory().to("cuda", non_blocking=True)
            if not self.context.set_input_shape(self.input_name, tuple(xb.shape)):
                raise InvalidInput(f"Batch {xb.shape[0]} is outside the optimization profile of {self.path.name} "
                                   f"({self.side.min_batch}..{self.side.max_batch}); rebuild it with a wider "
                                   "--trt-batch.")
            yb = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.input_name, xb.data_ptr())
            self.context.set_tensor_address(self.output_name, yb.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ArtifactMismatch(f"{self.lib.title} failed to run {self.path}.")
            out = yb.to("cpu", non_blocking=True)
        self.stream.synchronize()
        return out.numpy()

    def close(self) -> None:
        cache = getattr(self, "cache", None)
        if cache is not None:
            from resnet_edge.atomic import atomic_write_bytes

            try:
                atomic_write_bytes(runtime_cache_path(self.path), bytes(cache.serialize()))
            except OSError:
                pass  # a read-only model folder: the next process compiles again
        del self.context, self.engine


def engine_max_batch(engine: Path) -> int:
    """The largest batch the engine's optimization profile accepts, from its sidecar (no GPU needed)."""
    return EngineSidecar.read(engine).max_batch

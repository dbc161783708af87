"""What every export step reads: the checkpoint loaded and BN-folded once, the evaluation, calibration and held-out
images, and the PyTorch FP32 reference on them; plus the one way an artifact becomes a manifest row."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.fold import fold_batchnorm
from export.onnx import INPUT_NAME, OUTPUT_NAME
from export.parity import TOLERANCES, ParityResult, compare
from resnet_edge import __version__
from resnet_edge.atomic import sha256_file
from resnet_edge.errors import ArtifactMismatch, InvalidInput
from resnet_edge.images import to_input
from runtime.contract import (
    GOLDEN_FILE,
    IO,
    ArtifactRow,
    Golden,
    Model,
    Precision,
    Preprocessing,
    Reference,
    Tensor,
)
from runtime.formats import FORMATS
from runtime.outputs import run_batched
from train.checkpoint import Checkpoint
from train.heldout import evaluation_data

GOLDEN_N = 1000  # enough for INT8's 99% top-1 agreement bound to be resolved (one image is 0.1%)


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript

    return {"resnet_edge": __version__, "torch": str(torch.__version__), "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxscript": onnxscript.__version__}


def reference_logits(model: torch.nn.Module, x: np.ndarray, num_classes: int) -> np.ndarray:
    """``model`` eager on the CPU over ``x`` [N, C, H, W] (``runtime.outputs.run_batched``'s batches)."""
    if not len(x):
        return np.zeros((0, num_classes), np.float32)
    with torch.inference_mode():
        return run_batched(lambda b: model(torch.from_numpy(b)).numpy(), x)


@dataclass
class ExportSource:
    """The checkpoint, its folded model, the data export decides on, and the reference logits."""

    checkpoint: Path
    state: Checkpoint
    model: torch.nn.Module
    folded: torch.nn.Module
    sha256: str
    tools: dict[str, str] = field(default_factory=tool_versions)

    @classmethod
    def load(cls, checkpoint: Path) -> ExportSource:
        state = Checkpoint.read(checkpoint)
        model = state.model(checkpoint)
        return cls(checkpoint, state, model, fold_batchnorm(model), sha256_file(checkpoint))

    @property
    def config(self):
        return self.model.config

    @property
    def name(self) -> str:
        return f"resnet{self.config.depth}"

    @property
    def chw(self) -> tuple[int, int, int]:
        m = self.config
        return (m.in_channels, m.image_size, m.image_size)

    def load_data(self, *, data_dir: Path | None, folder: Path | None, limit: int | None, calib_size: int,
                  heldout_size: int, seed: int, console=None) -> None:
        """Evaluation images, and training images for calibration and export's decisions, by the split the
        checkpoint recorded (``train.heldout``): never an image it evaluates on, never one it trained on for
        the decisions."""
        from export.quantize import MIN_CALIBRATION

        m = self.config
        data = evaluation_data(m, self.state.split, data_dir=data_dir, folder=folder, limit=limit,
                               calib_size=calib_size, heldout_size=heldout_size, seed=seed, console=console)
        if calib_size and len(data.calibration) < MIN_CALIBRATION:
            raise InvalidInput(f"{folder or 'the dataset'} has {len(data.calibration)} training images for INT8 "
                               f"calibration; it needs at least {MIN_CALIBRATION} (or pass --precision fp32,fp16).")
        self.data, self.labels, self.evaluated = data, data.test.labels.numpy(), data.description
        self.notes = {f"{k}_images": v for k, v in data.notes.items()}
        self.test_x = to_input(data.test.images.numpy(), m.mean, m.std, m.image_size)
        self.calib_x = to_input(data.calibration.images.numpy(), m.mean, m.std, m.image_size)
        self.heldout_x = to_input(data.heldout.images.numpy(), m.mean, m.std, m.image_size)
        self.heldout_labels = data.heldout.labels.numpy()

    def reference(self) -> None:
        """The PyTorch FP32 logits of the unfolded checkpoint on the test and held-out images, and the check that
        folding changed them by no more than float32 rounding."""
        k = self.config.num_classes
        self.ref = reference_logits(self.model, self.test_x, k)
        self.heldout_ref = reference_logits(self.model, self.heldout_x, k)
        self.fold = compare(self.ref, reference_logits(self.folded, self.test_x, k), Precision.FP32, self.labels)
        bound = TOLERANCES["fp32"].max_rel
        if self.fold.max_rel > bound or self.fold.top1_agreement < 1.0:
            raise ArtifactMismatch(f"BN folding changed the logits: max |dlogit| {self.fold.max_abs:.3g} "
                                   f"({self.fold.max_rel:.3g} of max |logit|, bound {bound}), top-1 agreement "
                                   f"{self.fold.top1_agreement:.2%}.")

    def write_golden(self, staging: Path) -> Golden:
        """The golden set, a saved reference run: real test images as uint8, their labels and the PyTorch FP32
        logits, so that a device without torch or the dataset can verify its artifacts (``resnet-edge parity``)."""
        from runtime.outputs import SavedRun

        n = min(GOLDEN_N, len(self.labels))
        path = SavedRun(self.data.test.images[:n].numpy(), self.labels[:n].astype(np.int64),
                        self.ref[:n].astype(np.float32)).save(staging / GOLDEN_FILE)
        return Golden(GOLDEN_FILE, sha256_file(path), n,
                      f"the first {n} evaluation images of {self.evaluated}, uint8, at the source size",
                      "PyTorch FP32, the unfolded checkpoint, eager on the CPU")

    def write_reference(self, staging: Path) -> Reference:
        """The unfolded checkpoint as a ``torch.export`` program: the reference, as a file the runtime can run."""
        from export.program import load_program, save_program

        path = save_program(self.model, staging / f"{self.name}_reference.pt2", self.chw)
        check = compare(self.ref, reference_logits(load_program(path), self.test_x, self.config.num_classes))
        if check.max_abs != 0.0:
            raise ArtifactMismatch(f"The exported reference program differs from the checkpoint by {check.max_abs:.3g}.")
        return Reference(path.name, sha256_file(path), "torch.export program of the unfolded checkpoint, fp32; its "
                                                       "logits equal the checkpoint's on the evaluation set")

    def row(self, path: Path, precision: str, logits: np.ndarray, build_s: float, eval_s: float, *,
            fmt: str = "onnx", target: str = "any", **extra: Any) -> ArtifactRow:
        """The manifest row of one artifact, held to its precision's whole row of the tolerance table."""
        return artifact_row(path, precision, compare(self.ref, logits, precision, self.labels), build_s, eval_s,
                            fmt=fmt, target=target, tools=self.tools, **extra)

    def model_entry(self) -> Model:
        m = self.config
        return Model(self.name, m.num_classes, tuple(m.class_names), m.depth, m.stem,
                     self.state.compression)

    def preprocessing(self) -> Preprocessing:
        m = self.config
        return Preprocessing(m.image_size, m.in_channels, tuple(m.mean_per_channel), tuple(m.std_per_channel),
                             m.resize, m.source_size, m.source_resize)

    def spec(self):
        """The runtime's view of the model, as it will read it from the manifest: what a backend is made with."""
        from runtime.spec import ModelSpec

        m, io = self.config, self.io()
        return ModelSpec(self.name, io.input.name, io.output.name, m.in_channels, m.image_size, m.num_classes,
                         tuple(m.class_names), tuple(m.mean_per_channel), tuple(m.std_per_channel), m.resize,
                         m.source_size, m.source_resize)

    def io(self) -> IO:
        return IO(Tensor(INPUT_NAME, "float32", (-1, *self.chw)), Tensor(OUTPUT_NAME, "float32",
                                                                        (-1, self.config.num_classes)))


def artifact_row(path: Path, precision: str, stats: ParityResult | None, build_s: float, eval_s: float, *,
                 fmt: str = "onnx", target: str = "any", tools: dict[str, str] | None = None,
                 **extra: Any) -> ArtifactRow:
    """A verified artifact's row; with ``stats`` None, one that was built and checked but not run here (status
    ``built``: a TensorRT-RTX engine on a machine without a GPU it runs on), whose ``details`` say what was checked."""
    from runtime.backends.trt_engine import LIBRARIES

    precision = Precision(precision)
    tools = dict(tools or {})
    if extra.get("sidecar"):  # weights beside a .param or .xml, metadata beside an engine: hashed like the file
        extra["sidecar_sha256"] = sha256_file(path.parent / extra["sidecar"])
    if fmt in LIBRARIES:
        lib = LIBRARIES[fmt]
        tools[lib.module] = str(lib.load().__version__)
    size = path.stat().st_size + ((path.parent / extra["sidecar"]).stat().st_size if extra.get("sidecar") else 0)
    status = "built" if stats is None else "fail" if stats.failures else "ok"
    return ArtifactRow(path=path.name, format=fmt, precision=precision, target=target, sha256=sha256_file(path),
                       size_bytes=size, test_accuracy=None if stats is None else stats.accuracy, parity=stats,
                       max_acc_drop_pt=TOLERANCES[precision.value].max_acc_drop_pt,
                       status=status, failures=() if stats is None else stats.failures,
                       build_seconds=round(build_s, 3), eval_seconds=round(eval_s, 3), tools=tools,
                       runtime_settings=dict(FORMATS[fmt].runtime_settings) if fmt in FORMATS else {}, **extra)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0

"""``manifest.json``, typed: what export hands to the runtime, with its one reader and its one writer.

Export builds a ``Manifest`` and writes it with ``write_manifest``; the runtime, the Triton repository and the
parity and bench commands read it with ``read_manifest``, which checks every field against its type (a missing or
mistyped one is one sentence naming it) and every artifact's sha256. ``manifest.schema.json`` beside this module
is the published JSON Schema of version 2, generated from these classes (``python -m runtime.contract``); version-1
manifests (resnet-edge 0.1 before the typed contract) are read and upgraded in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from resnet_edge.compression import Compression
from resnet_edge.errors import ArtifactMismatch
from resnet_edge.images import policy_text
from resnet_edge.typed import Malformed, from_json, schema, to_json
from runtime.precision import Precision
from runtime.tolerances import ParityResult

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
GOLDEN_FILE = "golden.npz"  # real test images (uint8), labels and PyTorch FP32 logits: parity without torch
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")


@dataclass(frozen=True)
class Model:
    """The network: its name (resnet18, ...), its shape and what its outputs mean."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    depth: int = 18
    stem: str = "imagenet"
    compression: Compression | None = None  # None: the model as trained


@dataclass(frozen=True)
class Preprocessing:
    """What turns an image into the input tensor: the source size and resize policy, then scale to [0, 1], resize
    to ``image_size`` and normalise per channel, NCHW."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "bilinear"
    source_size: int = 28  # the size of the images the data is made of (Fashion-MNIST: 28)
    source_resize: int | None = None  # the shorter side before the centre crop; None: stretch to the source size

    def derived(self) -> dict[str, Any]:
        """Written for people and generic clients; never read back (they follow from the fields)."""
        return {"scale": 1 / 255, "layout": "NCHW", "policy": policy_text(self.source_size, self.source_resize),
                "color": "RGB" if self.channels == 3 else "L"}


@dataclass(frozen=True)
class Tensor:
    """A model input or output: name, dtype and shape (-1: the batch)."""

    name: str
    dtype: str = "float32"
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class IO:
    """The one input and the one output every artifact of the model has."""

    input: Tensor
    output: Tensor


@dataclass(frozen=True)
class Source:
    """The checkpoint the artifacts were exported from, and its accuracy as export measured it."""

    checkpoint: str
    sha256: str
    test_accuracy: float
    epoch: int = 0
    train_reported_test_accuracy: float | None = None
    data_sha256: str = ""


@dataclass(frozen=True)
class Golden:
    """A saved reference run: real evaluation images (uint8, at the source size), their labels and the PyTorch
    FP32 logits, so that a device without torch or the dataset can verify its artifacts."""

    path: str
    sha256: str
    n: int = 0
    images: str = ""
    logits: str = ""


@dataclass(frozen=True)
class Reference:
    """The PyTorch FP32 reference as a file: a ``torch.export`` program of the unfolded checkpoint, which the torch
    backend runs (eager) wherever torch is installed, so that no stage needs the training code to reach it."""

    path: str
    sha256: str
    description: str = ""


@dataclass(frozen=True)
class Evaluation:
    """What export evaluated every artifact on."""

    data: str = ""
    test_images: int = 0
    limit: int | None = None
    precisions: tuple[str, ...] = ()
    # The Fashion-MNIST training images (indices into its 60,000) INT8 calibration drew, in order: bench's INT8
    # peers calibrate on exactly these. Empty for an image-folder model, or a manifest older than this field.
    calibration_indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class U8Decision:
    """Whether export kept the asymmetric-uint8 CPU variant of the INT8 ONNX file, measured on the held-out split."""

    kept: bool
    rule: str
    split: str = ""
    s8_ms_batch64: float | None = None
    u8_ms_batch64: float | None = None
    s8_heldout_accuracy: float | None = None
    u8_heldout_accuracy: float | None = None
    u8_heldout_top1_agreement: float | None = None


@dataclass(frozen=True)
class QuantizerDecision:
    """Which quantizer made the OpenVINO IR INT8 file (ort: our QDQ ONNX; nncf), measured on the held-out split."""

    chosen: str
    rule: str
    split: str = ""
    ort_heldout_accuracy: float | None = None
    nncf_heldout_accuracy: float | None = None
    ort_heldout_top1_agreement: float | None = None
    nncf_heldout_top1_agreement: float | None = None


@dataclass(frozen=True)
class Decisions:
    """What export decided, and on which images: where its held-out, calibration and evaluation images came from,
    the optional variants it kept or chose, and why some files are not in the Triton repository."""

    heldout_images: str = ""
    calibration_images: str = ""
    evaluation_images: str = ""
    int8_cpu_u8_variant: U8Decision | None = None
    openvino_int8_quantizer: QuantizerDecision | None = None
    triton_tensorrt_rtx: str | None = None
    triton_aoti: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A format export did not build here, and why."""

    format: str
    reason: str


@dataclass(frozen=True)
class ArtifactRow:
    """One artifact: its file and hash, its format and precision (a row of ``runtime.formats.FORMATS``), the device
    kind it was made for, and its parity with the PyTorch reference on the evaluation set."""

    path: str
    format: str
    precision: Precision
    sha256: str
    test_accuracy: float | None  # None: built and checked, but not run here (status "built")
    target: str = "any"  # any | cpu | cuda: the device kind a variant was made for
    size_bytes: int = 0  # the file and its sidecar
    parity: ParityResult | None = None
    max_acc_drop_pt: float | None = None
    # ok: held to the tolerance table and passed | fail: missed it | built: built and checked without running it (a
    # TensorRT-RTX engine on a machine with no GPU it runs on): ``details["verification"]`` says what was checked
    status: str = "ok"
    failures: tuple[str, ...] = ()
    build_seconds: float = 0.0
    eval_seconds: float = 0.0
    sidecar: str | None = None  # a file the artifact needs beside it (metadata, or the weights of a .param/.xml)
    sidecar_sha256: str | None = None  # checked on read like the artifact's own hash
    opset: int | None = None
    activations: str | None = None  # INT8: s8 | u8
    calibration: str | None = None
    calibration_images: int | None = None
    weight_bits: int | None = None
    tools: dict[str, str] = field(default_factory=dict)
    # What the format's own toolchain reports about the file: the tensor types a LiteRT INT8 model computes in,
    # what an ExecuTorch program delegated to XNNPACK, the quantizer an OpenVINO IR came from.
    details: dict[str, Any] = field(default_factory=dict)
    # What the runtime must be told for the file to compute in its precision (OpenVINO's CPU plugin: an FP32 IR runs
    # in bf16 by default on CPUs with AVX512-BF16 or AMX): the formats table's row, copied here for any loader.
    runtime_settings: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The precision as users name it: fp32, int8, or int8-cpu for a variant made for one device kind."""
        return self.precision.value + (f"-{self.target}" if self.target != "any" else "")

    @property
    def files(self) -> tuple[str, ...]:
        return (self.path,) + ((self.sidecar,) if self.sidecar else ())

    @property
    def built_note(self) -> str:
        """What a ``built`` row's checks were and what was not checked, in a few words (export's table and the
        summary say it alike)."""
        v = self.details.get("verification", {})
        c = v.get("checked", {})
        targets = ", ".join(str(t) for t in c.get("targets", []) if t)
        return (f"built for compute capability {targets} ({c.get('parser_errors', '?')} parser errors, "
                f"{c.get('network_layers', '?')} layers); {v.get('not_checked', 'numerics not checked')}")


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime may know about an export (schema version 2)."""

    model: Model
    preprocessing: Preprocessing
    io: IO
    source: Source
    artifacts: tuple[ArtifactRow, ...]
    schema_version: int = SCHEMA_VERSION
    golden: Golden | None = None
    reference: Reference | None = None
    fold: ParityResult | None = None
    evaluation: Evaluation = field(default_factory=Evaluation)
    skipped: tuple[Skipped, ...] = ()
    decisions: Decisions = field(default_factory=Decisions)
    tools: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> set[str]:
        """Every file the manifest names (artifacts, sidecars, the golden set)."""
        names = {n for art in self.artifacts for n in art.files}
        return names | {entry.path for entry in (self.golden, self.reference) if entry}

    def to_json(self) -> str:
        doc = to_json(replace(self, schema_version=SCHEMA_VERSION))
        return json.dumps({"schema_version": doc.pop("schema_version"), **doc}, indent=2)


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of version 2, as checked in at ``runtime/contract/manifest.schema.json``."""
    doc = schema(Manifest, title="resnet-edge manifest.json")
    doc["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    doc["required"] = sorted({*doc["required"], "schema_version"})
    return doc


def parse_manifest(doc: Any, where: str = MANIFEST) -> Manifest:
    """A parsed ``manifest.json`` of any readable version as a ``Manifest``; ArtifactMismatch in one sentence if it
    is malformed."""
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if version not in READABLE_VERSIONS:
        raise ArtifactMismatch(f"{where} has schema version {version}; this resnet-edge reads versions "
                               f"{', '.join(map(str, READABLE_VERSIONS))}.")
    if isinstance(doc.get("model"), dict) and doc["model"].get("compression") == {}:
        doc = {**doc, "model": {**doc["model"], "compression": None}}  # written as {} before the record was typed
    try:
        return from_json(Manifest, _upgrade_v1(doc) if version == 1 else doc)
    except Malformed as exc:
        raise ArtifactMismatch(f"{where} is malformed: {exc}; re-run the export.") from None


def _upgrade_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 1 repeated the input and output tensors in every artifact row and had no fold failures; version 2
    holds them once in ``io``. Everything else reads as it was."""
    doc = dict(doc)
    if isinstance(doc.get("artifacts"), list):
        doc["artifacts"] = [{k: v for k, v in a.items() if k not in ("inputs", "outputs")} if isinstance(a, dict) else a
                            for a in doc["artifacts"]]
    doc["schema_version"] = SCHEMA_VERSION
    return doc

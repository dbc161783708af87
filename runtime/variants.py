"""Which (backend, model file, precision, options) combinations to run, for parity and bench alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_edge.errors import InvalidInput
from runtime import backends
from runtime.backends.base import Backend
from runtime.backends.cpu_features import cpu_has_bf16
from runtime.formats import FORMATS, backends_for, formats_on, runs_on
from runtime.precision import Precision, precision_of
from runtime.spec import Artifact, Artifacts


@dataclass(frozen=True)
class Variant:
    backend: str
    source: Path
    precision: Precision
    label: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    artifact: Artifact | None = None
    peer: bool = False  # a default-settings baseline of what users would otherwise run
    target: str = "any"  # any | cpu: the artifact variant made for one kind of device

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", precision_of(self.precision))

    @property
    def tag(self) -> str:
        """The precision as users name it: fp32, fp16, bf16, int8, or int8-cpu for a CPU-only variant."""
        return self.precision + (f"-{self.target}" if self.target != "any" else "")

    def create(self, arts: Artifacts, max_batch: int = 64, buckets: tuple[int, ...] | None = None) -> Backend:
        hashes = self.artifact.hashes() if self.artifact is not None and self.source == self.artifact.path else {}
        return backends.create(self.backend, arts.spec, self.source, precision=self.precision,
                               max_batch=max_batch, buckets=buckets, expected_sha256=hashes, **self.options)


def parse_backends(text: str) -> list[str]:
    """'all', or a comma-separated list; unknown names are an error, unavailable ones are reported."""
    if text in ("all", "auto"):
        return list(backends.REGISTRY)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        backends.unavailable_reason(n)  # raises on an unknown name
    return names


def on_device(names: list[str], device: str, gpu_index: int = 0) -> tuple[list[str], list[str]]:
    """For a device only some formats run on (vulkan): the backends of those formats, and a line for the rest; a
    Vulkan run where no Vulkan device is to be had is one sentence (``runtime.vulkan``)."""
    if device != "vulkan":
        return names, []
    from runtime import vulkan

    vulkan.device(gpu_index)  # no loader, no device, an index out of range: one sentence
    formats = formats_on(device)
    able = {b for f in formats for b in FORMATS[f].backends}
    kept = [n for n in names if n in able]
    if not kept:
        raise InvalidInput(f"{', '.join(names)} cannot run on Vulkan; on Vulkan the formats table runs "
                           f"{', '.join(formats)} (--backend {','.join(sorted(able))}).")
    dropped = [n for n in names if n not in able]
    return kept, ([f"on Vulkan only {', '.join(formats)} runs (the formats table): not {', '.join(dropped)}."]
                  if dropped and len(names) < len(backends.REGISTRY) else [])


def plan(arts: Artifacts, names: list[str], *, device: str = "cpu", precisions: set[str] | None = None, threads: int = 0,
         extra: tuple[list[Variant], list[str]] | None = None, gpu_index: int = 0) -> tuple[list[Variant], list[str]]:
    """Variants to run, and one line for each backend that cannot run here: every artifact on every backend the
    formats table says runs it (on ``device`` where only some formats run there: vulkan). ``extra`` (variants,
    skip lines) joins the plan under the same precision filter: bench's peers (``runtime.lab.peers.peer_variants``)."""
    variants: list[Variant] = []
    names, skipped = on_device(names, device, gpu_index)
    for name in names:
        reason = backends.unavailable_reason(name)
        if reason:
            skipped.append(reason)
            continue
        found = [v for art in arts.items if name in backends_for(art.format)
                 and (device != "vulkan" or runs_on(art.format, device))
                 for v in _artifact_variants(name, art, device, threads, gpu_index, skipped)]
        if name == "torch" and not found:
            skipped.append(f"The torch backend runs the torch.export programs that export writes, and {arts.root} "
                           "has none (it was exported by an older resnet-edge); re-export it.")
        variants += found
    if precisions:  # a precision (int8: every INT8 variant) or a tag (int8-cpu: that one)
        variants = [v for v in variants if v.precision in precisions or v.tag in precisions]
    if extra:
        variants += [p for p in extra[0] if not precisions or p.precision in precisions]
        skipped += extra[1]
    if not variants:
        if precisions and not skipped:
            raise InvalidInput(f"No variant here has precision {', '.join(sorted(precisions))}.")
        raise InvalidInput("No backend can run here: " + " ".join(skipped))
    return variants, skipped


def _artifact_variants(name: str, art: Artifact, device: str, threads: int, gpu_index: int = 0,
                       skipped: list[str] | None = None) -> list[Variant]:
    """The variants backend ``name`` runs one artifact as: what its backend class offers for the device."""
    return [Variant(name, art.path, o.precision, o.label, o.options, art, target=art.target)
            for o in backends.backend_class(name).offers(art, device, threads, gpu_index, skipped)]


def runtime_defaults(variants: list[Variant], threads: int = 0) -> list[Variant]:
    """What each FP32 OpenVINO IR gives with OpenVINO's defaults on this host, beside the pinned f32 that its manifest
    row records (``runtime_settings``): what a user who loads the file elsewhere gets. Held to the bf16 row where the
    CPU has bf16 (the plugin picks it), to the fp32 row elsewhere."""
    extra = []
    for v in variants:
        art = v.artifact
        if v.backend == "openvino" and art is not None and art.format == "openvino" and v.precision == "fp32" \
                and not v.options.get("inference_precision") and not v.peer:
            precision = "bf16" if cpu_has_bf16() else "fp32"
            extra.append(Variant("openvino", art.path, precision, f"openvino IR fp32, OpenVINO's defaults ({precision})",
                                 {"threads": threads, "defaults": True}, art, peer=True))
    return extra


"""The compression record: how ``resnet-edge compress`` made a model, written into its checkpoint by train and
copied into the manifest by export. One type for both hand-overs, so it sits below both stages."""

from __future__ import annotations

from dataclasses import dataclass

from resnet_edge.typed import Malformed

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Compression:
    """How a compressed model (``resnet-edge compress``) was made: its teacher (path, sha256, test accuracy), the
    pruning (ratio, depth, channel rounding, importance, uniform or global), the distillation (temperature and the
    soft term's weight alpha; 0: hard labels alone), and its size against the teacher's. Written into the
    checkpoint by compress and copied into the manifest by export: one record, one type."""

    teacher: str
    teacher_sha256: str
    ratio: float
    depth: int
    params: int
    macs: int
    teacher_params: int
    teacher_macs: int
    teacher_test_accuracy: float | None = None
    distilled_from_sha256: str = ""
    round_to: int = 8
    importance: str = "group magnitude (L2)"
    pruning: str = "uniform"
    temperature: float = 4.0
    alpha: float = 0.9
    qat_epochs: int = 0  # quantization-aware fine-tuning epochs after the distillation (0: none)
    # the student's top-1 agreement with itself under export's INT8 rounding, simulated on the validation split,
    # before and after the quantization-aware fine-tuning (None: not checked)
    int8_simulated_agreement: float | None = None
    int8_simulated_agreement_after: float | None = None

    def __post_init__(self) -> None:
        for name in ("teacher_sha256", *(("distilled_from_sha256",) if self.distilled_from_sha256 else ())):
            value = getattr(self, name)
            if len(value) != 64 or not set(value) <= _HEX:
                raise Malformed(f"'{name}' is not a sha256 (64 lower-case hex digits)")
        if not 0 <= self.ratio < 1 or self.params <= 0 or self.teacher_params <= 0:
            raise Malformed(f"the compression record's ratio {self.ratio} or parameter counts are out of range")

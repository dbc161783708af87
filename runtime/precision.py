"""The precision vocabulary every stage uses (the tolerance table, the formats table, backends, variants, parity rows
and the CLI's choices): one enum, at the bottom of the runtime."""

from __future__ import annotations

import enum

from resnet_edge.errors import InvalidInput


class Precision(str, enum.Enum):
    """The precision vocabulary every stage uses: the tolerance table, the formats table and the CLI's choices."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def precision_of(value: str | Precision) -> Precision:
    """``value`` as a :class:`Precision`, or one sentence naming the choices."""
    try:
        return Precision(value)
    except ValueError:
        raise InvalidInput(f"Unknown precision {str(value)[:40]!r}; choose from "
                           f"{', '.join(p.value for p in Precision)}.") from None

"""Which variant to run: the one asked for, or with ``auto`` the fastest one here that passes parity.

Used by ``resnet-edge serve``, ``resnet-edge predict`` and ``runtime.load``."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from resnet_edge.errors import InvalidInput, MissingDependency
from runtime.spec import Artifacts
from runtime.timing import time_calls
from runtime.variants import Variant, parse_backends, plan

log = logging.getLogger("resnet_edge.serve")


class Choice(Protocol):
    backend: str
    precision: str
    threads: int
    max_batch_size: int
    device: str  # cpu, or vulkan (ncnn's compute shaders; ``gpu_index`` picks the device)
    gpu_index: int


def choose_variant(arts: Artifacts, cfg: Choice) -> Variant:
    """An explicit backend/precision, or with ``auto`` the fastest variant here that passes parity.

    Variants are matched on their fields (backend, precision, target), never on their labels."""
    if cfg.backend == "auto":
        return auto_variant(arts, cfg)
    names = parse_backends(cfg.backend)
    variants, skipped = plan(arts, names, threads=cfg.threads, device=_device(cfg), gpu_index=_gpu_index(cfg))
    for v in variants:
        if v.tag == cfg.precision:
            return v
    if skipped and not variants:
        raise MissingDependency(skipped[0])
    have = ", ".join(sorted({v.tag for v in variants}))
    raise InvalidInput(f"The {cfg.backend} backend has no '{cfg.precision}' variant here; choose from {have}.")


def _device(cfg: Choice) -> str:
    from runtime.vulkan import check_device

    return check_device(getattr(cfg, "device", "cpu") or "cpu")


def _gpu_index(cfg: Choice) -> int:
    return int(getattr(cfg, "gpu_index", 0) or 0)


def median_latency_s(backend, batch: np.ndarray) -> float:
    """Median wall time of one call on ``batch`` after a short warm-up."""
    return float(np.median(time_calls(lambda: backend.infer(batch), warmup_s=0.1, duration_s=0.3, iterations=None)))


def auto_variant(arts: Artifacts, cfg: Choice) -> Variant:
    """The fastest variant here that passes parity: against the reference program where torch and the dataset are
    installed, else against the golden set in the artifacts (an edge device has neither).

    Every variant is timed (a fraction of a second each), then parity runs in order of speed until one passes: the
    same choice as checking them all first, at the cost of one or two parity runs instead of one per variant."""
    from runtime.parity import choose_reference, run_parity

    variants, _ = plan(arts, parse_backends("all"), threads=cfg.threads, device=_device(cfg), gpu_index=_gpu_index(cfg))
    variants = [v for v in variants if v.backend != "torch"] or variants  # torch is never the fastest on CPU
    ref = choose_reference(arts, limit=1000)
    batch = np.ascontiguousarray(ref.x[: min(8, cfg.max_batch_size)])
    timings = []
    for v in variants:
        with v.create(arts, max_batch=cfg.max_batch_size, buckets=(len(batch),)) as b:
            timings.append((median_latency_s(b, batch), v))
    failed = []
    for _, v in sorted(timings, key=lambda t: t[0]):
        (row,) = run_parity(arts, [v], ref, n_random=32).rows
        if row.passed:
            log.info("auto: %s is the fastest of %d variants here that passes parity (%s%s)", v.label, len(variants),
                     ref.description, f"; faster, but failed it: {', '.join(failed)}" if failed else "")
            return v
        failed.append(v.label)
    raise InvalidInput("No backend passed parity on this machine; run 'resnet-edge parity' to see why.")

"""The one timing loop: calls timed by count or by duration, and several callables timed in interleaved rounds.

Every speed decision and figure comes through here: export's choices (the uint8 INT8 variant, ncnn's winograd),
``auto``'s fastest variant, and bench. Interleaving is what makes figures on a drifting host comparable: each round
times every callable once, in an order that is reversed every other round, so that no callable always runs right
after the same neighbour and a host that drifts by tens of percent over minutes moves every callable alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def time_calls(fn: Callable[[], object], *, warmup_s: float, duration_s: float, iterations: int | None,
               warmup_calls: int = 3) -> np.ndarray:
    """Warm up by time (at least ``warmup_calls`` calls), then time each call for a duration (at least 10) or a
    count."""
    t_end = time.perf_counter() + warmup_s
    n = 0
    while n < warmup_calls or time.perf_counter() < t_end:
        fn()
        n += 1
    times = []
    t_end = time.perf_counter() + duration_s
    while (len(times) < iterations) if iterations else (len(times) < 10 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.array(times)


@dataclass
class Timings:
    """One callable's call times in seconds, pooled over every round, and each round's median."""

    pooled: list[float]
    round_medians: list[float]

    @property
    def median_of_rounds_s(self) -> float:
        return float(np.median(self.round_medians))


def interleaved(fns: Sequence[Callable[[], object]], *, rounds: int, calls: int | None = None,
                duration_s: float = 0.0, warmup_s: float = 0.0, warmup_calls: int = 3,
                on_turn: Callable[[int, int], None] | None = None) -> list[Timings]:
    """Time each of ``fns`` in ``rounds`` interleaved rounds: per round and callable ``calls`` calls (or, without
    a count, at least 10 over ``duration_s / rounds``), each turn after ``warmup_calls`` untimed calls, and the
    first round's after ``warmup_s`` of warm-up as well. ``on_turn(round, index)`` is told before each turn."""
    if rounds < 1 or not fns:
        raise ValueError("interleaved timing needs at least one round and one callable")
    out = [Timings([], []) for _ in fns]
    for r in range(rounds):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            if on_turn is not None:
                on_turn(r, i)
            times = time_calls(fns[i], warmup_s=warmup_s if r == 0 else 0.0, duration_s=duration_s / rounds,
                               iterations=calls, warmup_calls=warmup_calls)
            out[i].pooled += times.tolist()
            out[i].round_medians.append(float(np.median(times)))
    return out

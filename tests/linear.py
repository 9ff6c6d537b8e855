"""Asserting that work grows linearly with the size of its input, without timing thresholds.

A ratio of two timings of the same code, for inputs of size n and 2n, is about 2 when the work is
linear and about 4 when it is quadratic, whatever the machine's speed. Timings are CPU time of this
process (all its threads: the app under TestClient included), so time spent waiting for Redis or
taken by other processes on a busy machine does not count; the work is what can block the event
loop. Each timing is the best of
several rounds (the minimum is the measurement least disturbed by other processes), rounds of
the two sizes alternate (so a busy spell slows both), each round repeats the call until it lasts
long enough for the clock's resolution not to matter, and the garbage collector waits outside the
timings (a collection falls into one round or another at random). On a machine shared with other
busy processes one measurement can still come out skewed, so a ratio over the bound is measured
again, up to ATTEMPTS times: quadratic work exceeds it every time, noise does not.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

# Between linear (2) and quadratic (4), leaning to tolerance: the machine is shared.
MAX_RATIO = 3.0
ROUNDS = 9
ATTEMPTS = 3
MIN_ROUND_SECONDS = 0.01
# A 64 KiB input is answered in well under a second (interface §3.6); past this a call is a hang,
# and the test fails at once rather than timing a hang again and again.
HANG_SECONDS = 2.0


def best_time(action: Callable[[], object], rounds: int = ROUNDS) -> float:
    """The shortest of ``rounds`` runs of ``action``, in seconds: for ratios of two such times."""
    return min(_timed(action, 1) for _ in range(rounds))


def _timed(action: Callable[[], object], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        action()
    elapsed = time.process_time() - start
    assert elapsed / calls < HANG_SECONDS, f"one call took {elapsed / calls:.1f} s: a hang"
    return elapsed / calls


def growth_ratio(action_for: Callable[[int], Callable[[], object]], size: int) -> float:
    """time(action_for(size)) / time(action_for(size // 2)), each the best of ROUNDS rounds."""
    small, large = action_for(size // 2), action_for(size)
    gc.collect()
    gc.disable()
    try:
        first = _timed(large, 1)  # also warms caches and fails fast on a hang
        calls = max(1, min(1000, int(MIN_ROUND_SECONDS / max(first, 1e-6))))
        best_small = best_large = float("inf")
        for _ in range(ROUNDS):
            best_small = min(best_small, _timed(small, calls))
            best_large = min(best_large, _timed(large, calls))
    finally:
        gc.enable()
    return best_large / best_small


def assert_linear(action_for: Callable[[int], Callable[[], object]], size: int, what: str) -> None:
    ratio = float("inf")
    for _ in range(ATTEMPTS):
        ratio = min(ratio, growth_ratio(action_for, size))
        if ratio < MAX_RATIO:
            return
    assert ratio < MAX_RATIO, f"{what}: doubling the input to {size} multiplied the time by {ratio:.1f}"

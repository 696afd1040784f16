"""Clocks for the runtime.

Every time in `parapolicy.runtime` is a float in seconds on one monotonic clock: the robot's tick times,
the observation times, the action timestamps and the `deadline` handed to `predict_action` (which the Picard
sampler compares with `time.monotonic()`). The real clock is `time.monotonic`; tests use `FakeClock`, which
only moves when told to, so queue, dropping and deadline behaviour can be checked without sleeping.
"""

from __future__ import annotations

import time


def monotonic() -> float:
    """The real clock: `time.monotonic()` seconds."""
    return time.monotonic()


class FakeClock:
    """A clock that moves only when `advance` or `set` is called. Call it (or `now()`) to read it.

    A fake policy "computes" for d seconds by calling `advance(d)`; the `SimulatedExecutor` rewinds the clock
    after such a job so that the robot side sees the job as running in the background.
    """

    def __init__(self, t0: float = 0.0):
        self._t = float(t0)

    def __call__(self) -> float:
        return self._t

    def now(self) -> float:
        return self._t

    def advance(self, dt: float) -> float:
        if not dt >= 0:
            raise ValueError(f"FakeClock.advance needs dt >= 0, got {dt}")
        self._t += float(dt)
        return self._t

    def set(self, t: float) -> None:
        self._t = float(t)

    def sleep(self, dt: float) -> None:
        """Drop-in for `time.sleep` in control loops driven by this clock."""
        self.advance(max(0.0, dt))

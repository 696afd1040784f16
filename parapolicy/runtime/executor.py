"""Where inference runs. Every executor runs one job at a time and hands its result back through `poll()`.

A job is `job(now, scale) -> result` where `now()` is the clock the job reads (for the deadline it passes to
the sampler and for timing itself) and `scale` converts the job's own seconds into robot seconds
(`result.duration` is already in robot seconds). The runner calls `submit` and `poll` from the robot thread
only.

    ThreadExecutor      a background thread; the result is there when the thread has finished (real robots).
    InlineExecutor      runs the job inside `submit`, blocking the caller (synchronous control, like the plain
                        Diffusion Policy evaluation loop).
    SimulatedExecutor   runs the job inside `submit`, but releases the result only when the robot's clock
                        has reached submit time + duration, as if the job had run in the background.
                        Deterministic; for tests (a fake policy advances the FakeClock) and for the eval
                        harness's latency-aware mode (measured wall time times `latency_scale`, or a
                        fixed latency).
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from typing import Any, Protocol

from parapolicy.runtime.clock import FakeClock

Job = Callable[[Callable[[], float], float], Any]

# slack for comparing a ready time with a tick time computed as k * dt
TIME_EPS = 1e-9


class Executor(Protocol):
    @property
    def busy(self) -> bool: ...

    def submit(self, job: Job) -> None: ...

    def poll(self) -> Any | None: ...

    def shutdown(self) -> None: ...


class InlineExecutor:
    """Runs the job synchronously in `submit`; `poll` returns its result once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._result = None

    @property
    def busy(self) -> bool:
        return self._result is not None

    def submit(self, job: Job) -> None:
        if self.busy:
            raise RuntimeError("InlineExecutor: the previous result was not collected")
        self._result = job(self.clock, 1.0)

    def poll(self) -> Any | None:
        r, self._result = self._result, None
        return r

    def shutdown(self) -> None:
        self._result = None


class SimulatedExecutor:
    """Runs the job at once, releases its result when `clock` reaches submit time + duration.

    timing="virtual": the job reads `clock` (a FakeClock); a fake policy advances it by its compute time;
        the clock is rewound to the submit time afterwards. duration = the clock's advance.
    timing="wall": the job reads `time.monotonic`; duration = measured wall seconds * latency_scale, and a
        latency budget b becomes a wall-clock deadline b / latency_scale away (emulating hardware
        latency_scale times slower, or faster when < 1).
    fixed_latency: overrides the duration with a constant (seconds).
    """

    def __init__(self, clock: FakeClock, timing: str = "virtual", latency_scale: float = 1.0,
                 fixed_latency: float | None = None):
        if timing not in ("virtual", "wall"):
            raise ValueError(f"timing must be 'virtual' or 'wall', got {timing!r}")
        if not latency_scale > 0:
            raise ValueError(f"latency_scale must be > 0, got {latency_scale}")
        if fixed_latency is not None and not fixed_latency >= 0:
            raise ValueError(f"fixed_latency must be >= 0, got {fixed_latency}")
        if not hasattr(clock, "set"):
            raise ValueError("SimulatedExecutor needs a FakeClock (something with now() and set())")
        self.clock, self.timing = clock, timing
        self.latency_scale, self.fixed_latency = latency_scale, fixed_latency
        self._pending: tuple[float, Any] | None = None

    @property
    def busy(self) -> bool:
        return self._pending is not None

    def submit(self, job: Job) -> None:
        if self.busy:
            raise RuntimeError("SimulatedExecutor: a job is still in flight")
        t0 = self.clock.now()
        if self.timing == "virtual":
            result = job(self.clock.now, 1.0)
            self.clock.set(t0)
        else:
            result = job(time.monotonic, self.latency_scale)
        if self.fixed_latency is not None:
            result.duration = self.fixed_latency
        self._pending = (t0 + result.duration, result)

    def poll(self) -> Any | None:
        if self._pending is None or self.clock.now() < self._pending[0] - TIME_EPS:
            return None
        r, self._pending = self._pending[1], None
        return r

    def shutdown(self) -> None:
        self._pending = None


class ThreadExecutor:
    """One background worker thread. The job reads `clock` (time.monotonic on a robot)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="parapolicy-infer")
        self._future: cf.Future | None = None

    @property
    def busy(self) -> bool:
        return self._future is not None

    def submit(self, job: Job) -> None:
        if self.busy:
            raise RuntimeError("ThreadExecutor: a job is still in flight")
        self._future = self._pool.submit(job, self.clock, 1.0)

    def poll(self) -> Any | None:
        if self._future is None or not self._future.done():
            return None
        f, self._future = self._future, None
        return f.result()  # jobs catch their own exceptions

    def wait(self, timeout: float | None = None) -> None:
        """Block until the in-flight job is done (for shutdown and tests)."""
        if self._future is not None:
            cf.wait([self._future], timeout=timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._future = None

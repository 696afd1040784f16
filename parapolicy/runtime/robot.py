"""The robot side: a three-method protocol and a fixed-rate control loop that drives a `Runner`.

A robot is anything with
    get_observation() -> {key: array}   the latest observation, in env units, keys as the policy's obs_keys
    send_action(a)                      a: (Da,) float64, already clipped and finite
    now() -> float                      seconds on the runner's monotonic clock (time.monotonic on hardware)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Robot(Protocol):
    def get_observation(self) -> dict[str, Any]: ...

    def send_action(self, action: np.ndarray) -> None: ...

    def now(self) -> float: ...


@dataclass
class LoopStats:
    """What `run_control_loop` measured. Times in seconds."""

    ticks: int = 0
    missed_ticks: int = 0  # grid slots in which no tick started (the loop fell more than a period behind)
    late_ticks: int = 0  # ticks that started more than `late_tolerance` after their slot
    none_ticks: int = 0  # ticks with nothing safe to send (before the first chunk, without initial action)
    max_lateness_s: float = 0.0  # worst start delay of a tick after its slot
    max_tick_s: float = 0.0  # worst time spent inside one tick (observe, runner.step, send)
    duration_s: float = 0.0


def run_control_loop(robot: Robot, runner, rate_hz: float | None = None, duration_s: float | None = None,
                     max_ticks: int | None = None, should_stop: Callable[[], bool] | None = None,
                     sleep: Callable[[float], None] = time.sleep, late_tolerance: float | None = None
                     ) -> LoopStats:
    """Tick at `rate_hz` (default 1 / runner.config.dt) until `duration_s`, `max_ticks` or `should_stop()`.

    Each tick: t = robot.now(); obs = robot.get_observation(); a = runner.step(obs, t); robot.send_action(a)
    (skipped when a is None). Ticks are scheduled on a fixed grid t_start + k / rate_hz; a loop that falls
    more than a period behind skips the missed slots (counted) instead of bunching ticks.
    """
    rate_hz = 1.0 / runner.config.dt if rate_hz is None else rate_hz
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise ValueError(f"run_control_loop: rate_hz must be > 0, got {rate_hz}")
    if duration_s is None and max_ticks is None and should_stop is None:
        raise ValueError("run_control_loop: give duration_s, max_ticks or should_stop, or it never ends")
    period = 1.0 / rate_hz
    late_tolerance = 0.25 * period if late_tolerance is None else late_tolerance
    stats = LoopStats()
    t_start = robot.now()
    k = 0
    while True:
        if max_ticks is not None and stats.ticks >= max_ticks:
            break
        if should_stop is not None and should_stop():
            break
        t_slot = t_start + k * period
        if duration_s is not None and t_slot - t_start >= duration_s:
            break
        wait = t_slot - robot.now()
        if wait > 0:
            sleep(wait)
        t = robot.now()
        lateness = t - t_slot
        stats.max_lateness_s = max(stats.max_lateness_s, lateness)
        if lateness >= period:  # whole slots passed without a tick
            skipped = int(lateness // period)
            stats.missed_ticks += skipped
            k += skipped
            lateness -= skipped * period
        stats.late_ticks += lateness > late_tolerance
        obs = robot.get_observation()
        a = runner.step(obs, t)
        if a is None:
            stats.none_ticks += 1
        else:
            robot.send_action(a)
        stats.max_tick_s = max(stats.max_tick_s, robot.now() - t)
        stats.ticks += 1
        k += 1
    stats.duration_s = robot.now() - t_start
    return stats

"""Latency-aware execution schedule on env steps, as pure functions (for the eval harness's realtime mode).

In simulation the env waits for nobody, but a real robot does not wait for the policy either. This module
decides, for each env step k (time k * dt), which action of which chunk executes, given how long each chunk's
inference took (measured, or scaled to emulate other hardware):

    * a chunk requested at step k (from observations up to step k) is ready at step
      r = k + ceil(latency / dt)  (`ready_step`); latency 0 gives r = k, the synchronous evaluation loop;
    * its action i is for step k + action_offset + i; those for steps < r have passed and are dropped (if
      all have, its last action runs at step r: `keep_last_if_stale`, Diffusion Policy's rule);
    * while it is computed the robot keeps executing the previous chunk; with nothing left it holds;
    * a new chunk is requested when no request is in flight and <= refill_at actions are left for steps >= k
      (refill_at = 0: when the queue is empty, Diffusion Policy's run-all-then-replan);
    * an arriving chunk replaces what is queued (overlap rule "replace").

It is the `Runner`'s rule (with a `SimulatedExecutor`, overlap "replace") on integer steps; a test checks the
two agree. A closed-loop episode interleaves the functions with the policy calls:

    state = ScheduleState()
    for k in range(max_steps):
        state = collect(state, k)
        if wants_chunk(state, k, spec):
            t0 = time.perf_counter()
            chunks.append(policy(obs_window))  # (n_action_steps, Da)
            lat = scale * (time.perf_counter() - t0)
            state = request_chunk(state, k, lat, spec)
        state, slot = serve(state, k)
        action = last_action if slot.chunk is None else chunks[slot.chunk][slot.index]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

# latencies within this many steps of a multiple of dt count as that multiple (float error in k * dt)
_EPS = 1e-9


@dataclass(frozen=True)
class ScheduleSpec:
    dt: float = 0.1
    n_action_steps: int = 8
    refill_at: int = 0
    action_offset: int = 0
    keep_last_if_stale: bool = True

    def __post_init__(self):
        if not self.dt > 0:
            raise ValueError(f"ScheduleSpec.dt must be > 0, got {self.dt}")
        if self.n_action_steps < 1:
            raise ValueError(f"ScheduleSpec.n_action_steps must be >= 1, got {self.n_action_steps}")
        if self.refill_at < 0 or self.action_offset < 0:
            raise ValueError(f"ScheduleSpec.refill_at and action_offset must be >= 0, got {self.refill_at}, "
                             f"{self.action_offset}")


@dataclass(frozen=True)
class Slot:
    """What runs at env step `step`: action `index` of chunk `chunk`, or a hold (chunk None)."""

    step: int
    chunk: int | None = None
    index: int | None = None
    dropped: int = 0  # actions dropped as stale at this step (on arrival of a late chunk)


@dataclass(frozen=True)
class ScheduleState:
    queue: tuple[tuple[int, int, int], ...] = ()  # (step, chunk, index), sorted by step
    inflight: tuple[int, int, int] | None = None  # (chunk, request step, ready step)
    n_chunks: int = 0
    dropped: int = 0  # dropped at the current step, reported by `serve`


def ready_step(request_step: int, latency: float, dt: float) -> int:
    """First env step that can execute a chunk requested at `request_step` with this latency (seconds)."""
    if not (latency >= 0 and math.isfinite(latency)):
        raise ValueError(f"latency must be a finite number of seconds >= 0, got {latency}")
    return request_step + max(0, math.ceil(latency / dt - _EPS))


def collect(state: ScheduleState, k: int, spec: ScheduleSpec | None = None) -> ScheduleState:
    """Start of step k: merge the in-flight chunk if it is ready (dropping its stale actions)."""
    spec = spec or ScheduleSpec()
    if state.inflight is None or state.inflight[2] > k:
        return replace(state, dropped=0)
    chunk, k0, _ = state.inflight
    steps = [(k0 + spec.action_offset + i, chunk, i) for i in range(spec.n_action_steps)]
    live = tuple(s for s in steps if s[0] >= k)
    if not live and spec.keep_last_if_stale:
        live = ((k, chunk, spec.n_action_steps - 1),)
        return replace(state, queue=live, inflight=None, dropped=len(steps) - 1)
    head = tuple(s for s in state.queue if k <= s[0] < (live[0][0] if live else k))
    return replace(state, queue=head + live, inflight=None, dropped=len(steps) - len(live))


def wants_chunk(state: ScheduleState, k: int, spec: ScheduleSpec | None = None) -> bool:
    """Whether step k requests a new chunk: none in flight and <= refill_at actions left for steps >= k."""
    spec = spec or ScheduleSpec()
    return state.inflight is None and sum(s[0] >= k for s in state.queue) <= spec.refill_at


def request_chunk(state: ScheduleState, k: int, latency: float, spec: ScheduleSpec | None = None
                  ) -> ScheduleState:
    """Record a chunk requested at step k that took `latency` seconds; merged at once if latency < dt."""
    spec = spec or ScheduleSpec()
    if state.inflight is not None:
        raise ValueError(f"request_chunk at step {k}: chunk {state.inflight[0]} is still in flight")
    new = replace(state, inflight=(state.n_chunks, k, ready_step(k, latency, spec.dt)),
                  n_chunks=state.n_chunks + 1)
    if new.inflight[2] <= k:
        merged = collect(new, k, spec)
        return replace(merged, dropped=state.dropped + merged.dropped)
    return new


def serve(state: ScheduleState, k: int) -> tuple[ScheduleState, Slot]:
    """End of step k: pop the action for step k (stale ones are discarded), or hold."""
    queue = tuple(s for s in state.queue if s[0] >= k)
    if queue and queue[0][0] == k:
        return replace(state, queue=queue[1:]), Slot(k, queue[0][1], queue[0][2], state.dropped)
    return replace(state, queue=queue), Slot(k, dropped=state.dropped)


def latency_schedule(latencies: Sequence[float], n_steps: int, spec: ScheduleSpec | None = None
                     ) -> list[Slot]:
    """The whole schedule for chunk latencies known in advance (chunk c took latencies[c] seconds).

    Which chunk runs when depends only on the latencies, not on the actions, so this is the open-loop view of
    what the closed loop in the module docstring does. No request is made once the latencies run out.
    -> one Slot per step 0 .. n_steps-1."""
    spec = spec or ScheduleSpec()
    state, slots = ScheduleState(), []
    for k in range(n_steps):
        state = collect(state, k, spec)
        if state.n_chunks < len(latencies) and wants_chunk(state, k, spec):
            state = request_chunk(state, k, latencies[state.n_chunks], spec)
        state, slot = serve(state, k)
        slots.append(slot)
    return slots

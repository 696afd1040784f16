"""The timestamped action queue as pure functions.

Timing rule (Diffusion Policy's real-robot script, `eval_real_robot.py`):

    obs steps      |o|o|                      n_obs_steps = 2, the last one taken at t_obs
    predicted      |a|a|a|a|a|a|a|a|a|a|...|  horizon = 16
    executed         |0|1|2|3|4|5|6|7|        n_action_steps = 8, predicted indices n_obs_steps-1 ..
    timestamp        t_obs + (i + action_offset) * dt

Executed action i is meant for time t_obs + (i + action_offset) * dt, with action_offset = 0 by default: the
first executed action is aligned with the latest observation, as in training (action k is taken after
observation k). When a chunk arrives late, the actions whose time has passed are dropped, never executed
late; when all of them have passed, its last action is executed at the current tick (Diffusion Policy's
rule; `keep_last`).

A queue is a tuple of `TimedAction` sorted by time. An action "is for" tick t when |action.t - t| <= dt/2;
it is stale at tick t when action.t < t - dt/2. The half-period window absorbs float error and tick jitter.

Overlap rule, when a new chunk arrives while old actions are still queued (`merge_chunk`):
    "replace"   (default, Diffusion Policy) from its first live timestamp on, the new chunk replaces
                the queue;
    "blend"     on the m overlapping timestamps, a = (1 - w_j) a_old + w_j a_new with w_j = (j + 1) / (m + 1)
                (a linear hand-over from old to new), then the new chunk's remaining actions;
    "aggregate" on overlapping timestamps a = (1 - w) a_old + w a_new with a constant w (LeRobot async
                inference's `weighted_average`: w = 0.7), then the new chunk's remaining actions;
    "inpaint"   real-time chunking: the chunk was sampled with the queued actions of its first d ticks as a
                fixed prefix (`Runner`, `predict_action(prefix_actions=...)`), so it continues them; it merges
                as "replace" (its prefix equals what it replaces, and is stale by the time it arrives).
Queued actions timed before the new chunk's first live action are kept in every rule (they only exist when
action_offset > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OVERLAP_RULES = ("replace", "blend", "aggregate", "inpaint")


@dataclass(frozen=True)
class TimedAction:
    """One action for one tick. `action`: (Da,) float64; `chunk_id`, `index`: where it came from."""

    t: float
    action: np.ndarray
    chunk_id: int
    index: int
    blended: bool = False


@dataclass(frozen=True)
class MergeInfo:
    """What `merge_chunk` did: counts of new actions dropped as stale, old actions replaced or blended."""

    dropped_stale: int = 0
    dropped_old_stale: int = 0
    replaced: int = 0
    blended: int = 0


def chunk_times(t_obs: float, n: int, dt: float, action_offset: int = 0) -> np.ndarray:
    """(n,) timestamps of an executed chunk: t_obs + (i + action_offset) * dt."""
    return t_obs + (np.arange(n) + action_offset) * dt


def make_chunk(actions: np.ndarray, t_obs: float, dt: float, chunk_id: int, action_offset: int = 0
               ) -> tuple[TimedAction, ...]:
    """actions: (n, Da) -> the chunk as a tuple of TimedAction."""
    ts = chunk_times(t_obs, len(actions), dt, action_offset)
    return tuple(TimedAction(float(t), np.asarray(a, dtype=np.float64), chunk_id, i)
                 for i, (t, a) in enumerate(zip(ts, actions, strict=True)))


def drop_stale(queue: tuple[TimedAction, ...], t: float, dt: float) -> tuple[tuple[TimedAction, ...], int]:
    """-> (actions not yet stale at tick t, number dropped). Stale: action.t < t - dt/2."""
    kept = tuple(a for a in queue if a.t >= t - dt / 2)
    return kept, len(queue) - len(kept)


def merge_chunk(queue: tuple[TimedAction, ...], chunk: tuple[TimedAction, ...], t: float, dt: float,
                overlap: str = "replace", aggregate_weight: float = 0.7, keep_last: bool = True
                ) -> tuple[tuple[TimedAction, ...], MergeInfo]:
    """Merge a newly arrived chunk into the queue at tick time t (see the module docstring for the rules).

    keep_last: when every action of the chunk is stale, its last action is retimed to tick t instead of
    dropping the whole chunk (Diffusion Policy's real-robot rule); the other n - 1 count as dropped."""
    if overlap not in OVERLAP_RULES:
        raise ValueError(f"overlap must be one of {OVERLAP_RULES}, got {overlap!r}")
    new, n_new_stale = drop_stale(chunk, t, dt)
    if keep_last and chunk and not new:
        last = chunk[-1]
        new, n_new_stale = (TimedAction(t, last.action, last.chunk_id, last.index),), len(chunk) - 1
    old, n_old_stale = drop_stale(queue, t, dt)
    if not new:
        return old, MergeInfo(n_new_stale, n_old_stale)
    first, last = new[0].t, new[-1].t
    head = tuple(a for a in old if a.t < first - dt / 2)  # before the new chunk starts: still executed
    tail = tuple(a for a in old if a.t > last + dt / 2)  # past its end (only with misaligned chunks)
    body = [a for a in old if first - dt / 2 <= a.t <= last + dt / 2]
    if overlap in ("replace", "inpaint"):
        return head + new, MergeInfo(n_new_stale, n_old_stale, replaced=len(body) + len(tail))
    old_by_tick = {round(a.t / dt): a for a in body}
    pairs = [(a, old_by_tick.get(round(a.t / dt))) for a in new]
    m = sum(o is not None for _, o in pairs)
    merged, j = [], 0
    for a, o in pairs:
        if o is None:
            merged.append(a)
            continue
        w = (j + 1) / (m + 1) if overlap == "blend" else aggregate_weight
        mixed = (1.0 - w) * o.action + w * a.action
        merged.append(TimedAction(a.t, mixed, a.chunk_id, a.index, blended=True))
        j += 1
    return head + tuple(merged) + tail, MergeInfo(n_new_stale, n_old_stale, replaced=len(body) - m, blended=m)


def pop_due(queue: tuple[TimedAction, ...], t: float, dt: float
            ) -> tuple[tuple[TimedAction, ...], TimedAction | None, int]:
    """At tick t: drop stale actions, then pop the action for this tick if there is one.

    -> (queue, action or None, number dropped as stale). An action more than dt/2 in the future stays queued.
    """
    queue, n_dropped = drop_stale(queue, t, dt)
    if queue and queue[0].t <= t + dt / 2:
        return queue[1:], queue[0], n_dropped
    return queue, None, n_dropped

"""`Runner`: asynchronous chunked control around a diffusion policy, safe by default.

The robot side calls `runner.step(obs, t)` once per control tick (or `observe(obs, t)` then `action(t)`) and
always gets an answer at once: the action of the current chunk meant for tick t, or the last safe action held.
Inference runs in an executor (a background thread on a robot):

    tick:  |k  |k+1|k+2|k+3|k+4|k+5|k+6|k+7|k+8|...      dt = 1 / control rate
    queue:  5   4   3   2   1   ...                       actions of chunk c left (this tick's included)
    refill:         ^ remaining <= refill_at: predict from the observations up to k+2, t_obs = t(k+2)
    chunk c+1:      |--- inference ---|                   arrives at k+5: its actions for k+2..k+4 are stale
                                      |c+1: 3 4 5 6 7 ... and dropped, the rest replaces the queue

One tick, in order: (1) collect a finished chunk: drop its stale actions, clip it to the bounds, merge it
into the queue (`chunks.merge_chunk`; chunks with NaN/inf or the wrong shape are refused); (2) check the
observation: NaN/inf never enters the history (the tick holds the last safe action and reports it); (3) if
no inference is in flight and the queue has <= `refill_at` actions left, submit one from the last
`n_obs_steps` observations, with the sampler's time budget (less a margin) measured on the runner's own
clock; (4) pop the action for this tick, or hold the last safe action.

What is never sent: a chunk with NaN/inf actions, of the wrong shape, or whose sampler ran zero rounds (its
actions would not have seen the network); the tick holds instead and the chunk record says why
(`ChunkRecord.rejected`). With parapolicy's samplers the first round always runs, so a spent budget gives a
chunk of the network's newest data prediction, never noise.

An exception in `predict_action` is logged and recorded; the runner keeps serving the queue, retries at the
next refill, and after `max_consecutive_failures` failed chunks in a row stops inferring and holds.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch

from parapolicy.runtime.chunks import OVERLAP_RULES, TimedAction, make_chunk, merge_chunk, pop_due
from parapolicy.runtime.executor import Executor, ThreadExecutor
from parapolicy.runtime.telemetry import ChunkRecord, Telemetry, TickRecord

logger = logging.getLogger("parapolicy.runtime")


class ChunkPolicy(Protocol):
    """What the runner needs from a policy (`parapolicy.policy.DiffusionPolicy` is one).

    `predict_action(obs_dict, sampler, generator, init, clock)`: obs_dict values (B, n_obs_steps,
    *obs_shape) tensors in env units -> {"action": (B, n_action_steps, Da), "action_pred": (B, horizon, Da),
    "stats": sampler stats with `iterations`, `nfe`, `capped` or None, "trajectory": final sampler trajectory
    (for `init=`) or None}. `sampler` is a `SamplerConfig`; its `time_budget` (seconds) is measured on
    `clock`, the runner's clock, from the start of the call. With overlap "inpaint" the runner also passes
    `prefix_actions` (1, d, Da) env units: the actions the chunk must start with (`DiffusionPolicy` does).
    """

    n_obs_steps: int
    n_action_steps: int
    horizon: int
    action_dim: int
    obs_keys: Sequence[str]

    def predict_action(self, obs_dict: dict[str, torch.Tensor], sampler: Any = "paraddpm",
                       generator: torch.Generator | None = None, init_noise: torch.Tensor | None = None,
                       step_noise: torch.Tensor | None = None, init: Any = None,
                       clock: Callable[[], float] | None = None, prefix_actions: torch.Tensor | None = None
                       ) -> dict: ...


@dataclass
class RunnerConfig:
    """Settings of a `Runner`. Times in seconds."""

    dt: float = 0.1
    """control period (10 Hz for Push-T); actions of a chunk are dt apart."""
    refill_at: int | None = None
    """trigger inference when <= this many actions are left (this tick's included); None: n_action_steps // 2.
    0 with an InlineExecutor reproduces the synchronous evaluation loop (run all, then replan)."""
    overlap: str = "replace"
    """rule for a new chunk overlapping queued actions: "replace", "blend", "aggregate" or "inpaint" (see
    chunks.py). "inpaint" (real-time chunking) passes the queued actions of the chunk's first d ticks to
    predict_action as `prefix_actions`, so the new chunk continues what executes while it is computed."""
    inpaint_steps: int | None = None
    """overlap="inpaint": d, the number of queued actions fixed as the new chunk's prefix. None: from the
    latency estimate, ceil(median inference_s of the last chunks / dt) (the actions that will have executed
    when the chunk arrives; before any chunk is measured: the sampler's time budget, or 0), capped at
    n_action_steps - 1; either way at most the actions queued for those ticks."""
    aggregate_weight: float = 0.7
    """weight of the new chunk under overlap="aggregate" (LeRobot's weighted_average uses 0.7)."""
    keep_last_if_stale: bool = True
    """a chunk that arrives after all its actions' times runs its last action now (Diffusion Policy's rule)
    instead of being dropped whole."""
    action_offset: int = 0
    """executed action i is for time t_obs + (i + action_offset) * dt; 0 is Diffusion Policy's alignment."""
    sampler: Any = "paraddpm"
    """a `SamplerConfig` (or a name / dict of its fields), passed to predict_action. Its `time_budget` is the
    latency budget: seconds from submit by which the chunk should be back (the sampler stops between rounds
    at budget - budget_margin, stats.capped); its `max_iters` caps the rounds. None budget: no deadline."""
    budget_margin: str | float = "round"
    """how much earlier than the budget the sampler is told to stop, because it checks between rounds and a
    round started just before the deadline overruns: "round" = the median time per round of the last chunks
    (0 before any is measured), or a number of seconds. A margin >= the budget leaves the sampler one round
    (the first always runs) and is flagged in the chunk record (`budget_infeasible`)."""
    warm_start: bool = False
    """start each chunk's sampler from the previous chunk's final trajectory (`init`), shifted by the ticks
    between their observations (see `Runner`'s `shift_init`); use with `seed` for the same noise."""
    seed: int | None = None
    """if set, each chunk draws its noise from a fresh torch.Generator seeded with this (the same noise every
    chunk, which warm start needs); None: the policy's own randomness."""
    action_low: float | Sequence[float] | None = None
    """lower bound(s) actions are clipped to; None: no lower bound."""
    action_high: float | Sequence[float] | None = None
    on_bad_obs: str = "hold"
    """"hold": a tick whose observation has NaN/inf holds the last safe action (the queued one is skipped);
    "continue": it keeps executing the queue. Either way the observation never reaches the policy."""
    max_consecutive_failures: int = 3
    """failed chunks (exception, NaN/inf actions) in a row after which the runner stops inferring, holds."""
    extra_predict_kwargs: dict = field(default_factory=dict)
    """further keyword arguments for predict_action (e.g. init_noise)."""

    def __post_init__(self):
        if not (self.dt > 0 and math.isfinite(self.dt)):
            raise ValueError(f"RunnerConfig.dt must be a positive number of seconds, got {self.dt}")
        if self.refill_at is not None and self.refill_at < 0:
            raise ValueError(f"RunnerConfig.refill_at must be >= 0 or None, got {self.refill_at}")
        if self.overlap not in OVERLAP_RULES:
            raise ValueError(f"RunnerConfig.overlap must be one of {OVERLAP_RULES}, got {self.overlap!r}")
        if not 0.0 <= self.aggregate_weight <= 1.0:
            raise ValueError(f"RunnerConfig.aggregate_weight must be in [0, 1], got {self.aggregate_weight}")
        if self.action_offset < 0:
            raise ValueError(f"RunnerConfig.action_offset must be >= 0, got {self.action_offset}")
        from parapolicy.sampler_config import as_sampler_config

        try:
            self.sampler = as_sampler_config(self.sampler)
        except ValueError as e:
            raise ValueError(f"RunnerConfig.sampler: {e}") from None
        if self.sampler.time_budget is not None and not self.sampler.time_budget > 0:
            raise ValueError(f"RunnerConfig.sampler.time_budget must be > 0 seconds or None, got "
                             f"{self.sampler.time_budget}")
        if self.budget_margin != "round" and not (isinstance(self.budget_margin, (int, float))
                                                  and 0 <= self.budget_margin < math.inf):
            raise ValueError(f"RunnerConfig.budget_margin must be 'round' or seconds >= 0, got "
                             f"{self.budget_margin!r}")
        if self.inpaint_steps is not None and (isinstance(self.inpaint_steps, bool)
                                               or not isinstance(self.inpaint_steps, int) or self.inpaint_steps < 0):
            raise ValueError(f"RunnerConfig.inpaint_steps must be an int >= 0 or None, got {self.inpaint_steps!r}")
        if self.on_bad_obs not in ("hold", "continue"):
            raise ValueError(f"RunnerConfig.on_bad_obs must be 'hold' or 'continue', got {self.on_bad_obs!r}")
        if self.max_consecutive_failures < 1:
            raise ValueError(f"RunnerConfig.max_consecutive_failures must be >= 1, got "
                             f"{self.max_consecutive_failures}")


@dataclass
class _Request:
    chunk_id: int
    epoch: int
    t_obs: float
    obs: dict[str, torch.Tensor]
    budget: float | None  # seconds from the job's start to the sampler's stop (budget minus margin)
    prev_trajectory: Any  # warm start: the previous chunk's trajectory, shifted by `shift` ticks in the job
    shift: int
    seed: int | None
    prefix: np.ndarray | None = None  # overlap "inpaint": (d, Da) queued actions fixed as the chunk's start


@dataclass
class _Outcome:
    request: _Request
    duration: float
    actions: np.ndarray | None = None
    stats: Any = None
    trajectory: Any = None
    error: str | None = None
    tb: str | None = None


def _stat(stats: Any, name: str):
    if stats is None:
        return None
    return stats.get(name) if isinstance(stats, Mapping) else getattr(stats, name, None)


def _bounds(value, dim: int, name: str) -> np.ndarray | None:
    if value is None:
        return None
    b = np.broadcast_to(np.asarray(value, dtype=np.float64), (dim,)).copy()
    if np.isnan(b).any():
        raise ValueError(f"RunnerConfig.{name} has NaN")
    return b


class Runner:
    """Serves a chunked policy to a control loop; see the module docstring.

    policy: a `ChunkPolicy`. executor: where inference runs (default: a background thread). clock: the
    monotonic clock of tick times and deadlines (default `time.monotonic`; the `t` given to `step` must be on
    it). shift_init(trajectory, n_ticks) -> init: how warm start moves the previous chunk's trajectory forward
    by the n_ticks between the two chunks' observations (default: the policy's `shift_trajectory` method if it
    has one, else the trajectory unchanged). It runs in the executor.
    """

    def __init__(self, policy: ChunkPolicy, config: RunnerConfig | None = None,
                 executor: Executor | None = None, clock: Callable[[], float] | None = None,
                 shift_init: Callable[[Any, int], Any] | None = None):
        for attr in ("n_obs_steps", "n_action_steps", "action_dim", "obs_keys", "predict_action"):
            if not hasattr(policy, attr):
                raise ValueError(f"Runner: the policy has no `{attr}` (see runtime.runner.ChunkPolicy)")
        self.policy = policy
        self.config = config or RunnerConfig()
        self.clock = clock or time.monotonic
        self.shift_init = shift_init if shift_init is not None else getattr(policy, "shift_trajectory", None)
        self.executor = executor if executor is not None else ThreadExecutor(self.clock)
        self.n_obs_steps = int(policy.n_obs_steps)
        self.n_action_steps = int(policy.n_action_steps)
        self.action_dim = int(policy.action_dim)
        self.obs_keys = tuple(policy.obs_keys)
        refill = self.config.refill_at
        self.refill_at = self.n_action_steps // 2 if refill is None else refill
        self.low = _bounds(self.config.action_low, self.action_dim, "action_low")
        self.high = _bounds(self.config.action_high, self.action_dim, "action_high")
        if self.low is not None and self.high is not None and (self.low > self.high).any():
            raise ValueError(f"RunnerConfig: action_low {self.low} exceeds action_high {self.high}")
        self.telemetry = Telemetry()
        self._epoch = 0
        self._next_chunk = 0
        self._obs_shapes: dict[str, tuple] = {}
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self, initial_action: Sequence[float] | np.ndarray | None = None) -> None:
        """Start a new episode: empty queue and history; `initial_action` (Da,) is what ticks hold until the
        first chunk arrives (None: they return None). A chunk still in flight is discarded when it arrives."""
        self._epoch += 1
        self._queue: tuple[TimedAction, ...] = ()
        self._history: deque = deque(maxlen=self.n_obs_steps)
        self._bad_obs_at: float | None = None
        self._pending_dropped = 0
        self._prev: tuple[Any, float] | None = None  # (trajectory, t_obs) of the last accepted chunk
        self._records: dict[int, ChunkRecord] = {}
        self.consecutive_failures = 0
        self.faulted = False
        self.last_action: np.ndarray | None = None
        if initial_action is not None:
            a = np.asarray(initial_action, dtype=np.float64).reshape(-1)
            if a.shape != (self.action_dim,) or not np.isfinite(a).all():
                raise ValueError(f"Runner.reset: initial_action must be finite with shape "
                                 f"({self.action_dim},), got {a}")
            self.last_action = self._clip(a[None])[0][0]

    def warmup(self, obs: Mapping[str, Any], n: int = 1) -> float:
        """Run predict_action n times synchronously on `obs` repeated over the window (as Diffusion Policy's
        real-robot script does before starting) so that lazy imports, allocations, kernel selection and the
        window="auto" cost model (`policy.prepare`) do not land in the first control ticks. The calls run
        without the time budget. Nothing is queued or recorded. -> seconds of the last call."""
        frame = self._check_obs(obs)
        if frame is None:
            raise ValueError("Runner.warmup: the observation has NaN/inf")
        window = {k: torch.as_tensor(np.stack([frame[k]] * self.n_obs_steps), dtype=torch.float32)[None]
                  for k in self.obs_keys}
        elapsed = 0.0
        if hasattr(self.policy, "prepare"):
            self.policy.prepare(self.config.sampler, batch=1)
        sampler = self.config.sampler.replace(time_budget=None)
        for _ in range(n):
            t0 = time.perf_counter()
            self.policy.predict_action(window, sampler=sampler, **self.config.extra_predict_kwargs)
            elapsed = time.perf_counter() - t0
        return elapsed

    @property
    def queue(self) -> tuple[TimedAction, ...]:
        return self._queue

    @property
    def inflight(self) -> bool:
        return self.executor.busy

    def close(self) -> None:
        self.executor.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ robot side
    def step(self, obs: Mapping[str, Any], t: float | None = None) -> np.ndarray | None:
        """observe(obs, t) then action(t). obs: {key: (*obs_shape,)} for one time step, in env units."""
        t = self.clock() if t is None else float(t)
        self.observe(obs, t)
        return self.action(t)

    def observe(self, obs: Mapping[str, Any], t: float | None = None) -> bool:
        """Record the observation taken at time t; maybe start inference. -> False if refused (NaN/inf).

        Raises ValueError for a missing key or a shape that differs from the first observation's."""
        t = self.clock() if t is None else float(t)
        self._collect(t)
        frame = self._check_obs(obs)
        if frame is None:
            self._bad_obs_at = t
            logger.warning("parapolicy.runtime: non-finite observation at t=%.3f refused", t)
            return False
        self._bad_obs_at = None
        self._history.append((t, frame))
        self._maybe_submit(t)
        return True

    def action(self, t: float | None = None) -> np.ndarray | None:
        """The action for tick t: the queued one, or the last safe action held (None if there is none yet)."""
        t = self.clock() if t is None else float(t)
        dt = self.config.dt
        self._collect(t)
        self._queue, item, n_dropped = pop_due(self._queue, t, dt)
        n_dropped, self._pending_dropped = n_dropped + self._pending_dropped, 0
        bad = self._bad_obs_at is not None and abs(self._bad_obs_at - t) <= dt / 2
        reason = ""
        if bad and self.config.on_bad_obs == "hold":
            item, reason = None, "bad_obs"
        elif item is not None and not np.isfinite(item.action).all():  # cannot happen: chunks are checked
            item, reason = None, "nonfinite_action"
        if item is not None:
            self.last_action = item.action
            rec = TickRecord(t, "queue", item.chunk_id, item.index, queue_depth=len(self._queue),
                             dropped_stale=n_dropped, bad_obs=bad, inflight=self.executor.busy)
        else:
            if not reason:
                reason = "faulted" if self.faulted else ("not_due" if self._queue else "queue_empty")
            rec = TickRecord(t, "hold" if self.last_action is not None else "none", reason=reason,
                             queue_depth=len(self._queue), dropped_stale=n_dropped, bad_obs=bad,
                             inflight=self.executor.busy)
        self.telemetry.ticks.append(rec)
        return None if self.last_action is None else self.last_action.copy()

    # ------------------------------------------------------------------ internals
    def _check_obs(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
        frame = {}
        for k in self.obs_keys:
            if k not in obs:
                raise ValueError(f"Runner: observation has no key {k!r} (has {sorted(obs)}; the policy needs "
                                 f"{list(self.obs_keys)})")
            v = np.array(obs[k], dtype=np.float64)
            shape = self._obs_shapes.setdefault(k, v.shape)
            if v.shape != shape:
                raise ValueError(f"Runner: observation {k!r} has shape {v.shape}, earlier ones had {shape}")
            frame[k] = v
        if not all(np.isfinite(v).all() for v in frame.values()):
            return None
        return frame

    def _remaining(self, t: float) -> int:
        return sum(a.t >= t - self.config.dt / 2 for a in self._queue)

    def _maybe_submit(self, t: float) -> None:
        if self.executor.busy or self.faulted or not self._history:
            return
        remaining = self._remaining(t)
        if remaining > self.refill_at:
            return
        frames = [f for _, f in self._history]
        frames = [frames[0]] * (self.n_obs_steps - len(frames)) + frames  # pad by repeating the first
        obs = {k: torch.as_tensor(np.stack([f[k] for f in frames]), dtype=torch.float32)[None]
               for k in self.obs_keys}
        cid, self._next_chunk = self._next_chunk, self._next_chunk + 1
        t_obs = self._history[-1][0]
        prev, shift = None, 0
        if self.config.warm_start and self._prev is not None and self._prev[0] is not None:
            prev, shift = self._prev[0], max(0, round((t_obs - self._prev[1]) / self.config.dt))
        full = self.config.sampler.time_budget
        budget, infeasible = None, False
        if full is not None:
            margin = self._margin()
            infeasible = margin >= full
            budget = max(0.0, full - margin)
            if infeasible:
                logger.warning("parapolicy.runtime: budget margin %.4f s >= time budget %.4f s: the sampler "
                               "gets one round", margin, full)
        prefix = self._inpaint_prefix(t_obs) if self.config.overlap == "inpaint" else None
        req = _Request(cid, self._epoch, t_obs, obs, budget, prev, shift, self.config.seed, prefix)
        self._records[cid] = rec = ChunkRecord(cid, t_obs, t, remaining, budget_s=full,
                                               deadline_in_s=budget, warm_started=prev is not None,
                                               warm_shift=shift, budget_infeasible=infeasible,
                                               inpainted=0 if prefix is None else len(prefix))
        self.telemetry.chunks.append(rec)
        self.executor.submit(partial(self._infer, req))
        self._collect(t)  # an inline or zero-latency executor has the chunk already

    def _infer(self, req: _Request, now: Callable[[], float], scale: float) -> _Outcome:
        """Runs in the executor: touches no runner state except reading the (immutable) config."""
        cfg = self.config
        t0 = now()
        sampler = cfg.sampler if req.budget is None else cfg.sampler.replace(time_budget=req.budget / scale)
        gen = None if req.seed is None else torch.Generator().manual_seed(req.seed)
        out = _Outcome(req, 0.0)
        try:
            init = req.prev_trajectory
            if init is not None and self.shift_init is not None:
                init = self.shift_init(init, req.shift)
            kw = dict(cfg.extra_predict_kwargs)
            if req.prefix is not None:
                kw["prefix_actions"] = torch.as_tensor(req.prefix, dtype=torch.float32)[None]
            res = self.policy.predict_action(req.obs, sampler=sampler, generator=gen, init=init, clock=now, **kw)
            a = res["action"]
            a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            out.actions = np.asarray(a[0] if a.ndim == 3 else a, dtype=np.float64)
            out.stats, out.trajectory = res.get("stats"), res.get("trajectory")
        except Exception as e:  # noqa: BLE001 - any failure of the model must not reach the robot
            out.error, out.tb = f"{type(e).__name__}: {e}", traceback.format_exc()
        out.duration = (now() - t0) * scale
        return out

    def inpaint_steps(self) -> int:
        """d of overlap "inpaint" (before it is cut to the queued actions): `RunnerConfig.inpaint_steps`, else
        ceil(latency estimate / dt) capped at n_action_steps - 1 (see RunnerConfig.inpaint_steps)."""
        cap = self.n_action_steps - 1
        if self.config.inpaint_steps is not None:
            return min(self.config.inpaint_steps, cap)
        recent = [c.inference_s for c in self.telemetry.chunks[-8:] if c.inference_s is not None and c.error is None]
        latency = float(np.median(recent)) if recent else (self.config.sampler.time_budget or 0.0)
        return max(0, min(cap, math.ceil(latency / self.config.dt - 1e-9)))

    def _inpaint_prefix(self, t_obs: float) -> np.ndarray | None:
        """The queued actions for the new chunk's first d ticks (t_obs + (i + action_offset) dt), cut at the
        first tick with none queued. -> (d, Da) or None (d = 0)."""
        cfg, out = self.config, []
        by_tick = {round(a.t / cfg.dt): a.action for a in self._queue}
        for i in range(self.inpaint_steps()):
            a = by_tick.get(round((t_obs + (i + cfg.action_offset) * cfg.dt) / cfg.dt))
            if a is None:
                break
            out.append(a)
        return np.stack(out) if out else None

    def _margin(self) -> float:
        m = self.config.budget_margin
        if m != "round":
            return float(m)
        per_round = [c.inference_s / c.iterations for c in self.telemetry.chunks[-8:]
                     if c.inference_s is not None and c.iterations and c.error is None]
        return float(np.median(per_round)) if per_round else 0.0

    def _clip(self, actions: np.ndarray) -> tuple[np.ndarray, int]:
        clipped = np.clip(actions, self.low if self.low is not None else -np.inf,
                          self.high if self.high is not None else np.inf)
        return clipped, int((clipped != actions).sum())

    def _fail(self, rec: ChunkRecord) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.config.max_consecutive_failures and not self.faulted:
            self.faulted = True
            logger.error("parapolicy.runtime: %d failed chunks in a row; inference stopped, holding",
                         self.consecutive_failures)

    def _collect(self, t: float) -> None:
        res: _Outcome | None = self.executor.poll()
        if res is None or res.request.epoch != self._epoch:
            return
        cfg, req = self.config, res.request
        rec = self._records.pop(req.chunk_id)
        rec.t_arrive, rec.inference_s = t, res.duration
        if res.error is not None:
            rec.error = res.error
            logger.warning("parapolicy.runtime: inference for chunk %d failed: %s\n%s", req.chunk_id,
                           res.error, res.tb)
            return self._fail(rec)
        rec.iterations, rec.nfe = _stat(res.stats, "iterations"), _stat(res.stats, "nfe")
        rec.capped = bool(_stat(res.stats, "capped") or False)
        sc = cfg.sampler
        if sc.time_budget is not None:
            by_iters = (sc.max_iters is not None and rec.iterations is not None
                        and rec.iterations >= sc.max_iters)
            rec.deadline_hit = rec.capped and not by_iters
            rec.deadline_missed = res.duration > sc.time_budget + 1e-9
        a = res.actions
        if rec.iterations is not None and rec.iterations < 1:
            rec.rejected = "the sampler ran zero rounds: its actions have not seen the network"
        elif a.ndim != 2 or a.shape[1] != self.action_dim or len(a) == 0:
            rec.rejected = f"action shape {a.shape}, expected (n, {self.action_dim})"
        elif not np.isfinite(a).all():
            rec.rejected = "non-finite actions"
        if rec.rejected:
            logger.warning("parapolicy.runtime: chunk %d refused: %s", req.chunk_id, rec.rejected)
            return self._fail(rec)
        self.consecutive_failures = 0
        a, rec.clipped = self._clip(a)
        rec.n_actions = len(a)
        chunk = make_chunk(a, req.t_obs, cfg.dt, req.chunk_id, cfg.action_offset)
        self._queue, info = merge_chunk(self._queue, chunk, t, cfg.dt, cfg.overlap, cfg.aggregate_weight,
                                        keep_last=cfg.keep_last_if_stale)
        self._pending_dropped += info.dropped_old_stale
        rec.dropped_stale, rec.replaced, rec.blended = info.dropped_stale, info.replaced, info.blended
        if cfg.warm_start:
            self._prev = (res.trajectory, req.t_obs)

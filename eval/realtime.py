"""The harness's real-time mode: episodes driven by the runtime `Runner` (the loop that ships to robots), on a
simulated clock.

The env advances one control step per dt of simulated time whatever the policy does. Each chunk's inference
costs simulated time, during which the Runner keeps executing its queue (or holds), drops stale actions,
clips, applies the overlap rule (replace / blend / aggregate / inpaint) and refuses bad chunks, exactly as on
a robot. Two latency sources:

* measured (`fixed_delay=None`): a `SimulatedExecutor(timing="wall")`: the measured wall time of the call
  times `latency_scale`; one episode at a time (batching would change the latency being measured);
* fixed (`fixed_delay` control steps, the delay sweep): every chunk takes fixed_delay * dt. Then every
  episode's Runner sees the same simulated time, so the episodes run in lock-step on one `FakeClock`, one
  Runner each, and the chunks they request at the same tick are computed in ONE batched policy call
  (`LockstepExecutor`): each Runner's job runs twice, first against a recording proxy that collects its
  request, then, after one `predict_action` for all requests of that tick, against a replaying proxy that
  hands it its row. The Runner's job (`Runner._infer`) touches no runner state, so running it twice is safe;
  what the Runner then does with the chunk is its own code.

Noise: each chunk's x_T and step noise come from (episode seed, chunk index) (`eval.rollout.chunk_noise`),
as in the lock-step harness, so modes and samplers are compared on the same noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from eval.rollout import (
    CallRecord,
    EpisodeResult,
    _call_stats,
    _error,
    _finish,
    _flat_obs,
    _obs_dict,
    chunk_noise,
    n_sampler_steps,
)


class _Recorded(Exception):
    """Raised by a recording proxy: the request is collected, the job's result is thrown away."""


class HarnessPolicy:
    """A `ChunkPolicy` for one episode: the Runner sees flat observations under the key "obs"; calls go to the
    real policy with this episode's per-chunk noise, directly or through a `LockstepExecutor` batch."""

    obs_keys = ("obs",)

    def __init__(self, policy, seed: int, result: EpisodeResult, counter, label: str, same_noise: bool,
                 step_of: callable):
        self.policy, self.seed, self.result, self.counter, self.label = policy, seed, result, counter, label
        self.same_noise, self.step_of = same_noise, step_of
        for k in ("n_obs_steps", "n_action_steps", "horizon", "action_dim"):
            setattr(self, k, getattr(policy, k))
        self.chunk = 0
        self.mode = "direct"  # "direct", "record" or "replay" (LockstepExecutor)
        self.request: dict | None = None
        self.reply: tuple[dict, float, int] | None = None

    def shift_trajectory(self, trajectory, n_executed, sampler=None):
        return self.policy.shift_trajectory(trajectory, n_executed, sampler)

    def request_of(self, obs_dict, sampler, init, prefix_actions) -> dict:
        n_steps = n_sampler_steps(self.policy, sampler)
        x_t, steps = chunk_noise(self.seed, 0 if self.same_noise else self.chunk, self.policy.horizon,
                                 self.policy.input_dim, n_steps)
        window = obs_dict["obs"][0].numpy()
        return dict(window=window, sampler=sampler, init=init, prefix=prefix_actions, x_t=x_t, steps=steps)

    def predict_action(self, obs_dict, sampler=None, generator=None, init_noise=None, step_noise=None,
                       init=None, clock=None, prefix_actions=None) -> dict:
        if self.mode == "record":
            self.request = self.request_of(obs_dict, sampler, init, prefix_actions)
            raise _Recorded
        if self.mode == "replay":
            out, ms, batch = self.reply
        else:
            req = self.request_of(obs_dict, sampler, init, prefix_actions)
            (out,), ms = batched_predict(self.policy, [req], clock)
            batch = 1
        self._record_call(out, ms, batch, sampler)
        self.chunk += 1
        return out

    def _record_call(self, out, ms, batch, sampler):
        rounds, nfe, capped = _call_stats(out["stats"], n_sampler_steps(self.policy, sampler))
        tm = out.get("timing") or {}
        self.result.calls.append(CallRecord(step=self.step_of(), batch=batch, ms=ms, rounds=rounds, nfe=nfe,
                                            capped=capped, warmup=self.counter.next_is_warmup(self.label),
                                            encoder_ms=None if "encoder_s" not in tm else tm["encoder_s"] * 1e3,
                                            denoise_ms=None if "denoise_s" not in tm else tm["denoise_s"] * 1e3))


def batched_predict(policy, reqs: list[dict], clock=None) -> tuple[list[dict], float]:
    """One predict_action for requests of the same sampler and prefix length -> (per-request outputs with
    batch-1 shapes, wall ms of the call)."""
    sampler = reqs[0]["sampler"]
    obs = _obs_dict(policy, [r["window"] for r in reqs])
    x_t = torch.cat([r["x_t"] for r in reqs]).to(policy.device)
    steps = torch.cat([r["steps"] for r in reqs], dim=1).to(policy.device)
    init = None
    if all(r["init"] is not None for r in reqs):
        init = torch.cat([r["init"] for r in reqs], dim=1).to(policy.device)
    prefix = None if reqs[0]["prefix"] is None else torch.cat([r["prefix"] for r in reqs])
    t0 = time.perf_counter()
    out = policy.predict_action(obs, sampler=sampler, init_noise=x_t, step_noise=steps, init=init, clock=clock,
                                prefix_actions=prefix)
    ms = (time.perf_counter() - t0) * 1e3
    traj = out.get("trajectory")
    rows = [{"action": out["action"][i:i + 1], "action_pred": out["action_pred"][i:i + 1], "stats": out["stats"],
             "trajectory": None if traj is None else traj[:, i:i + 1], "timing": out.get("timing")}
            for i in range(len(reqs))]
    return rows, ms


class LockstepExecutor:
    """A `SimulatedExecutor` with a fixed latency whose jobs run when `flush_all` is called (once per tick, after
    every Runner has observed), batched across Runners. The result is released at submit time + latency."""

    def __init__(self, clock, latency: float, proxy: HarnessPolicy):
        self.clock, self.latency, self.proxy = clock, float(latency), proxy
        self._job = None
        self._pending: tuple[float, object] | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None or self._pending is not None

    def submit(self, job) -> None:
        if self.busy:
            raise RuntimeError("LockstepExecutor: a job is still in flight")
        self._job = (self.clock.now(), job)

    def poll(self):
        from parapolicy.runtime.executor import TIME_EPS

        if self._pending is None or self.clock.now() < self._pending[0] - TIME_EPS:
            return None
        r, self._pending = self._pending[1], None
        return r

    def shutdown(self) -> None:
        self._job = self._pending = None

    @staticmethod
    def flush_all(executors: list[LockstepExecutor], policy) -> None:
        """Run every submitted job: record the requests, one batched call per (sampler, prefix length,
        warm start), replay each job with its row."""
        todo = [e for e in executors if e._job is not None]
        for e in todo:
            e.proxy.mode, e.proxy.request = "record", None
            e._job[1](e.clock.now, 1.0)  # the proxy raises _Recorded inside; the outcome is discarded
            e.proxy.mode = "direct"
        groups: dict = {}
        for e in todo:
            r = e.proxy.request
            if r is None:  # the job failed before calling the policy: replay it as is (it fails the same way)
                groups.setdefault(("direct",), []).append(e)
                continue
            d = 0 if r["prefix"] is None else int(r["prefix"].shape[1])
            groups.setdefault((repr(r["sampler"]), d, r["init"] is None), []).append(e)
        for key, group in groups.items():
            if key != ("direct",):
                outs, ms = batched_predict(policy, [e.proxy.request for e in group])
                for e, out in zip(group, outs):
                    e.proxy.reply, e.proxy.mode = (out, ms, len(group)), "replay"
            for e in group:
                t0, job = e._job
                res = job(e.clock.now, 1.0)
                res.duration = e.latency
                e.proxy.mode, e.proxy.reply, e._job = "direct", None, None
                e._pending = (t0 + e.latency, res)


@dataclass
class _Episode:
    env: object
    seed: int
    result: EpisodeResult
    runner: object = None
    obs: np.ndarray | None = None
    done: bool = False
    frames: list | None = None
    actions: list | None = None
    sources: list | None = None


def _runner_config(sampler, control_hz: float, trigger: int, overlap: str, inpaint_steps):
    from parapolicy.runtime import RunnerConfig

    return RunnerConfig(dt=1.0 / control_hz, refill_at=trigger, overlap=overlap, inpaint_steps=inpaint_steps,
                        sampler=sampler, keep_last_if_stale=True)


def rollout_runner(policy, sampler, label: str, envs: list, seeds: list[int], max_steps: int, counter,
                   control_hz: float = 10.0, latency_scale: float = 1.0, fixed_delay: int | None = None,
                   trigger: int = 0, overlap: str = "replace", inpaint_steps: int | None = None,
                   same_noise_all_chunks: bool = False, record_frames: set | None = None,
                   on_episode=None) -> list[EpisodeResult]:
    """Episodes through the runtime `Runner` (module docstring). fixed_delay: control steps each chunk takes
    (all seeds in lock-step, batched calls; envs[i] runs seeds[i]); None: measured latency x latency_scale,
    one seed at a time on envs[0]. trigger: the Runner's refill_at. Returns one EpisodeResult per seed, with
    `runner` (the Runner's telemetry summary) and `smoothness` (`switch_smoothness`)."""
    from parapolicy.runtime import FakeClock, Runner, SimulatedExecutor

    if fixed_delay is None:
        out = []
        for s in seeds:
            out += _run(policy, sampler, label, [envs[0]], [s], max_steps, counter, control_hz, trigger, overlap,
                        inpaint_steps, same_noise_all_chunks, record_frames, on_episode,
                        lambda clock, proxy: SimulatedExecutor(clock, timing="wall", latency_scale=latency_scale),
                        FakeClock, Runner, batched=False)
        return out
    dt = 1.0 / control_hz
    return _run(policy, sampler, label, envs, seeds, max_steps, counter, control_hz, trigger, overlap,
                inpaint_steps, same_noise_all_chunks, record_frames, on_episode,
                lambda clock, proxy: LockstepExecutor(clock, fixed_delay * dt, proxy), FakeClock, Runner,
                batched=True)


def _run(policy, sampler, label, envs, seeds, max_steps, counter, control_hz, trigger, overlap, inpaint_steps,
         same_noise, record_frames, on_episode, make_executor, FakeClock, Runner, batched: bool):
    if len(envs) < len(seeds):
        raise ValueError(f"{len(seeds)} seeds need as many envs, got {len(envs)}")
    clock = FakeClock(0.0)
    cfg = _runner_config(sampler, control_hz, trigger, overlap, inpaint_steps)
    dt = cfg.dt
    eps: list[_Episode] = []
    t_start = time.perf_counter()
    for env, seed in zip(envs, seeds):
        ep = _Episode(env, seed, EpisodeResult(sampler=label, seed=int(seed)), actions=[], sources=[])
        if record_frames and seed in record_frames:
            ep.frames = []
        try:
            obs, _ = env.reset(seed=int(seed))
            ep.obs = _flat_obs(obs)
            if ep.frames is not None:
                ep.frames.append(env.render())
            proxy = HarnessPolicy(policy, seed, ep.result, counter, label, same_noise,
                                  step_of=lambda r=ep.result: r.steps)
            ep.runner = Runner(proxy, cfg, executor=make_executor(clock, proxy), clock=clock)
            ep.runner.reset(initial_action=ep.obs[-2:].astype(np.float64))  # hold: the agent position
        except Exception as e:  # noqa: BLE001 - recorded, the other episodes go on
            _error(ep.result, e)
            ep.done = True
        eps.append(ep)
    try:
        for k in range(max_steps):
            active = [e for e in eps if not e.done]
            if not active:
                break
            t = k * dt
            clock.set(t)
            for e in active:
                e.runner.observe({"obs": e.obs}, t)
            if batched:
                LockstepExecutor.flush_all([e.runner.executor for e in active], policy)
            for e in active:
                try:
                    a = e.runner.action(t)
                    tick = e.runner.telemetry.ticks[-1]
                    e.actions.append(np.asarray(a, dtype=np.float64))
                    e.sources.append(tick.chunk_id if tick.source == "queue" else None)
                    _env_step(e, a, max_steps)
                except Exception as ex:  # noqa: BLE001
                    _error(e.result, ex)
                    e.done = True
    finally:
        share = (time.perf_counter() - t_start) / max(1, len(eps))
        for e in eps:
            r = e.result
            r.wall_s = share
            if e.runner is not None:
                r.runner = e.runner.telemetry.summary()
                r.runner["n_chunks"] = len(e.runner.telemetry.chunks)
                r.runner["inpainted_mean"] = float(np.mean([c.inpainted for c in e.runner.telemetry.chunks]
                                                           or [0]))
                r.held_steps = sum(t.source != "queue" for t in e.runner.telemetry.ticks)
                r.dropped_actions = sum(c.dropped_stale for c in e.runner.telemetry.chunks)
                e.runner.close()
            if e.actions:
                r.smoothness = switch_smoothness(np.stack(e.actions), e.sources)
            _finish(r)
            if on_episode:
                on_episode(r, e.frames)
    return [e.result for e in eps]


def _env_step(e: _Episode, action, max_steps: int) -> None:
    obs, reward, terminated, truncated, info = e.env.step(np.asarray(action, dtype=np.float32))
    r = e.result
    r.rewards.append(float(reward))
    r.steps += 1
    if isinstance(info, dict) and info.get("is_success", False):
        r.success = True
    e.obs = _flat_obs(obs)
    if e.frames is not None:
        e.frames.append(e.env.render())
    if terminated or truncated or r.steps >= max_steps:
        e.done = True


def switch_smoothness(actions: np.ndarray, sources: list) -> dict:
    """Smoothness at chunk switches. actions (T, Da) as executed; sources[k]: the chunk of tick k (None: a
    hold). A switch is a tick whose chunk differs from the previous tick's chunk (ticks next to a hold are
    neither switch nor within: holds are counted on their own, `held_steps`).

    -> {"switch_jump_max", "switch_jump_mean": |a_k - a_{k-1}| (euclidean, env units) over switch ticks;
        "within_jump_max", "within_jump_mean": the same over ticks inside one chunk;
        "switch_jerk_mean": mean |a_k - 3a_{k-1} + 3a_{k-2} - a_{k-3}| over 4-tick windows of chunk actions
        that contain a switch; "within_jerk_mean": over windows inside one chunk; "n_switches"}. NaN where
        there is no such tick."""
    a = np.asarray(actions, dtype=np.float64)
    src = list(sources)
    T = len(a)
    jump = np.linalg.norm(np.diff(a, axis=0), axis=-1) if T > 1 else np.zeros(0)
    live = [src[k] is not None and src[k - 1] is not None for k in range(1, T)]
    switch = np.array([lv and src[k + 1] != src[k] for k, lv in enumerate(live)], dtype=bool)
    within = np.array([lv and src[k + 1] == src[k] for k, lv in enumerate(live)], dtype=bool)
    if T > 3:
        jerk = np.linalg.norm(a[3:] - 3 * a[2:-1] + 3 * a[1:-2] - a[:-3], axis=-1)
        ok = np.array([all(live[j:j + 3]) for j in range(T - 3)], dtype=bool)
        jerk_sw = ok & np.array([switch[j:j + 3].any() for j in range(T - 3)], dtype=bool)
        jerk_in = ok & ~jerk_sw
    else:
        jerk, jerk_sw, jerk_in = np.zeros(0), np.zeros(0, bool), np.zeros(0, bool)

    def stat(x, f):
        return float(f(x)) if len(x) else float("nan")

    return {"switch_jump_max": stat(jump[switch], np.max), "switch_jump_mean": stat(jump[switch], np.mean),
            "within_jump_max": stat(jump[within], np.max), "within_jump_mean": stat(jump[within], np.mean),
            "switch_jerk_mean": stat(jerk[jerk_sw], np.mean), "within_jerk_mean": stat(jerk[jerk_in], np.mean),
            "n_switches": int(switch.sum())}


__all__ = ["HarnessPolicy", "LockstepExecutor", "rollout_runner", "switch_smoothness", "batched_predict"]

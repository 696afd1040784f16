"""Closed-loop rollouts of a policy in a gymnasium env; every function returns plain dataclasses.

Same seeds, same noise: the noise of a chunk (x_T and the per-step noise of the reverse process) is drawn from a
generator seeded by (episode seed, chunk index), so every sampler in a comparison starts each episode from the
same state and, while the episodes agree, denoises the same noise; differences are the sampler's alone.

Two modes:

* `rollout_block` (default, lock-step): the robot waits for the policy. `len(seeds)` episodes run side by side,
  one batched policy call per chunk for all running episodes (the UNet sees batch B, or B * window for Picard);
  each episode executes the chunk's n_action_steps actions, then the next chunk is predicted.
* the real-time mode (`realtime=true`) lives in `eval.realtime`: episodes driven by the runtime `Runner` on a
  simulated clock (measured latency x latency_scale, or a fixed delay in control steps).
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass
class CallRecord:
    """One policy call: the observation's env step, batch size, wall-clock ms, Picard rounds of the whole
    (batched) call (sequential samplers: rounds = NFE = steps), denoiser evaluations spent on this episode's
    sample, whether max_iters capped it, and whether it counts as warm-up (excluded from latency statistics)."""

    step: int
    batch: int
    ms: float
    rounds: float
    nfe: float
    capped: bool = False
    warmup: bool = False
    encoder_ms: float | None = None
    """time of the condition (image encoders + normalisation) inside the call; denoise_ms the sampler's"""
    denoise_ms: float | None = None


@dataclass
class EpisodeResult:
    """One finished (or failed) episode. `rewards` has one entry per env step."""

    sampler: str
    seed: int
    status: str = "ok"
    """"ok" or "error" (then `error` holds the exception and the other fields what was reached)"""
    max_reward: float = 0.0
    final_reward: float = 0.0
    success: bool = False
    steps: int = 0
    rewards: list[float] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    wall_s: float = 0.0
    """wall-clock seconds of this episode: each cycle's time (policy call + env steps) shared equally among the
    episodes running in it, so the sum over a block is the block's time"""
    error: str | None = None
    probe_obs: list = field(default_factory=list)
    """[(noise chunk index, obs window (n_obs_steps, obs_dim) as lists)] kept for the batch-1 latency and
    action-error probe"""
    held_steps: int = 0
    """realtime: env steps spent holding (no action left while a chunk was computed)"""
    dropped_actions: int = 0
    """realtime: actions of new chunks dropped because their time had passed"""
    runner: dict = field(default_factory=dict)
    """realtime: the Runner's telemetry summary (`Telemetry.summary()`, n_chunks, inpainted_mean); empty in
    lock-step mode (only the Runner fills it)"""
    smoothness: dict = field(default_factory=dict)
    """realtime: action jumps / jerk at chunk switches against within a chunk (`eval.realtime.switch_smoothness`)"""

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------- noise
def noise_seed(seed: int, chunk: int) -> int:
    """A 63-bit generator seed from (episode seed, chunk index) (numpy SeedSequence hashing)."""
    state = np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def chunk_noise(seed: int, chunk: int, horizon: int, input_dim: int, n_steps: int) -> tuple[torch.Tensor,
                                                                                           torch.Tensor]:
    """Noise of one chunk: x_T (1, horizon, input_dim) then step noise (n_steps, 1, horizon, input_dim), drawn in
    that order from one generator, so x_T is identical for samplers with different step counts."""
    g = torch.Generator().manual_seed(noise_seed(seed, chunk))
    x_t = torch.randn((1, horizon, input_dim), generator=g)
    steps = torch.randn((n_steps, 1, horizon, input_dim), generator=g)
    return x_t, steps


def n_sampler_steps(policy, sampler) -> int:
    """S, the number of reverse steps `sampler` runs on `policy` (the length of step_noise)."""
    return len(policy.scheduler(sampler.family, sampler.num_inference_steps).timesteps)


# ---------------------------------------------------------------------------------------------- helpers
def _obs_dict(policy, windows: list[np.ndarray]) -> dict:
    """Stack per-episode observation windows (n_obs_steps, obs_dim) into {key: (B, n_obs_steps, obs_dim)}.
    Image policies: windows of flattened pixel observations (see `_flat_obs`) -> `image_obs`."""
    if getattr(policy, "vision", None) is not None:
        return image_obs(policy, np.stack(windows))
    if len(policy.obs_keys) != 1:
        raise ValueError(f"the eval harness feeds flat observations to one key; policy reads {policy.obs_keys}")
    return {policy.obs_keys[0]: torch.as_tensor(np.stack(windows), dtype=torch.float32)}


def _ms(seconds) -> float | None:
    return None if seconds is None else float(seconds) * 1e3


def _call_stats(stats, n_steps: int) -> tuple[float, float, bool]:
    """(rounds, nfe per sample, capped) of a predict_action call; sequential samplers: S, S, False."""
    if stats is None:
        return float(n_steps), float(n_steps), False
    get = stats.get if isinstance(stats, dict) else (lambda k, d=None: getattr(stats, k, d))
    nfe = get("nfe", n_steps)
    if isinstance(nfe, torch.Tensor):
        nfe = nfe.float().mean().item()
    elif isinstance(nfe, list | tuple | np.ndarray):
        nfe = float(np.mean(nfe))
    return float(get("iterations", n_steps)), float(nfe), bool(get("capped", False))


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class CallCounter:
    """Counts policy calls per sampler in this process; the first `warmup` calls of each are marked warm-up."""

    def __init__(self, warmup: int):
        self.warmup, self.seen = warmup, {}

    def next_is_warmup(self, label: str) -> bool:
        n = self.seen.get(label, 0)
        self.seen[label] = n + 1
        return n < self.warmup


def predict_chunk(policy, sampler, seeds: list[int], chunks: list[int], windows: list[np.ndarray],
                  inits: list | None = None, noise: list | None = None) -> tuple[dict, float]:
    """One batched policy call with the per-(seed, chunk) noise (or the given [(x_T, z)] per episode)
    -> (predict_action output, wall-clock ms)."""
    n_steps = n_sampler_steps(policy, sampler)
    if noise is None:
        noise = [chunk_noise(s, c, policy.horizon, policy.input_dim, n_steps) for s, c in zip(seeds, chunks)]
    x_t = torch.cat([n[0] for n in noise]).to(policy.device)
    step_noise = torch.cat([n[1] for n in noise], dim=1).to(policy.device)
    init = None
    if inits is not None and all(i is not None for i in inits):
        init = torch.cat(inits, dim=1).to(policy.device)
    obs = _obs_dict(policy, windows)
    _sync(policy.device)
    t0 = time.perf_counter()
    out = policy.predict_action(obs, sampler=sampler, init_noise=x_t, step_noise=step_noise, init=init)
    _sync(policy.device)
    return out, (time.perf_counter() - t0) * 1e3


def _relayed(policy, sampler, slot) -> tuple:
    fresh = chunk_noise(slot.seed, slot.chunk, policy.horizon, policy.input_dim, n_sampler_steps(policy, sampler))
    if slot.noise is None:
        return fresh
    from parapolicy.sampling.warm import relay_noise

    return relay_noise(slot.noise[0], slot.noise[1], fresh[0], fresh[1], slot.executed)


def _relay_init(policy, sampler, slot, noise) -> torch.Tensor:
    from parapolicy.sampling.warm import relay_init

    cfg = sampler
    steps = slot.traj.shape[0] - 1
    return relay_init(slot.traj, slot.executed, noise[0].to(policy.device), noise[1].to(policy.device),
                      policy.scheduler(cfg.family, steps), steps)


def _shift(policy, sampler, traj: torch.Tensor, n: int) -> torch.Tensor:
    """Warm start: the previous chunk's trajectory (S+1, B, H, D) shifted by the n actions executed since."""
    return policy.shift_trajectory(traj, n, sampler)


# ------------------------------------------------------------------------------------------ lock-step
@dataclass
class _Slot:
    env: object
    seed: int
    history: deque
    result: EpisodeResult
    chunk: int = 0
    done: bool = False
    traj: torch.Tensor | None = None
    executed: int = 0
    frames: list | None = None
    pending: np.ndarray | None = None
    noise: tuple | None = None  # relay: this episode's last chunk noise (x_T, z)


def _flat_obs(obs) -> np.ndarray:
    """One observation as a flat float32 vector; the pixel env's {"pixels" (H, W, 3) uint8, "agent_pos" (2,)}
    becomes [pixels.ravel(), agent_pos] (pixel values 0-255, exact in float32; agent xy last, as in keypoint
    observations, which the realtime mode's default hold target reads)."""
    if isinstance(obs, dict):
        if set(obs) != {"pixels", "agent_pos"}:
            raise ValueError(f"dict observations must be the pixel env's {{pixels, agent_pos}}, got {sorted(obs)}")
        return np.concatenate([np.asarray(obs["pixels"], dtype=np.float32).reshape(-1),
                               np.asarray(obs["agent_pos"], dtype=np.float32).reshape(-1)])
    return np.asarray(obs, dtype=np.float32).reshape(-1)


def image_obs(policy, windows: np.ndarray) -> dict:
    """(B, To, H*W*3 + 2) flattened pixel-env windows -> the image policy's own keys: its camera (B, To, 3, H,
    W) float in [0, 1] and its low-dim key (B, To, 2) (agent position in pixels). One camera, one state key."""
    cams = policy.vision.image_keys
    low = [k for k in policy.vision.cond_order if k not in cams]
    if len(cams) != 1 or len(low) != 1 or policy.obs_dims[low[0]] != 2:
        raise ValueError(f"the pixel Push-T env gives one camera and the agent position; this policy reads "
                         f"cameras {cams} and low-dim keys {low}")
    c, h, w = policy.vision.image_shapes[cams[0]]
    b, to, d = windows.shape
    if d != 2 + h * w * c:
        raise ValueError(f"pixel observations of {d - 2} values do not fit the policy's camera {c}x{h}x{w}; "
                         f"set env.observation_size={h}")
    img = torch.from_numpy(np.ascontiguousarray(windows[..., :-2])).reshape(b, to, h, w, c)
    return {cams[0]: img.permute(0, 1, 4, 2, 3).div(255.0),
            low[0]: torch.from_numpy(np.ascontiguousarray(windows[..., -2:]))}


def _reset(env, seed: int, n_obs_steps: int) -> deque:
    obs, _ = env.reset(seed=int(seed))
    o = _flat_obs(obs)
    return deque([o] * n_obs_steps, maxlen=n_obs_steps)


def _step(env, slot: _Slot, action: np.ndarray, max_steps: int) -> None:
    obs, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
    r = slot.result
    r.rewards.append(float(reward))
    r.steps += 1
    if isinstance(info, dict) and info.get("is_success", False):
        r.success = True
    slot.history.append(_flat_obs(obs))
    if slot.frames is not None:
        slot.frames.append(env.render())
    if terminated or truncated or r.steps >= max_steps:
        slot.done = True


def _finish(r: EpisodeResult) -> EpisodeResult:
    r.max_reward = max(r.rewards) if r.rewards else 0.0
    r.final_reward = r.rewards[-1] if r.rewards else 0.0
    return r


def _error(r: EpisodeResult, e: BaseException) -> None:
    r.status = "error"
    r.error = "".join(traceback.format_exception_only(type(e), e)).strip()


def rollout_block(policy, sampler, label: str, envs: list, seeds: list[int], max_steps: int,
                  counter: CallCounter, probe_every: int = 0, record_frames: set | None = None,
                  on_episode: Callable[[EpisodeResult, list | None], None] | None = None,
                  on_cycle: Callable[[int, int], None] | None = None,
                  same_noise_all_chunks: bool = False, relay: bool = False) -> list[EpisodeResult]:
    """Run len(seeds) episodes side by side (lock-step; envs[i] runs seeds[i]) with one batched policy call per
    chunk. Returns one EpisodeResult per seed, in order; `on_episode(result, frames)` is called as each ends.

    An exception in one episode's env step is recorded in that episode; an exception in a batched policy call is
    retried episode by episode so that only the failing episodes are marked "error".
    probe_every: keep the observation window of every probe_every-th chunk (0: none) in `probe_obs`.
    record_frames: seeds whose rgb frames are collected (the env must render rgb_array).
    on_cycle(env step reached, episodes still running) is called after each chunk (for progress display).
    same_noise_all_chunks: every chunk of an episode uses the noise of chunk 0 (what warm start assumes).
    relay: each chunk's noise is the previous chunk's relayed by the executed actions, fresh for the new
    positions (`sampling.warm.relay_noise`); a warm start then starts from `relay_init`."""
    if len(envs) < len(seeds):
        raise ValueError(f"{len(seeds)} seeds need as many envs, got {len(envs)}")
    slots: list[_Slot] = []
    for env, seed in zip(envs, seeds):
        slot = _Slot(env, seed, deque(), EpisodeResult(sampler=label, seed=int(seed)))
        if record_frames and seed in record_frames:
            slot.frames = []
        try:
            slot.history = _reset(env, seed, policy.n_obs_steps)
            if slot.frames is not None:
                slot.frames.append(env.render())
        except Exception as e:  # noqa: BLE001 - recorded, the other episodes go on
            _error(slot.result, e)
            slot.done = True
        slots.append(slot)
    for s in slots:
        if s.done and on_episode:
            on_episode(_finish(s.result), None)

    def run_call(group: list[_Slot]) -> None:
        windows = [np.stack(list(s.history)) for s in group]
        inits, noise = None, None
        noise_chunks = [0 if same_noise_all_chunks else s.chunk for s in group]
        warm_ready = sampler.parallel and sampler.warm_start and all(s.traj is not None for s in group)
        if relay:
            noise = [_relayed(policy, sampler, s) for s in group]
            if warm_ready:
                inits = [_relay_init(policy, sampler, s, nz) for s, nz in zip(group, noise)]
        elif warm_ready:
            inits = [_shift(policy, sampler, s.traj, s.executed) for s in group]
        out, ms = predict_chunk(policy, sampler, [s.seed for s in group], noise_chunks, windows, inits, noise)
        if relay:
            for s, nz in zip(group, noise):
                s.noise = nz
        rounds, nfe, capped = _call_stats(out["stats"], n_sampler_steps(policy, sampler))
        per_sample = getattr(out["stats"], "nfe_per_sample", None)
        warm = counter.next_is_warmup(label)
        actions = out["action"].detach().cpu().numpy()
        traj = out.get("trajectory")
        for i, s in enumerate(group):
            nfe_i = float(per_sample[i]) if per_sample is not None and len(per_sample) == len(group) else nfe
            tm = out.get("timing") or {}
            s.result.calls.append(CallRecord(step=s.result.steps, batch=len(group), ms=ms, rounds=rounds,
                                             nfe=nfe_i, capped=capped, warmup=warm,
                                             encoder_ms=_ms(tm.get("encoder_s")), denoise_ms=_ms(tm.get("denoise_s"))))
            if probe_every and s.chunk % probe_every == 0:
                s.result.probe_obs.append([noise_chunks[i], windows[i].tolist()])
            s.traj = traj[:, i:i + 1] if traj is not None else None
            s.pending = actions[i]

    while True:
        active = [s for s in slots if not s.done]
        if not active:
            break
        t_cycle = time.perf_counter()
        try:
            run_call(active)
        except Exception:  # noqa: BLE001 - isolate the failing episodes
            for s in active:
                try:
                    run_call([s])
                except Exception as e:  # noqa: BLE001
                    _error(s.result, e)
                    s.done = True
        for s in active:
            if s.done:
                continue
            s.executed = 0
            try:
                for a in s.pending:
                    _step(s.env, s, a, max_steps)
                    s.executed += 1
                    if s.done:
                        break
            except Exception as e:  # noqa: BLE001
                _error(s.result, e)
                s.done = True
            s.chunk += 1
        share = (time.perf_counter() - t_cycle) / len(active)
        for s in active:
            s.result.wall_s += share
            if s.done:
                _finish(s.result)
                if on_episode:
                    on_episode(s.result, s.frames)
        if on_cycle:
            on_cycle(max(s.result.steps for s in active), sum(not s.done for s in slots))
    return [s.result for s in slots]


# ---------------------------------------------------------------------------------------------- probe
def probe(policy, samplers: dict, windows: list[tuple[int, int, list]], warmup: int = 2) -> dict:
    """Batch-1 latency and action error on recorded observation windows.

    samplers: {label: SamplerConfig}; windows: [(seed, chunk, window (n_obs_steps, obs_dim))]. Each window is
    run through every sampler (interleaved, cold start) with that (seed, chunk)'s noise, and through the
    sequential sampler of the same family and step count on the same noise (the reference).
    -> {label: {"latency_ms": [...] (first `warmup` calls excluded), "encoder_ms", "denoise_ms": [...] (the
                split inside predict_action), "rounds": [...], "nfe": [...],
                "max_action_error": max |a - a_ref| over executed actions in env units, or None}}"""
    from parapolicy.policy import SamplerConfig

    out = {k: {"latency_ms": [], "encoder_ms": [], "denoise_ms": [], "rounds": [], "nfe": [],
               "max_action_error": None} for k in samplers}
    refs: dict = {}
    for i, (seed, chunk, window) in enumerate(windows):
        w = np.asarray(window, dtype=np.float32)
        for label, cfg in samplers.items():
            res, ms = predict_chunk(policy, cfg, [seed], [chunk], [w])
            rounds, nfe, _ = _call_stats(res["stats"], n_sampler_steps(policy, cfg))
            if i >= warmup:
                out[label]["latency_ms"].append(ms)
                tm = res.get("timing") or {}
                if tm:
                    out[label]["encoder_ms"].append(_ms(tm["encoder_s"]))
                    out[label]["denoise_ms"].append(_ms(tm["denoise_s"]))
                out[label]["rounds"].append(rounds)
                out[label]["nfe"].append(nfe)
            key = (cfg.family, cfg.num_inference_steps, i)
            if key not in refs:
                ref_cfg = SamplerConfig(name=cfg.family, num_inference_steps=cfg.num_inference_steps)
                refs[key] = res["action"] if not cfg.parallel else \
                    predict_chunk(policy, ref_cfg, [seed], [chunk], [w])[0]["action"]
            err = float((res["action"] - refs[key]).abs().max())
            prev = out[label]["max_action_error"]
            out[label]["max_action_error"] = err if prev is None else max(prev, err)
    return out

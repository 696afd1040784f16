"""The policy: observation window -> normalised condition -> sampler -> unnormalised action chunk.

Timing (Diffusion Policy, Push-T defaults n_obs_steps=2, horizon=16, n_action_steps=8):

    obs:      |o|o|                              observations t-1, t  (n_obs_steps)
    predict:  |a|a|a|a|a|a|a|a|a|a|a|a|a|a|a|a|  horizon actions starting at t-1
    execute:    |a|a|a|a|a|a|a|a|                indices action_start .. action_start+n_action_steps-1
                                                 (action_start = n_obs_steps - 1)

`predict_action` is stateless and batched; `act` keeps the observation history and an action queue for a
control loop (one robot, batch 1).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import torch

from parapolicy.checkpoint import LoadedCheckpoint, load_checkpoint
from parapolicy.model import ConditionalUnet1D
from parapolicy.normalizer import LinearNormalizer
from parapolicy.sampler_config import SAMPLERS, SamplerConfig, as_sampler_config

FAST_MODES = ("auto", "bf16", "fp32", "eager")


def measured_bf16_parity(config: dict | None) -> bool:
    """Whether a checkpoint's config records a measured closed-loop parity of the bf16 fast path on that very
    model: {"inference_parity": {"path": "bf16", "command": "...", "result": "..."}} (the command that
    measured it and what it gave). Only such a record lets fast="auto" choose bf16."""
    rec = (config or {}).get("inference_parity")
    return isinstance(rec, dict) and rec.get("path") == "bf16" and bool(rec.get("command")) \
        and bool(rec.get("result"))


def resolve_fast(fast, device="cpu", config: dict | None = None) -> str:
    """The denoiser path a `fast` setting means on `device` for a checkpoint with `config`: "eager", "fp32"
    or "bf16".

    fast: "auto" (default) = the fastest *exact* path: the float32 fast path on a CPU (the same actions as the
    training-time module to float32 rounding, <= 1e-3 px, tested per loader), eager on other devices; bf16
    only for a checkpoint whose config records a measured closed-loop parity (`measured_bf16_parity`) on a
    CPU with fast bf16 matrix units. "bf16" (opt-in; ~2-6 px different actions on Push-T checkpoints, falls
    back to fp32 with a warning without fast bf16), "fp32", "eager"; True = "fp32", False or None = "eager"."""
    if fast is None or fast is False:
        return "eager"
    if fast is True:
        return "fp32"
    if fast not in FAST_MODES:
        raise ValueError(f"unknown fast denoiser mode {fast!r}; choose one of {', '.join(FAST_MODES)}")
    if fast != "auto":
        return fast
    device = torch.device(device)
    if device.type != "cpu":
        return "eager"
    if measured_bf16_parity(config):
        from parapolicy.fast import has_fast_bf16

        if has_fast_bf16(device):
            return "bf16"
    return "fp32"


def draw_normal(shape: tuple, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (CPU generators work with a CUDA policy), then
    moved to `device`."""
    gdev = generator.device if generator is not None else torch.device(device)
    return torch.randn(shape, generator=generator, device=gdev).to(device)


def make_scheduler(family: str, ddpm_kwargs: dict, num_inference_steps: int):
    """A fresh diffusers scheduler of `family` (ddpm / ddim / dpmsolver) from the checkpoint's DDPM settings,
    with its timesteps set."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    base = DDPMScheduler(**ddpm_kwargs)
    if family == "ddpm":
        sch = base
    elif family == "ddim":
        sch = DDIMScheduler.from_config(base.config)
    elif family == "dpmsolver":
        # Only the noise schedule carries over (DDPM's variance_type means a learned variance to DPM-Solver).
        # Timesteps "trailing": DDPM's "leading" collapses 100 steps of a 100-step schedule onto t = 0 here, and
        # DPM-Solver's default "linspace" repeats a timestep at 100 steps (a zero step size: NaN).
        # clip_sample is kept as an extra config entry that parapolicy's samplers honour (x0 clipped to the
        # range, as DDPM/DDIM do): without it the first steps at alpha_bar ~ 1e-7 amplify model error 2000x.
        keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                "prediction_type", "clip_sample", "clip_sample_range")
        cfg = {k: base.config[k] for k in keep if k in base.config}
        sch = DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", timestep_spacing="trailing")
    else:
        raise ValueError(f"unknown scheduler family {family!r}")
    sch.set_timesteps(num_inference_steps)
    return sch


class DiffusionPolicy:
    """A loaded Diffusion Policy (UNet denoiser, normaliser, timing) with pluggable samplers.

    Build with `load_policy(path)`; `predict_action` for batched stateless inference, `act` for a loop.
    """

    def __init__(self, model: torch.nn.Module, normalizer: LinearNormalizer, config: dict, device="cpu",
                 source: str = "", path: str = "", vision=None):
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.normalizer = normalizer.to(self.device)
        # image policies: cameras -> features (parapolicy.image_cond.ImageConditioner), None for low-dim
        self.vision = None if vision is None else vision.to(self.device).eval()
        self.source, self.path = source, path
        self.horizon = int(config["horizon"])
        self.n_obs_steps = int(config["n_obs_steps"])
        self.n_action_steps = int(config["n_action_steps"])
        self.action_start = int(config["action_start"])
        self.action_dim = int(config["action_dim"])
        self.obs_keys = list(config["obs_keys"])
        self.obs_dims = {k: int(v) for k, v in config["obs_dims"].items()}
        self.global_cond = bool(config["obs_as_global_cond"])
        self.obs_dim = sum(self.obs_dims[k] for k in self.obs_keys)
        self.input_dim = self.action_dim + (0 if self.global_cond else self.obs_dim)
        # normaliser entry of each obs key / "action" (LeRobot keys hold dots, which ParameterDict forbids)
        self._norm_key = {k: config.get("normalizer_keys", {}).get(k, k) for k in self.obs_keys + ["action"]}
        own = config.get("default_sampler", "ddpm")
        self.default_sampler = own if own == "consistency" else "para" + own
        self._schedulers: dict = {}
        self._denoise_fn = None
        self.inference = "eager"  # which UNet path `denoiser` calls: eager, fast-fp32, fast-bf16, custom
        self._fast_mode, self._fast_stamp = None, None  # set_fast's path and the weights it was built from
        self._advance: dict = {}  # advance_key(...) -> {window: mean steps accepted per round}, measured
        self.reset()

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def from_checkpoint(cls, ckpt: LoadedCheckpoint, device="cpu") -> DiffusionPolicy:
        cfg = ckpt.config
        model = ConditionalUnet1D(**cfg["model"])
        try:
            model.load_state_dict(ckpt.model_state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"weights in {ckpt.path or ckpt.source} do not fit the UNet described by its "
                             f"config: {str(e).splitlines()[0]}") from e
        normalizer = LinearNormalizer().load_flat_state(ckpt.normalizer_state)
        names = cfg.get("normalizer_keys", {})
        vision = None
        if cfg.get("vision"):
            from parapolicy.image_cond import ImageConditioner

            vision = ImageConditioner(cfg["vision"])
            vision.load_encoder_state(ckpt.encoder_state or {}, where=f"{ckpt.path or ckpt.source}: ")
        images = set(cfg["vision"]["image_keys"]) if vision is not None else set()
        for key in [k for k in cfg["obs_keys"] if k not in images] + ["action"]:
            if names.get(key, key) not in normalizer.keys():
                raise ValueError(f"checkpoint {ckpt.path} has no normaliser for '{key}'")
        return cls(model, normalizer, cfg, device=device, source=ckpt.source, path=ckpt.path, vision=vision)

    def use_denoiser(self, module, name: str = "custom") -> None:
        """Replace the UNet call (same signature as ConditionalUnet1D.forward), e.g. by a fast inference
        path; None restores the eager model. `name` is what `self.inference` reports."""
        self._denoise_fn = module
        self.inference = "eager" if module is None else name
        self._fast_mode = None

    def set_fast(self, fast="auto") -> str:
        """Choose the UNet path (see `resolve_fast`): eager, or `parapolicy.fast.optimize_denoiser` in
        float32 or bf16. Returns and records in `self.inference` the path now used."""
        mode = resolve_fast(fast, self.device, self.config)
        if mode == "eager":
            self.use_denoiser(None)
            return self.inference
        from parapolicy.fast import optimize_denoiser, weights_stamp

        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
        fast_net = optimize_denoiser(self.model, dtype=dtype)
        got_dtype = getattr(fast_net, "dtype", None) or fast_net.denoiser.dtype  # CUDAGraphDenoiser wraps
        got = "bf16" if got_dtype == torch.bfloat16 else "fp32"
        self.use_denoiser(fast_net, name=f"fast-{got}")
        self._fast_mode, self._fast_stamp = mode, weights_stamp(self.model)
        return self.inference

    def _refresh_fast(self) -> None:
        """The fast path holds a copy of the weights: rebuild it when `self.model` changed since (fine-tuning,
        load_state_dict), so a policy never samples with stale weights."""
        if self._fast_mode is None:
            return
        from parapolicy.fast import weights_stamp

        if weights_stamp(self.model) != self._fast_stamp:
            self.set_fast(self._fast_mode)

    def cost_model(self, x_T: torch.Tensor, cond: torch.Tensor | None, num_steps: int, measure: bool = True,
                   advance_key: tuple | None = None):
        """The Picard cost model for window="auto": the batch-latency curve of the UNet path called now (fast
        path included), measured once per process by `sampling.cost.cached_latency`, keyed by that module
        (`self.denoiser` is a new bound method on every access, the module is not). measure=False (a call
        under a time budget): never measure; ValueError if `prepare` has not measured it. The advance per round
        is the one this policy measured on its own solves with the same `advance_key` (family, steps, warm),
        so the window follows how far rounds really get (`CostModel.measured`)."""
        from parapolicy.sampling.cost import CostModel, cached_latency

        net = self._denoise_fn or self.model
        curve = cached_latency(self.denoiser, x_T, cond, x_T.shape[0] * num_steps, key=net, measure=measure)
        if curve is None:
            raise ValueError("window='auto' under a time budget needs the cost model measured beforehand: call "
                             "policy.prepare(sampler, batch) (Runner.warmup does) before the control loop")
        return CostModel.measured(curve, self._advance.get(advance_key, {}))

    def _record_advance(self, key: tuple, stats) -> None:
        """Running mean (last ~20 solves) of the steps accepted per round at the window used."""
        if not stats.iterations or stats.capped:
            return
        table = self._advance.setdefault(key, {})
        a = stats.num_steps / stats.iterations
        old = table.get(stats.window)
        table[stats.window] = a if old is None else old + (a - old) / 20.0

    def scheduler(self, family: str, num_inference_steps: int | None = None):
        steps = num_inference_steps or int(self.config["num_inference_steps"])
        key = (family, steps)
        if key not in self._schedulers and family == "consistency":
            from parapolicy.sampling.consistency import consistency_scheduler

            self._schedulers[key] = consistency_scheduler(self.config, steps)
        if key not in self._schedulers:
            self._schedulers[key] = make_scheduler(family, self.config["scheduler"], steps)
        # shared, not copied per call: the samplers never mutate a scheduler (tested in test_sampling)
        return self._schedulers[key]

    # ---------------------------------------------------------------------------------------- inference
    def normalized_condition(self, obs: dict) -> torch.Tensor:
        """obs {key: (B, n_obs_steps, dim)} in env units -> (B, n_obs_steps * obs_dim) normalised, features
        of one step concatenated in `obs_keys` order, then steps flattened (Diffusion Policy and LeRobot).
        Image policies: cameras (B, n_obs_steps, C, H, W) float in [0, 1] are encoded (`self.vision`)."""
        if self.vision is not None:
            return self.vision.condition(obs, self)
        if not isinstance(obs, dict):
            raise ValueError(f"observations must be a dict with keys {self.obs_keys}, got {type(obs).__name__}")
        missing = [k for k in self.obs_keys if k not in obs]
        if missing:
            raise ValueError(f"observation dict lacks {missing}; this policy reads keys {self.obs_keys} "
                             f"(got {sorted(obs)})")
        parts, batch = [], None
        for k in self.obs_keys:
            x = torch.as_tensor(obs[k], dtype=torch.float32, device=self.device)
            want = (self.n_obs_steps, self.obs_dims[k])
            if x.ndim != 3 or tuple(x.shape[1:]) != want:
                raise ValueError(f"obs['{k}'] must have shape (B, {want[0]}, {want[1]}), got {tuple(x.shape)}")
            if batch is not None and x.shape[0] != batch:
                raise ValueError(f"obs['{k}'] has batch {x.shape[0]}, others have {batch}")
            batch = x.shape[0]
            if not torch.isfinite(x).all():
                raise ValueError(f"obs['{k}'] contains NaN or inf")
            parts.append(self.normalizer.normalize(x, self._norm_key[k]))
        return torch.cat(parts, dim=-1).reshape(batch, -1)

    def denoiser(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The sampler contract: x (N, H, input_dim), t (N,) long, cond (N, n_obs_steps*obs_dim) -> (N, H, D).

        Global conditioning passes cond to the UNet; inpainting writes the observations into the first
        n_obs_steps rows of the obs channels before each call, as Diffusion Policy does."""
        net = self._denoise_fn or self.model
        if self.global_cond:
            return net(x, t, global_cond=cond)
        x = x.clone()
        x[:, :self.n_obs_steps, self.action_dim:] = cond.reshape(x.shape[0], self.n_obs_steps, self.obs_dim)
        return net(x, t)

    def prepare(self, sampler=None, batch: int = 1) -> None:
        """Do the one-off work of a sampler before a control loop starts (`Runner.warmup` calls it): measure
        the cost model of window="auto" for this batch size, so that no deadline-bound call measures it."""
        cfg = as_sampler_config(sampler or self.default_sampler)
        if cfg.parallel and cfg.window == "auto":
            steps = len(self.scheduler(cfg.family, cfg.num_inference_steps).timesteps)
            x = torch.zeros(batch, self.horizon, self.input_dim, device=self.device)
            c = (torch.zeros(batch, int(self.config["model"]["global_cond_dim"]), device=self.device)
                 if self.global_cond else torch.zeros(batch, self.n_obs_steps * self.obs_dim, device=self.device))
            self._refresh_fast()
            self.cost_model(x, c, steps)

    @torch.no_grad()
    def predict_action(self, obs: dict, sampler=None, generator: torch.Generator | None = None,
                       init_noise: torch.Tensor | None = None, step_noise: torch.Tensor | None = None,
                       init: torch.Tensor | None = None, clock: Callable[[], float] | None = None,
                       prefix_actions: torch.Tensor | None = None) -> dict:
        """obs {key: (B, n_obs_steps, dim)} env units -> {"action": (B, n_action_steps, Da),
        "action_pred": (B, horizon, Da), "stats": PicardStats (every sampler; iterations = rounds or steps),
        "trajectory": (S+1, B, H, D), "timing": {"encoder_s": condition (image encoders, normalisation),
        "denoise_s": sampler}}.

        sampler: a name, a dict of SamplerConfig fields or a SamplerConfig (None: the parallel version of the
        checkpoint's own sampler: paraddpm; paraddim for LeRobot DDIM policies). Its `max_iters` and
        `time_budget` cap every sampler; the budget is measured on `clock` (default `time.monotonic`) from the
        start of this call, and the first round (or step) always runs, so the actions have always seen the
        network. init_noise (B, horizon, input_dim) is x_T; step_noise (S, B, horizon, input_dim) is added at
        the k-th reverse step; both drawn from `generator` (on its device) when None. Same noise -> same
        actions across samplers (to the Picard tolerance). `init` is a Picard warm-start trajectory.

        prefix_actions (B, d, Da) env units (real-time chunking): fixes the first d executed actions (horizon
        positions action_start .. action_start+d-1) and samples the rest conditioned on them, by replacement
        of the known part with its forward-noised value at every step (`sampling/inpaint.py`; no extra NFE;
        sequential and Picard solve the same recursion). The returned action[:, :d] is prefix_actions exactly.
        """
        from parapolicy.sampling import sample_picard, sample_sequential

        clock = clock or time.monotonic
        start = clock()
        cfg = as_sampler_config(sampler or self.default_sampler)
        if (cfg.name == "consistency") != ("consistency" in self.config):
            raise ValueError(f"sampler {cfg.name!r} does not fit this policy: " + (
                "a consistency student is sampled only by the 'consistency' sampler" if "consistency" in self.config
                else "the 'consistency' sampler needs a consistency student (python -m parapolicy.consistency)"))
        t0 = time.perf_counter()
        cond = self.normalized_condition(obs)
        _sync(self.device)
        t1 = time.perf_counter()
        self._refresh_fast()
        b = cond.shape[0]
        shape = (b, self.horizon, self.input_dim)
        if init_noise is None:
            init_noise = draw_normal(shape, generator, self.device)
        elif tuple(init_noise.shape) != shape:
            raise ValueError(f"init_noise must have shape {shape}, got {tuple(init_noise.shape)}")
        init_noise = init_noise.to(self.device, torch.float32)
        sch = self.scheduler(cfg.family, cfg.num_inference_steps)
        S = len(sch.timesteps)
        deadline = None if cfg.time_budget is None else start + cfg.time_budget
        prefix, known = self._prefix(prefix_actions, b)
        common = dict(noise=step_noise, cond=cond, num_inference_steps=S, generator=generator,
                      max_iters=cfg.max_iters, deadline=deadline, clock=clock, known=known)
        if cfg.parallel:
            cost = None
            akey = advance_key(cfg, S, init is not None)
            if cfg.window == "auto":
                cost = self.cost_model(init_noise, cond, S, measure=deadline is None, advance_key=akey)
            x0, stats = sample_picard(self.denoiser, sch, init_noise, window=cfg.window, tol=cfg.tol,
                                      atol=cfg.atol, guess=cfg.guess, init=init, accel=cfg.accel,
                                      update=cfg.update, start=cfg.start if init is None else "predict",
                                      first_window=cfg.first_window, cost_model=cost, **common)
            self._record_advance(akey, stats)
        elif cfg.name == "consistency":
            from parapolicy.sampling.consistency import sample_consistency
            from parapolicy.sampling.stats import PicardStats

            if known is not None:
                raise ValueError("prefix_actions (inpainting) needs a ddpm / ddim / dpmsolver sampler (sequential or "
                                 "Picard), not the consistency sampler")
            if cfg.max_iters is not None or cfg.time_budget is not None or init is not None:
                raise ValueError("the consistency sampler takes 1-4 steps: set num_inference_steps, not "
                                 "max_iters / time_budget / init")
            x0 = sample_consistency(self.denoiser, sch, init_noise, noise=step_noise, cond=cond,
                                    num_inference_steps=S, generator=generator)
            stats = PicardStats(iterations=S, nfe=float(S), nfe_per_sample=[S] * b, capped=False,
                                converged_steps=[S] * b, converged=[True] * b, window=1, num_steps=S,
                                guess="consistency")
        else:
            if init is not None:
                raise ValueError(f"init (a warm-start trajectory) is for Picard samplers, not {cfg.name!r}")
            x0, stats = sample_sequential(self.denoiser, sch, init_noise, return_stats=True, **common)
        action_pred = self.normalizer.unnormalize(x0[..., :self.action_dim], self._norm_key["action"])
        s = self.action_start
        if prefix is not None:  # exact: the round trip through the normaliser would cost float rounding
            action_pred[:, s:s + prefix.shape[1]] = prefix
        _sync(self.device)
        timing = {"encoder_s": t1 - t0, "denoise_s": time.perf_counter() - t1}
        return {"action": action_pred[:, s:s + self.n_action_steps], "action_pred": action_pred,
                "stats": stats, "trajectory": stats.trajectory, "timing": timing}

    def _prefix(self, prefix_actions, batch: int):
        """prefix_actions (B, d, Da) env units -> (prefix on the device or None, sampler `known` pair or None)."""
        if prefix_actions is None:
            return None, None
        a = torch.as_tensor(prefix_actions, dtype=torch.float32, device=self.device)
        d_max = self.horizon - self.action_start
        if a.ndim != 3 or a.shape[0] != batch or a.shape[2] != self.action_dim or a.shape[1] > d_max:
            raise ValueError(f"prefix_actions must have shape (B={batch}, d <= {d_max}, Da={self.action_dim}), "
                             f"got {tuple(a.shape)}")
        if not torch.isfinite(a).all():
            raise ValueError("prefix_actions contains NaN or inf")
        d = a.shape[1]
        if d == 0:
            return None, None
        s = self.action_start
        mask = torch.zeros(batch, self.horizon, self.input_dim, dtype=torch.bool, device=self.device)
        mask[:, s:s + d, :self.action_dim] = True
        value = torch.zeros(batch, self.horizon, self.input_dim, device=self.device)
        value[:, s:s + d, :self.action_dim] = self.normalizer.normalize(a, self._norm_key["action"])
        return a, (mask, value)

    def shift_trajectory(self, trajectory: torch.Tensor, n_executed: int, sampler=None) -> torch.Tensor:
        """Warm-start guess (S+1, B, H, D) for the next chunk: `trajectory` (a previous `out["trajectory"]`)
        moved `n_executed` actions forward, for the same x_T and step noise (see sampling.shift_trajectory)."""
        from parapolicy.sampling import shift_trajectory

        cfg = as_sampler_config(sampler or self.default_sampler)
        steps = trajectory.shape[0] - 1
        return shift_trajectory(trajectory, n_executed, scheduler=self.scheduler(cfg.family, steps),
                                num_inference_steps=steps)

    # ------------------------------------------------------------------------------------ control loop
    def reset(self) -> None:
        """Forget the observation history, the action queue and the warm-start trajectory."""
        self._history: collections.deque = collections.deque(maxlen=self.n_obs_steps)
        self._queue: collections.deque = collections.deque()
        self._last_traj = None
        self._noise = None
        self.last_output: dict | None = None

    def act(self, obs: dict, sampler=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """One control step for one robot: obs {key: (dim,)} at the current time -> action (Da,).

        Keeps the last n_obs_steps observations (the first one repeated after `reset`) and a queue of
        n_action_steps actions; a new chunk is predicted when the queue is empty."""
        step = {k: torch.as_tensor(obs[k], dtype=torch.float32) for k in self.obs_keys if k in obs}
        if len(step) != len(self.obs_keys):
            raise ValueError(f"observation lacks keys {[k for k in self.obs_keys if k not in obs]}")
        if not self._history:
            for _ in range(self.n_obs_steps - 1):
                self._history.append(step)
        self._history.append(step)
        if not self._queue:
            cfg = as_sampler_config(sampler or self.default_sampler)
            window = {k: torch.stack([h[k] for h in self._history])[None] for k in self.obs_keys}
            kwargs = {}
            if cfg.parallel and cfg.warm_start:
                # Warm start reuses one x_T and per-step noise for every chunk, so that the previous
                # trajectory, shifted by the executed actions, is a close guess of the next one.
                sch = self.scheduler(cfg.family, cfg.num_inference_steps)
                if self._noise is None:
                    shape = (1, self.horizon, self.input_dim)
                    self._noise = (torch.randn(shape, generator=generator),
                                   torch.randn((len(sch.timesteps),) + shape, generator=generator))
                kwargs = {"init_noise": self._noise[0], "step_noise": self._noise[1]}
                if self._last_traj is not None:
                    kwargs["init"] = self.shift_trajectory(self._last_traj, self.n_action_steps, cfg)
            out = self.predict_action(window, sampler=cfg, generator=generator, **kwargs)
            self._last_traj = out["trajectory"]
            self.last_output = out
            self._queue.extend(out["action"][0])
        return self._queue.popleft()


_ADVANCE_FIELDS = ("update", "start", "first_window", "tol", "atol", "guess", "accel")


def advance_key(cfg, num_steps: int, warm: bool) -> tuple:
    """The key of the measured advance per round: (family, steps, warm), then (field, value) for each knob
    that changes how far a round gets (update, start, first_window, tol, atol, guess, accel) where it is not
    the default."""
    default = SamplerConfig(name=cfg.name)
    return (cfg.family, num_steps, warm) + tuple((f, getattr(cfg, f)) for f in _ADVANCE_FIELDS
                                                 if getattr(cfg, f) != getattr(default, f))


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_policy(path, device="cpu", fast="auto") -> DiffusionPolicy:
    """Load a policy from a built-in name ("pusht_keypoints"), our checkpoint directory, a LeRobot pretrained
    directory or a real-stanford diffusion_policy `.ckpt`.

    fast: the UNet inference path (`resolve_fast`): "auto" (default) = the fastest exact path (float32 fast
    path on a CPU, eager elsewhere; bf16 only where the checkpoint records a measured parity); "bf16"
    (opt-in, changes actions by a few px), "fp32", or "eager" / False for the training-time module
    (bit-exact reference). `policy.inference` says which path was taken."""
    resolve_fast(fast, device)  # bad values fail before the checkpoint is read
    policy = DiffusionPolicy.from_checkpoint(load_checkpoint(path), device=device)
    policy.set_fast(resolve_fast(fast, device, policy.config))
    return policy


__all__ = ["DiffusionPolicy", "SamplerConfig", "SAMPLERS", "FAST_MODES", "load_policy", "make_scheduler",
           "as_sampler_config", "resolve_fast", "measured_bf16_parity", "draw_normal"]

"""Noise-schedule coefficients and the pure per-step math of three diffusers schedulers.

A configured diffusers scheduler is turned once into a `Schedule`: an immutable table of per-step float32
coefficients, computed with the same tensor operations, in the same order, as the scheduler's own `step`
(so a step here reproduces diffusers' step to the last bit on CPU; the tests compare the two). Samplers
then gather rows of the table, which is exact, so every sampler (sequential or Picard, any window) applies
bit-identical coefficients.

Step index k = 0..S-1 goes from trajectory point x_k (at timestep t_k) to x_{k+1}; x_0 = x_T is pure noise
and x_S is the sample. One step is

    x_{k+1} = mean_k(x_k, out_k, m_{k-1}, m_{k-2}) + std_k * z_k                      (fixed-noise SDE)

with out_k = denoiser(x_k, t_k), m_j the (clipped) data prediction of step j (used only by multistep
DPM-Solver++) and z_k the pre-sampled noise of step k.

Families (`Schedule.family`):
  "ddpm"       DDPMScheduler.step: Ho et al. 2020, eq. (7) posterior mean with x0 from eq. (15);
               std_k = sqrt(posterior variance) (variance_type fixed_small / fixed_small_log) or sqrt(beta_t)
               (fixed_large); no noise at t = 0.
  "ddim"       DDIMScheduler.step with eta = 0: Song et al. 2021, eq. (12) with sigma = 0; std_k = 0.
  "dpmsolver"  DPMSolverMultistepScheduler with algorithm_type "dpmsolver++": Lu et al. 2022 (DPM-Solver++),
               multistep order 1/2/3 (Alg. 2, "midpoint"/"heun" second order as in diffusers); std_k = 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

FAMILIES = ("ddpm", "ddim", "dpmsolver")
_SCHEDULERS = {"DDPMScheduler": "ddpm", "DDPMParallelScheduler": "ddpm", "DDIMScheduler": "ddim",
               "DDIMParallelScheduler": "ddim", "DPMSolverMultistepScheduler": "dpmsolver"}


@dataclass(frozen=True, eq=False)
class Schedule:
    """Per-step coefficient table of one configured scheduler. All tensors are float32 on CPU unless noted.

    family: "ddpm" | "ddim" | "dpmsolver"; prediction_type: "epsilon" | "sample" | "v_prediction".
    timesteps: (S,) long, the model timestep t_k fed to the denoiser at step k.
    clip: clamp range for the predicted x0 (DDPM/DDIM `clip_sample`), or None.
    x0_a, x0_b: (S,) the x0 prediction is  x0 = (x - x0_b * out) / x0_a  (epsilon),  out  (sample),
        x0_a * x - x0_b * out  (v_prediction) -- a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t).
    c_x0, c_x: (S,) DDPM posterior-mean coefficients; DDIM: sqrt(alpha_bar_prev), sqrt(1 - alpha_bar_prev).
    order: (S,) long, DPM-Solver++ order used at step k (1 for DDPM/DDIM).
    dpm: (S, 5) DPM-Solver++ coefficients [sigma_t/sigma_s0, alpha_t*(e^-h - 1), coef(D1), coef(D2), 0]
        -- see `_dpm_table`; zeros for other families.
    dpm_r: (S, 4) [1/r0, 1/r1, r0/(r0+r1), 1/(r0+r1)] for orders 2 and 3.
    std: (S,) standard deviation of the noise added at step k (0 where a step adds none).
    tol_var: (S+1,) variance that scales the Picard tolerance for trajectory point x_k: the DDPM posterior
        variance between t_k and the next timestep (ParaDiGMS), clamped to >= 1e-20; tol_var[S] = inf (x_S
        is not the input of any step, so its error never blocks progress).
    signal: (S+1,) the signal scale of x_k (x_k ~ signal_k * x0 + noise): sqrt(alpha_bar_{t_k}) for k < S, 1
        for x_S. Used by the warm start.
    """

    family: str
    prediction_type: str
    solver_type: str
    timesteps: torch.Tensor
    clip: float | None
    x0_a: torch.Tensor
    x0_b: torch.Tensor
    c_x0: torch.Tensor
    c_x: torch.Tensor
    order: torch.Tensor
    dpm: torch.Tensor
    dpm_r: torch.Tensor
    std: torch.Tensor
    tol_var: torch.Tensor
    signal: torch.Tensor
    max_order: int = 1
    """the highest DPM-Solver++ order of any step (a plain int: reading it never syncs a device)"""

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])


def scheduler_family(scheduler) -> str:
    """Family name of a diffusers scheduler instance; ValueError naming an unsupported class."""
    name = type(scheduler).__name__
    if name not in _SCHEDULERS:
        raise ValueError(f"unsupported scheduler {name}: parapolicy samplers support "
                         f"{sorted(_SCHEDULERS)} (DDPM, DDIM eta=0, DPM-Solver++ multistep)")
    return _SCHEDULERS[name]


def _check_config(cfg, family: str, name: str) -> None:
    if cfg.get("prediction_type") not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(f"{name}: prediction_type {cfg.get('prediction_type')!r} is not supported "
                         "(epsilon, sample, v_prediction)")
    if cfg.get("thresholding", False):
        raise ValueError(f"{name}: dynamic thresholding is not supported; use clip_sample")
    if family == "ddpm" and cfg.get("variance_type") not in ("fixed_small", "fixed_small_log", "fixed_large"):
        raise ValueError(f"{name}: variance_type {cfg.get('variance_type')!r} is not supported "
                         "(fixed_small, fixed_small_log, fixed_large)")
    if family == "dpmsolver":
        if cfg.get("algorithm_type") != "dpmsolver++":
            raise ValueError(f"{name}: algorithm_type {cfg.get('algorithm_type')!r} is not supported "
                             "(only the deterministic 'dpmsolver++')")
        if cfg.get("use_flow_sigmas", False) or cfg.get("variance_type") in ("learned", "learned_range"):
            raise ValueError(f"{name}: flow sigmas and learned variance are not supported")
        if cfg.get("solver_order", 2) not in (1, 2, 3):
            raise ValueError(f"{name}: solver_order must be 1, 2 or 3")


def _configured_copy(scheduler, num_inference_steps: int | None):
    """A fresh scheduler of the same class and config with timesteps set; the caller's is never touched.

    num_inference_steps None: reuse the caller's timesteps if it has had `set_timesteps` called, else
    DDPM uses its default (every training timestep) and DDIM/DPM-Solver use num_train_timesteps."""
    import copy

    family = scheduler_family(scheduler)
    if num_inference_steps is not None:
        n = int(num_inference_steps)
        if n < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if n > scheduler.config.num_train_timesteps:
            raise ValueError(f"num_inference_steps {n} > num_train_timesteps "
                             f"{scheduler.config.num_train_timesteps}")
        s = type(scheduler).from_config(scheduler.config)
        s.set_timesteps(n)
        return s
    if getattr(scheduler, "num_inference_steps", None) is not None:
        return copy.deepcopy(scheduler)
    s = type(scheduler).from_config(scheduler.config)
    if family != "ddpm":
        s.set_timesteps(scheduler.config.num_train_timesteps)
    return s


def _posterior_var(ab: torch.Tensor, ab_prev: torch.Tensor) -> torch.Tensor:
    """DDPM posterior variance (Ho et al. eq. 7, beta-tilde) between alpha_bar_t and alpha_bar_prev."""
    beta = 1 - ab / ab_prev
    return torch.clamp((1 - ab_prev) / (1 - ab) * beta, min=1e-20)


def make_schedule(scheduler, num_inference_steps: int | None = None) -> Schedule:
    """Coefficient table for a configured diffusers scheduler (never mutated; a copy is configured).

    scheduler: DDPMScheduler, DDIMScheduler (sampled with eta = 0) or DPMSolverMultistepScheduler
    (algorithm_type "dpmsolver++"). Raises ValueError for other classes or unsupported configs."""
    family = scheduler_family(scheduler)
    name = type(scheduler).__name__
    cfg = dict(scheduler.config)
    _check_config(cfg, family, name)
    key = (name, repr(sorted(cfg.items())), num_inference_steps,
           None if getattr(scheduler, "num_inference_steps", None) is None
           else tuple(scheduler.timesteps.tolist()), repr(getattr(scheduler, "sigmas", None)))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    s = _configured_copy(scheduler, num_inference_steps)
    if family == "ddpm":
        sched = _ddpm_table(s, cfg)
    elif family == "ddim":
        sched = _ddim_table(s, cfg)
    else:
        sched = _dpm_table(s, cfg)
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[key] = sched
    return sched


_CACHE: dict = {}


def _tol_var(ac: torch.Tensor, ts: list[int], final_ab: torch.Tensor) -> torch.Tensor:
    out = []
    for k, t in enumerate(ts):
        ab = ac[t]
        ab_prev = ac[ts[k + 1]] if k + 1 < len(ts) else final_ab
        out.append(_posterior_var(ab, ab_prev))
    return torch.stack(out + [torch.tensor(math.inf)]).to(torch.float32)


def _common(s, cfg, family, ts, x0_a, x0_b, c_x0, c_x, std, tol_var, signal,
            order=None, dpm=None, dpm_r=None):
    S = len(ts)
    clip = None
    # DDPM / DDIM: their clip_sample. DPM-Solver++ has no such option in diffusers (a config carrying it
    # ignores it there); parapolicy honours it when present, because make_scheduler puts it there on
    # purpose: at alpha_bar ~ 1e-7 (cosine schedule, t = 99) an unclipped x0 amplifies model error ~2000x
    # and the solver's actions leave the action range by thousands of pixels.
    if cfg.get("clip_sample", False):
        clip = float(cfg.get("clip_sample_range", 1.0))
    order = torch.ones(S, dtype=torch.long) if order is None else order
    return Schedule(
        family=family, prediction_type=cfg["prediction_type"], solver_type=cfg.get("solver_type", "midpoint"),
        timesteps=torch.tensor(ts, dtype=torch.long), clip=clip,
        x0_a=torch.stack(x0_a).float(), x0_b=torch.stack(x0_b).float(),
        c_x0=torch.stack(c_x0).float(), c_x=torch.stack(c_x).float(),
        order=order, max_order=int(order.max()),
        dpm=torch.zeros(S, 5) if dpm is None else dpm, dpm_r=torch.zeros(S, 4) if dpm_r is None else dpm_r,
        std=torch.stack(std).float(), tol_var=tol_var, signal=signal)


def _ddpm_table(s, cfg) -> Schedule:
    """Mirrors DDPMScheduler.step (diffusers 0.30-0.42): same 0-d float32 ops in the same order."""
    ts = [int(t) for t in s.timesteps]
    ac, one = s.alphas_cumprod, torch.tensor(1.0)
    x0_a, x0_b, c_x0, c_x, std, signal = [], [], [], [], [], []
    for k, t in enumerate(ts):
        prev_t = ts[k + 1] if k + 1 < len(ts) else -1          # DDPMScheduler.previous_timestep
        ab = ac[t]
        ab_prev = ac[prev_t] if prev_t >= 0 else one
        beta_prod, beta_prod_prev = 1 - ab, 1 - ab_prev
        cur_alpha = ab / ab_prev
        cur_beta = 1 - cur_alpha
        x0_a.append(ab ** 0.5)
        x0_b.append(beta_prod ** 0.5)
        c_x0.append((ab_prev ** 0.5 * cur_beta) / beta_prod)       # eq. (7): coefficient of x0
        c_x.append(cur_alpha ** 0.5 * beta_prod_prev / beta_prod)  # eq. (7): coefficient of x_t
        var = torch.clamp((1 - ab_prev) / (1 - ab) * cur_beta, min=1e-20)
        if t == 0:
            sd = torch.tensor(0.0)
        elif cfg["variance_type"] == "fixed_small_log":
            sd = torch.exp(0.5 * torch.log(var))
        elif cfg["variance_type"] == "fixed_large":
            sd = cur_beta ** 0.5
        else:
            sd = var ** 0.5
        std.append(sd)
        signal.append(ab ** 0.5)
    signal.append(one)
    return _common(s, cfg, "ddpm", ts, x0_a, x0_b, c_x0, c_x, std, _tol_var(ac, ts, one),
                   torch.stack(signal).float())


def _ddim_table(s, cfg) -> Schedule:
    """Mirrors DDIMScheduler.step with eta = 0 (and use_clipped_model_output=False)."""
    ts = [int(t) for t in s.timesteps]
    ac, final = s.alphas_cumprod, s.final_alpha_cumprod
    n = s.num_inference_steps
    x0_a, x0_b, c_x0, c_x, std, signal = [], [], [], [], [], []
    for t in ts:
        prev_t = t - s.config.num_train_timesteps // n                # DDIMScheduler.step
        ab = ac[t]
        ab_prev = ac[prev_t] if prev_t >= 0 else final
        x0_a.append(ab ** 0.5)
        x0_b.append((1 - ab) ** 0.5)
        c_x0.append(ab_prev ** 0.5)                                   # eq. (12): sqrt(a_prev) * x0
        c_x.append((1 - ab_prev - torch.tensor(0.0) ** 2) ** 0.5)     # + sqrt(1 - a_prev - sigma^2) * eps
        std.append(torch.tensor(0.0))
        signal.append(ab ** 0.5)
    signal.append(torch.tensor(1.0))
    return _common(s, cfg, "ddim", ts, x0_a, x0_b, c_x0, c_x, std, _tol_var(ac, ts, torch.tensor(1.0)),
                   torch.stack(signal).float())


def _dpm_table(s, cfg) -> Schedule:
    """Mirrors DPMSolverMultistepScheduler.step for "dpmsolver++" (orders 1-3, midpoint/heun)."""
    ts = [int(t) for t in s.timesteps]
    S = len(ts)
    sig = s.sigmas                                                    # (S+1,) float32, last = final sigma

    def alpha_sigma(v):                                               # _sigma_to_alpha_sigma_t
        a = 1 / ((v ** 2 + 1) ** 0.5)
        return a, v * a

    solver_order, lof = cfg["solver_order"], cfg["lower_order_final"]
    order = []
    x0_a, x0_b, dpm, dpm_r, signal = [], [], torch.zeros(S, 5), torch.zeros(S, 4), []
    for k in range(S):
        low_final = k == S - 1 and (cfg["euler_at_final"] or (lof and S < 15)
                                    or cfg["final_sigmas_type"] == "zero")
        low_second = k == S - 2 and lof and S < 15
        if solver_order == 1 or k < 1 or low_final:
            o = 1
        elif solver_order == 2 or k < 2 or low_second:
            o = 2
        else:
            o = 3
        order.append(o)
        a_s, s_s = alpha_sigma(sig[k])                                # convert_model_output at sigma_k
        x0_a.append(a_s)
        x0_b.append(s_s)
        signal.append(a_s)
        alpha_t, sigma_t = alpha_sigma(sig[k + 1])
        alpha_s0, sigma_s0 = a_s, s_s
        lam_t = torch.log(alpha_t) - torch.log(sigma_t)
        lam_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        h = lam_t - lam_s0
        e = torch.exp(-h) - 1.0
        row = [sigma_t / sigma_s0, alpha_t * e, torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0)]
        rr = [torch.tensor(0.0)] * 4
        if o >= 2:
            a1, s1 = alpha_sigma(sig[k - 1])
            lam_s1 = torch.log(a1) - torch.log(s1)
            r0 = (lam_s0 - lam_s1) / h
            rr[0] = 1.0 / r0
            if o == 2 and cfg["solver_type"] == "midpoint":
                row[2] = 0.5 * (alpha_t * e)                          # x -= this * D1
            elif o == 2:
                row[2] = alpha_t * (e / h + 1.0)                      # heun: x += this * D1
            else:
                a2, s2 = alpha_sigma(sig[k - 2])
                lam_s2 = torch.log(a2) - torch.log(s2)
                r1 = (lam_s1 - lam_s2) / h
                rr[0], rr[1], rr[2], rr[3] = 1.0 / r0, 1.0 / r1, r0 / (r0 + r1), 1.0 / (r0 + r1)
                row[2] = alpha_t * (e / h + 1.0)                      # + this * D1
                row[3] = alpha_t * ((torch.exp(-h) - 1.0 + h) / h ** 2 - 0.5)  # - this * D2
        dpm[k] = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in row])
        dpm_r[k] = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in rr])
    signal.append(alpha_sigma(sig[S])[0])
    S_x0 = [torch.tensor(0.0)] * S
    ac = s.alphas_cumprod
    return _common(s, cfg, "dpmsolver", ts, x0_a, x0_b, S_x0, S_x0, [torch.tensor(0.0)] * S,
                   _tol_var(ac, ts, torch.tensor(1.0)), torch.stack(signal).float(),
                   order=torch.tensor(order, dtype=torch.long), dpm=dpm, dpm_r=dpm_r)


_DEVICE_CACHE: dict = {}


def on_device(sched: Schedule, device) -> Schedule:
    """The same table with its tensors on `device` (cached), so that gathering coefficients by step index on
    that device needs no host synchronisation. CPU returns `sched` itself."""
    device = torch.device(device)
    if device.type == "cpu":
        return sched
    key = (sched, str(device))
    hit = _DEVICE_CACHE.get(key)
    if hit is None:
        moved = {f.name: getattr(sched, f.name).to(device) for f in dataclasses.fields(sched)
                 if torch.is_tensor(getattr(sched, f.name))}
        hit = dataclasses.replace(sched, **moved)
        if len(_DEVICE_CACHE) > 16:
            _DEVICE_CACHE.clear()
        _DEVICE_CACHE[key] = hit
    return hit


def _col(v: torch.Tensor, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Gather per-row coefficients v[k] as (N, 1, ..., 1) on like's device/dtype (no host round trip when
    the table is on k's device, see `on_device`)."""
    idx = k if k.device == v.device else k.to(v.device)
    return v[idx].to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def alpha_sigma(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Discrete-schedule coefficients at timesteps t: alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t).

    alphas_cumprod (T,), t (B,) long with t < 0 meaning the clean end (alpha = 1, sigma = 0, as diffusers'
    DDIMScheduler with set_alpha_to_one=True) -> alpha_t, sigma_t (B,) in alphas_cumprod's dtype.
    Used by progressive distillation (`distill_math`) and consistency distillation (`consistency_math.levels`)."""
    ac = alphas_cumprod[t.clamp(min=0)]
    ac = torch.where(t < 0, torch.ones_like(ac), ac)
    return ac.sqrt(), (1 - ac).clamp(min=0).sqrt()


def per_row(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against like (B, ...), on like's device, in like's dtype."""
    return a.reshape(-1, *([1] * (like.ndim - 1))).to(device=like.device, dtype=like.dtype)


def output_to_x0(out: torch.Tensor, x: torch.Tensor, a, b, prediction_type: str) -> torch.Tensor:
    """Unclipped data prediction x0_hat from the denoiser output at x = a x0 + b eps (a = sqrt(alpha_bar),
    b = sqrt(1 - alpha_bar), each a tensor broadcastable against x):
    epsilon: (x - b out) / a;  sample: out;  v_prediction: a x - b out (Salimans & Ho 2022, sec. 4)."""
    if prediction_type == "epsilon":
        return (x - b * out) / a
    if prediction_type == "sample":
        return out
    if prediction_type == "v_prediction":
        return a * x - b * out
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def output_to_eps(out: torch.Tensor, x: torch.Tensor, a, b, prediction_type: str) -> torch.Tensor:
    """Noise prediction eps_hat from the denoiser output (same a, b as `output_to_x0`; from the unclipped
    x0_hat, as diffusers' DDIMScheduler with use_clipped_model_output=False):
    epsilon: out;  sample: (x - a out) / b;  v_prediction: a out + b x."""
    if prediction_type == "epsilon":
        return out
    if prediction_type == "sample":
        return (x - a * out) / b
    if prediction_type == "v_prediction":
        return a * out + b * x
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, a_next, b_next) -> torch.Tensor:
    """DDIM (eta = 0) update to the next noise level, Song et al. 2021 eq. (12) with sigma = 0:
    x_next = a_next x0 + b_next eps, with a_next = sqrt(alpha_bar_next), b_next = sqrt(1 - alpha_bar_next)
    (tensors broadcastable against x0) and x0 (clipped where the scheduler clips) and eps from the same output.
    Used by the samplers (`step_mean`), progressive distillation and the consistency teacher."""
    return a_next * x0 + b_next * eps


def predict_x0(sched: Schedule, k: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Data prediction of step k (clipped where the scheduler clips). k: (N,) long step indices;
    x, out: (N, H, D) -> (N, H, D)."""
    x0 = output_to_x0(out, x, _col(sched.x0_a, k, x), _col(sched.x0_b, k, x), sched.prediction_type)
    if sched.clip is not None:  # DPM-Solver too when its config carries clip_sample (policy.make_scheduler)
        x0 = x0.clamp(-sched.clip, sched.clip)
    return x0


def step_mean(sched: Schedule, k: torch.Tensor, x: torch.Tensor, out: torch.Tensor,
              m_prev: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
              x0: torch.Tensor | None = None) -> torch.Tensor:
    """Noise-free part of step k: x_{k+1} - std_k z_k.

    k: (N,) long step indices (rows may be at different steps); x: (N, H, D) trajectory points x_k;
    out: (N, H, D) denoiser output at (x_k, t_k); m_prev: data predictions of steps k-1 and k-2 (N, H, D),
    needed only for rows whose DPM-Solver++ order is 2 or 3; x0: `predict_x0(sched, k, x, out)` when the
    caller has it already (it is not computed twice). Returns (N, H, D)."""
    if x0 is None:
        x0 = predict_x0(sched, k, x, out)
    if sched.family == "ddpm":
        return _col(sched.c_x0, k, x) * x0 + _col(sched.c_x, k, x) * x       # Ho et al. eq. (7)
    if sched.family == "ddim":
        eps = output_to_eps(out, x, _col(sched.x0_a, k, x), _col(sched.x0_b, k, x), sched.prediction_type)
        return ddim_step(x0, eps, _col(sched.c_x0, k, x), _col(sched.c_x, k, x))   # Song et al. eq. (12), eta=0
    return _dpm_mean(sched, k, x, x0, m_prev)


def _dpm_mean(sched, k, x, m0, m_prev):
    """DPM-Solver++ multistep update (Lu et al. 2022, Alg. 2; diffusers' order-1/2/3 formulas). Every row's
    candidate updates are computed and the row's order selects one (no data-dependent host branches)."""
    c = [_col(sched.dpm[:, i], k, x) for i in range(5)]
    r = [_col(sched.dpm_r[:, i], k, x) for i in range(4)]
    res = c[0] * x - c[1] * m0                                            # first order
    if sched.max_order == 1:
        return res
    order = _col(sched.order, k, x)
    m1, m2 = m_prev
    d1 = r[0] * (m0 - m1)
    if sched.solver_type == "midpoint":
        out2 = res - c[2] * d1
    else:
        out2 = res + c[2] * d1
    out = torch.where(order == 2, out2, res)
    if sched.max_order >= 3:
        d1_0, d1_1 = d1, r[1] * (m1 - m2)
        d1_3 = d1_0 + r[2] * (d1_0 - d1_1)
        d2 = r[3] * (d1_0 - d1_1)
        out3 = res + c[2] * d1_3 - c[3] * d2
        out = torch.where(order == 3, out3, out)
    return out


def frozen_x0_coeffs(sched: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b), each (S,): step k with the data prediction frozen at x0_hat is affine,
    mean_k = a_k * x_k + b_k * x0_hat (DDPM eq. 7; DDIM eq. 12 with eps = (x - sqrt(ab) x0) / sqrt(1-ab);
    first-order DPM-Solver++). Used to roll out a cheap initial guess for points not yet evaluated."""
    if sched.family == "ddpm":
        return sched.c_x.clone(), sched.c_x0.clone()
    if sched.family == "ddim":
        a = sched.c_x / sched.x0_b
        return a, sched.c_x0 - a * sched.x0_a
    return sched.dpm[:, 0].clone(), -sched.dpm[:, 1]

"""Pure math of consistency distillation from a discrete DDPM epsilon teacher (docs/consistency.md).

Noise levels. The teacher has T training timesteps t = 0 .. T-1 with alphas_cumprod abar[t]. We index noise levels
by n = t + 1 in 0 .. T, with n = 0 the clean end:

    alpha_0 = 1, sigma_0 = 0;   alpha_n = sqrt(abar[n-1]), sigma_n = sqrt(1 - abar[n-1])   (n >= 1)
    x_n = alpha_n x + sigma_n eps;  the UNet is called with model timestep n - 1

Consistency function (Song et al. 2023, eq. 5-6, with the LCM timestep scaling, Luo et al. 2023):

    f(x, n) = c_skip(n) x + c_out(n) x0_hat(x, n),   x0_hat = (x - sigma_n eps_theta(x, n-1)) / max(alpha_n, a_min)
    c_skip(n) = sd^2 / ((s n)^2 + sd^2),   c_out(n) = s n / sqrt((s n)^2 + sd^2)

sd = sigma_data (0.5), s = timestep scaling (10). At n = 0: c_skip = 1, c_out = 0, so f(x, 0) = x exactly (the
boundary condition). The floor a_min (1/80) guards the eps -> x0 conversion: on the cosine schedule with T = 100,
alpha_100 = 4.9e-4 would amplify any error of eps by 2000; the floor changes only n = 100 (alpha_99 = 0.0156).
It is part of the student's parameterisation (the student learns whatever eps makes f right), never of the
teacher's ODE step, which uses the exact coefficients.

Everything here takes and returns float64 where it matters; shapes: x (B, H, D), n (B,) long.
"""

from __future__ import annotations

import math

import torch

from parapolicy.schedule import alpha_sigma, ddim_step, output_to_x0, per_row

SOLVERS = ("ddim", "heun")
DISTANCES = ("l2", "huber")
WEIGHTINGS = ("snr", "uniform")


def levels(alphas_cumprod: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alphas_cumprod (T,), n (B,) long in 0..T -> alpha_n, sigma_n (B,) in alphas_cumprod's dtype (n = 0: 1, 0)."""
    T = alphas_cumprod.shape[0]
    if bool(((n < 0) | (n > T)).any()):
        raise ValueError(f"noise levels must lie in 0..{T}, got {n.tolist()}")
    return alpha_sigma(alphas_cumprod, n - 1)          # level n is timestep n - 1; n = 0 (t = -1) the clean end


def boundary_scalings(n: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """n (B,) noise levels -> c_skip(n), c_out(n) (B,) float64; c_skip(0) = 1 and c_out(0) = 0 exactly."""
    s = timestep_scaling * n.to(torch.float64)
    d2 = sigma_data ** 2
    return d2 / (s ** 2 + d2), s / torch.sqrt(s ** 2 + d2)


def eps_to_x0(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, alpha_min: float = 0.0,
              clip: float | None = None) -> torch.Tensor:
    """x0_hat = (x - sigma eps) / max(alpha, alpha_min), then clipped to [-clip, clip] when clip is given.
    x, eps (B, H, D); alpha, sigma (B,) -> (B, H, D) in x's dtype."""
    a = alpha.clamp(min=alpha_min) if alpha_min > 0 else alpha
    x0 = output_to_x0(eps, x, per_row(a, x), per_row(sigma, x), "epsilon")
    return x0.clamp(-clip, clip) if clip is not None else x0


def consistency_from_eps(x: torch.Tensor, eps: torch.Tensor, n: torch.Tensor, alphas_cumprod: torch.Tensor,
                         sigma_data: float = 0.5, timestep_scaling: float = 10.0, alpha_min: float = 1 / 80,
                         clip: float | None = None) -> torch.Tensor:
    """f(x, n) = c_skip(n) x + c_out(n) x0_hat(x, eps, n) (module docstring) -> (B, H, D) in x's dtype.

    clip: clip x0_hat (the sampler and the target do; the online student in training does not, because a clipped
    output has no gradient)."""
    alpha, sigma = levels(alphas_cumprod, n)
    x0 = eps_to_x0(x, eps, alpha, sigma, alpha_min, clip)
    c_skip, c_out = boundary_scalings(n, sigma_data, timestep_scaling)
    return per_row(c_skip, x) * x + per_row(c_out, x) * x0


def teacher_ode_step(eps_fn, x: torch.Tensor, n: torch.Tensor, m: torch.Tensor, alphas_cumprod: torch.Tensor,
                     solver: str = "ddim", clip: float | None = None) -> torch.Tensor:
    """One deterministic teacher step of the probability-flow ODE from level n to level m < n, per row.

    eps_fn(x (B,H,D), model timestep (B,) long) -> eps (B,H,D). x (B,H,D); n, m (B,) long.
    ddim: x_m = alpha_m clip(x0_hat) + sigma_m eps_hat, x0_hat = (x_n - sigma_n eps_hat)/alpha_n (DDIM eta = 0, as
    diffusers' DDIMScheduler.step with clip_sample: eps from the unclipped x0_hat). m = 0 gives clip(x0_hat).
    heun: in y = x / alpha, r = sigma / alpha the ODE is dy/dr = eps (DDIM is its Euler step); Heun averages
    eps at both ends, y_m = y_n + (r_m - r_n) (eps_n + eps(x_m_euler)) / 2, and falls back to DDIM where m = 0
    (eps is not defined at the clean end; EDM does the same). Heun does not clip.
    Computed in float64; returns x's dtype."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if bool((m >= n).any()):
        raise ValueError("teacher steps go from a higher noise level n to a lower m")
    x64 = x.to(torch.float64)
    a_n, s_n = levels(alphas_cumprod, n)
    a_m, s_m = levels(alphas_cumprod, m)
    eps = eps_fn(x, n - 1).to(torch.float64)
    x0 = eps_to_x0(x64, eps, a_n, s_n, clip=clip)
    ddim = ddim_step(x0, eps, per_row(a_m, x64), per_row(s_m, x64))           # schedule.ddim_step (Song eq. 12)
    if solver == "ddim":
        return ddim.to(x.dtype)
    r_n, r_m = s_n / a_n, s_m / a_m
    y_n = x64 / per_row(a_n, x64)
    y_e = y_n + per_row(r_m - r_n, x64) * eps                       # Euler (= unclipped DDIM) in y
    x_e = (per_row(a_m, x64) * y_e).to(x.dtype)
    inner = m > 0
    eps_m = eps_fn(x_e, (m - 1).clamp(min=0)).to(torch.float64)   # rows with m = 0 are not used
    y_h = y_n + per_row(r_m - r_n, x64) * 0.5 * (eps + eps_m)
    heun = per_row(a_m, x64) * y_h
    return torch.where(per_row(inner, x64).bool(), heun, ddim).to(x.dtype)


def loss_weight(n: torch.Tensor, alphas_cumprod: torch.Tensor, weighting: str = "snr",
                alpha_min: float = 1 / 80) -> torch.Tensor:
    """Per-row weight (B,) float64 of the distance between f_theta(x_n, n) and the target.

    uniform: 1 (LCM). snr: max(alpha_n, alpha_min)^2 / sigma_n^2. Since f = c_skip x + c_out (x - sigma eps) /
    max(alpha, alpha_min), an error de in the student's eps moves f by c_out sigma / max(alpha, alpha_min) de, up
    to 80x at the noisiest levels; the snr weight undoes that (c_out ~ 1 for n >= 1), so the weighted l2 loss is
    the squared error in eps space at every level, as the teacher was trained. n = 0 never occurs for the student
    (n >= 1); its weight would be infinite and is set to 0."""
    if weighting == "uniform":
        return torch.ones(n.shape, dtype=torch.float64)
    if weighting != "snr":
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    alpha, sigma = levels(alphas_cumprod, n)
    w = alpha.clamp(min=alpha_min) ** 2 / sigma.clamp(min=1e-300) ** 2
    return torch.where(n == 0, torch.zeros_like(w), w)


def distance(a: torch.Tensor, b: torch.Tensor, kind: str = "l2", huber_c: float | None = None) -> torch.Tensor:
    """Per-sample distance (B,) between a and b (B, ...).

    l2: mean squared error over the sample's elements. huber: pseudo-Huber sqrt(||a - b||^2 + c^2) - c over the
    sample (Song & Dhariwal 2023, improved consistency training), c = 0.00054 sqrt(d) by default (d elements)."""
    d = (a - b).flatten(1)
    if kind == "l2":
        return d.pow(2).mean(1)
    if kind == "huber":
        c = huber_c if huber_c is not None else 0.00054 * math.sqrt(d.shape[1])
        return torch.sqrt(d.pow(2).sum(1) + c ** 2) - c
    raise ValueError(f"distance must be one of {DISTANCES}, got {kind!r}")


def sampling_levels(num_train_timesteps: int, skip: int, num_steps: int) -> list[int]:
    """Noise levels (descending, first = T) of multistep consistency sampling with num_steps steps.

    As LCM's scheduler: the training grid of the skip, g = [T, T - skip, T - 2 skip, ...] (L = T // skip points),
    is walked with stride L // num_steps from its noisiest point and the first num_steps kept. T = 100, skip 10:
    1 -> [100]; 2 -> [100, 50]; 3 -> [100, 70, 40]; 4 -> [100, 80, 60, 40]."""
    if skip < 1 or skip > num_train_timesteps:
        raise ValueError(f"skip must be in 1..{num_train_timesteps}, got {skip}")
    grid = list(range(num_train_timesteps, 0, -skip))[: num_train_timesteps // skip]
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= len(grid):
        raise ValueError(f"consistency sampling takes 1..{len(grid)} steps with skip {skip} over "
                         f"{num_train_timesteps} timesteps, got {num_steps!r}")
    return grid[:: len(grid) // num_steps][:num_steps]

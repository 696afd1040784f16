"""The pure math of progressive distillation (notation and grids: the `parapolicy.distill` module docstring).

Model-output conversions and the DDIM step with per-row alpha, sigma (B,); the Algorithm 2 target x_tilde; the
loss weight in the student's parameterisation; the discrete DDIM timestep grids and their halving. The
schedule coefficients themselves are `schedule.alpha_sigma` (t < 0 is the clean end).
"""

from __future__ import annotations

import numpy as np
import torch

from parapolicy.schedule import ddim_step as schedule_ddim_step
from parapolicy.schedule import output_to_eps, output_to_x0, per_row

PARAMETERIZATIONS = {"v": "v_prediction", "x": "sample"}
WEIGHTINGS = ("truncated_snr", "snr_plus_one")


# ------------------------------------------------------------------------------------------ schedule math
def pred_to_x(out: torch.Tensor, z: torch.Tensor, alpha, sigma, prediction_type: str) -> torch.Tensor:
    """Model output -> x_hat (`schedule.output_to_x0`): epsilon (z - sigma eps)/alpha; sample out; v alpha z - sigma v.
    z, out (B, ...); alpha, sigma (B,)."""
    return output_to_x0(out, z, per_row(alpha, z), per_row(sigma, z), prediction_type)


def pred_to_eps(out: torch.Tensor, z: torch.Tensor, alpha, sigma, prediction_type: str) -> torch.Tensor:
    """Model output -> eps_hat (`schedule.output_to_eps`): sample (z - alpha x)/sigma; v sigma z + alpha v."""
    return output_to_eps(out, z, per_row(alpha, z), per_row(sigma, z), prediction_type)


def x_to_v(x: torch.Tensor, z: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """v = alpha eps - sigma x with eps = (z - alpha x)/sigma, i.e. (alpha z - x)/sigma (alpha^2 + sigma^2 = 1)."""
    return (per_row(alpha, z) * z - x) / per_row(sigma, z)


def ddim_step(out: torch.Tensor, z: torch.Tensor, alpha_t, sigma_t, alpha_s, sigma_s, prediction_type: str,
              clip_range: float | None = None) -> torch.Tensor:
    """One DDIM (eta = 0) step t -> s as diffusers' DDIMScheduler.step: z_s = alpha_s clip(x_hat) + sigma_s eps_hat,
    eps_hat from the unclipped x_hat (use_clipped_model_output=False). z, out (B, ...); alphas/sigmas (B,).
    The update itself is `schedule.ddim_step`, the samplers' DDIM step."""
    x = pred_to_x(out, z, alpha_t, sigma_t, prediction_type)
    eps = pred_to_eps(out, z, alpha_t, sigma_t, prediction_type)
    if clip_range is not None:
        x = x.clamp(-clip_range, clip_range)
    return schedule_ddim_step(x, eps, per_row(alpha_s, z), per_row(sigma_s, z))


def distill_target_x(z_t: torch.Tensor, z_end: torch.Tensor, alpha_t, sigma_t, alpha_e, sigma_e) -> torch.Tensor:
    """Algorithm 2: x_tilde = (z_t'' - (sigma_t''/sigma_t) z_t) / (alpha_t'' - (sigma_t''/sigma_t) alpha_t), the x
    whose DDIM step t -> t'' (eps from the same x) goes from z_t to z_t''. The denominator equals
    (alpha_t'' sigma_t - sigma_t'' alpha_t) / sigma_t > 0 because the SNR falls with t. Shapes as ddim_step."""
    r = per_row(sigma_e / sigma_t, z_t)
    return (z_end - r * z_t) / (per_row(alpha_e, z_t) - r * per_row(alpha_t, z_t))


def loss_weight(alpha: torch.Tensor, sigma: torch.Tensor, weighting: str, parameterization: str) -> torch.Tensor:
    """Per-sample weight (B,) of the squared error in the student's own output space.

    In x space w_x = max(SNR, 1) or SNR + 1 (sec. 4); since x_hat - x_tilde = -sigma (v_hat - v_tilde), the
    same loss in v space is w_x * sigma^2 (SNR + 1 -> plain v-MSE)."""
    snr = alpha ** 2 / sigma ** 2
    if weighting == "truncated_snr":
        w = snr.clamp(min=1.0)
    elif weighting == "snr_plus_one":
        w = snr + 1
    else:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if parameterization == "v":
        return w * sigma ** 2
    if parameterization == "x":
        return w
    raise ValueError(f"parameterization must be one of {tuple(PARAMETERIZATIONS)}, got {parameterization!r}")


# ------------------------------------------------------------------------------------------------ grids
def check_grid(grid: tuple[int, ...], num_train_timesteps: int) -> int:
    """Validate a uniform grid that ends on the clean sample; return its stride."""
    if len(grid) < 1:
        raise ValueError("a timestep grid needs at least one timestep")
    stride = grid[0] - grid[1] if len(grid) > 1 else num_train_timesteps
    diffs = np.diff(np.asarray(grid))
    if len(grid) > 1 and not (diffs == -stride).all():
        raise ValueError(f"timestep grid {list(grid)} is not uniform")
    if grid[-1] < 0 or grid[-1] >= stride or grid[0] > num_train_timesteps - 1:
        raise ValueError(f"timestep grid {list(grid)} must lie in [0, {num_train_timesteps - 1}] and its last "
                         f"timestep must be below the stride {stride} (so its last step lands on the clean sample)")
    if stride != num_train_timesteps // len(grid):
        raise ValueError(f"a {len(grid)}-step grid with stride {stride} cannot be sampled by diffusers' DDIM, "
                         f"which steps from t to t - {num_train_timesteps} // {len(grid)} = "
                         f"{num_train_timesteps // len(grid)}")
    return stride


def scheduler_grid(scheduler_kwargs: dict, num_inference_steps: int) -> tuple[int, ...]:
    """The DDIM grid (descending timesteps) the policy samples with for these checkpoint scheduler kwargs;
    ValueError when diffusers' DDIM would not step along it consistently (see `parapolicy.distill`)."""
    from parapolicy.policy import make_scheduler

    sch = make_scheduler("ddim", scheduler_kwargs, num_inference_steps)
    if float(sch.final_alpha_cumprod) != 1.0:
        raise ValueError("the DDIM scheduler must end on the clean sample (set_alpha_to_one=True)")
    grid = tuple(int(t) for t in sch.timesteps)
    check_grid(grid, sch.config.num_train_timesteps)
    return grid


def halve_grid(grid: tuple[int, ...], num_train_timesteps: int) -> tuple[int, ...]:
    """Student grid: the teacher's points of odd index counted from the clean end (see `parapolicy.distill`).

    (N,) descending -> (N // 2,) descending; ValueError when diffusers' DDIM cannot sample the result."""
    check_grid(grid, num_train_timesteps)
    if len(grid) < 2:
        raise ValueError("a 1-step grid cannot be halved")
    student = tuple(grid[::-1][1::2][::-1])
    check_grid(student, num_train_timesteps)
    return student


def grid_scheduler_fields(grid: tuple[int, ...], num_train_timesteps: int) -> dict:
    """Scheduler kwargs that make DDIMScheduler.set_timesteps(len(grid)) produce exactly `grid`."""
    check_grid(grid, num_train_timesteps)
    return {"timestep_spacing": "leading", "steps_offset": int(grid[-1])}


def halving_schedule(grid: tuple[int, ...], num_train_timesteps: int, rounds: int) -> list[tuple[int, ...]]:
    """The student grids of `rounds` successive halvings; ValueError naming the first round that cannot be."""
    out = []
    for r in range(rounds):
        try:
            grid = halve_grid(grid, num_train_timesteps)
        except ValueError as e:
            raise ValueError(f"round {r + 1} of {rounds}: {e}") from e
        out.append(grid)
    return out

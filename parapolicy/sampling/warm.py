"""Warm start for receding-horizon control: reuse the previous chunk's trajectory as the next `init`.

A policy executes the first n actions of a chunk x_S (B, H, D) and samples the next chunk one control
step later. The next chunk's actions are the old ones moved n slots earlier along the horizon axis, so
the next trajectory is guessed by shifting the old one. Two ways to shift a *noisy* trajectory point
x_k ~ signal_k * x0 + noise_k:

  "naive":  shift all of x_k along the horizon (pad with its last slot). Right when the next call draws
            fresh noise that is also shifted; with a fixed noise it moves the noise to the wrong slots.
  "signal": shift only the signal part and keep the noise where it is:
                init_k = x_k + signal_k * (shift(x0) - x0),     x0 = x_S
            Right when the next call reuses the same x_T and per-step noise (the noise is indexed by slot,
            not by action), so the noise part of the old trajectory is still the noise part of the new one.
            At k = 0 it leaves x_T almost unchanged (signal_0 ~ 0); at k = S it is shift(x0).

Either way `init` is only a starting guess: Picard still converges to the exact sample of the new
(x_T, noise, cond); a better guess only means fewer rounds. The benchmark measures both.
"""

from __future__ import annotations

import torch

from parapolicy.schedule import make_schedule

MODES = ("signal", "naive")


def shift_horizon(x: torch.Tensor, n: int) -> torch.Tensor:
    """x: (..., H, D) -> the same with slot i holding old slot i+n; the last n slots repeat old slot H-1."""
    H = x.shape[-2]
    if n <= 0:
        return x.clone()
    n = min(n, H)
    tail = x[..., H - 1:, :].expand(*x.shape[:-2], n, x.shape[-1])
    return torch.cat([x[..., n:, :], tail], dim=-2)


def shift_trajectory(trajectory: torch.Tensor, n_executed: int, scheduler=None,
                     num_inference_steps: int | None = None, mode: str = "signal") -> torch.Tensor:
    """Initial guess (S+1, B, H, D) for the next control step from the previous converged trajectory.

    trajectory: (S+1, B, H, D) (`stats.trajectory`); n_executed: actions executed since it was sampled
    (>= 0); scheduler / num_inference_steps: the ones used for sampling (needed by mode "signal" for the
    signal scale of each point); mode: "signal" (default; for a fixed x_T and noise) or "naive"."""
    if not torch.is_tensor(trajectory) or trajectory.ndim != 4:
        got = tuple(trajectory.shape) if torch.is_tensor(trajectory) else type(trajectory).__name__
        raise ValueError(f"trajectory must be (S+1, B, H, D), got {got}")
    if isinstance(n_executed, bool) or not isinstance(n_executed, int) or n_executed < 0:
        raise ValueError(f"n_executed must be an int >= 0, got {n_executed!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "naive":
        return shift_horizon(trajectory, n_executed)
    if scheduler is None:
        raise ValueError("mode='signal' needs the scheduler (for each point's signal scale)")
    sched = make_schedule(scheduler, num_inference_steps)
    if sched.num_steps + 1 != trajectory.shape[0]:
        raise ValueError(f"trajectory has {trajectory.shape[0]} points, the scheduler {sched.num_steps + 1}")
    x0 = trajectory[-1]
    d = shift_horizon(x0, n_executed) - x0                                   # (B, H, D)
    sig = sched.signal.to(device=trajectory.device, dtype=trajectory.dtype).view(-1, 1, 1, 1)
    return trajectory + sig * d[None]

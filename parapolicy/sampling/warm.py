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


# ------------------------------------------------------------------------------------- relayed noise
def relay_noise(x_T_prev: torch.Tensor, z_prev: torch.Tensor, x_T_fresh: torch.Tensor, z_fresh: torch.Tensor,
                n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise of the next chunk relayed along the horizon (as Streaming Diffusion Policy and noise-relaying
    buffers do): the positions that overlap the previous chunk take its x_T and per-step noise moved n slots
    earlier (the n executed actions leave), the last n positions take the fresh draw. So every chunk still
    gets fresh noise where it predicts new actions, and the policy stays stochastic, unlike one draw per episode.

    x_T_*: (B, H, D); z_*: (S, B, H, D) (or None for samplers without step noise); n: actions executed
    since the previous chunk (>= 0). Returns (x_T, z)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    H = x_T_prev.shape[-2]
    n = min(n, H)

    def cat(prev, fresh):
        return torch.cat([prev[..., n:, :], fresh[..., H - n:, :]], dim=-2)

    return cat(x_T_prev, x_T_fresh), (None if z_prev is None or z_fresh is None else cat(z_prev, z_fresh))


def relay_init(trajectory: torch.Tensor, n: int, x_T: torch.Tensor, noise: torch.Tensor | None, scheduler,
               num_inference_steps: int | None = None) -> torch.Tensor:
    """Initial guess (S+1, B, H, D) for a chunk whose noise was relayed by `relay_noise`: the previous converged
    trajectory moved n slots earlier (its noise moved with it, so each point's noise part is the new chunk's),
    and the n new positions, whose noise is fresh, rolled out from the new x_T with the data prediction frozen
    at the previous chunk's last action (the frozen-x0 rollout of `sampling.rollout`). init[0] = x_T."""
    from parapolicy.sampling.rollout import Rollout

    sched = make_schedule(scheduler, num_inference_steps)
    S = sched.num_steps
    if trajectory.ndim != 4 or trajectory.shape[0] != S + 1 or trajectory.shape[1:] != x_T.shape:
        raise ValueError(f"trajectory must be (S+1, B, H, D) = {(S + 1, *x_T.shape)}, got {tuple(trajectory.shape)}")
    H = x_T.shape[-2]
    n = min(int(n), H)
    out = shift_horizon(trajectory, n)
    if n > 0:
        fresh = x_T.unsqueeze(0).repeat(S + 1, 1, 1, 1)
        B = x_T.shape[0]
        Rollout(sched, x_T.device, x_T.dtype)(fresh, torch.arange(B, device=x_T.device),
                                              torch.zeros(B, dtype=torch.long, device=x_T.device), out[S], noise)
        out[..., H - n:, :] = fresh[..., H - n:, :]
    out[0] = x_T
    return out

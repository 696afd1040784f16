"""Sequential sampling: S denoiser calls, one per reverse step; the reference for every parallel sampler."""

from __future__ import annotations

import torch

from parapolicy.sampling.common import Denoiser, call_denoiser, check_inputs, resolve_noise
from parapolicy.schedule import Schedule, _col, make_schedule, predict_x0, step_mean


def step_rows(sched: Schedule, k: torch.Tensor, x: torch.Tensor, out: torch.Tensor,
              hist: torch.Tensor | None, b: torch.Tensor, noise: torch.Tensor | None,
              x0: torch.Tensor | None = None) -> torch.Tensor:
    """One reverse step for N independent rows: x_{k+1} = mean_k(x_k, out_k, m_{k-1}, m_{k-2}) + std_k z_k.

    k: (N,) long step indices; x, out: (N, H, D); b: (N,) long sample index of each row; hist: (S, B, H, D)
    data predictions of earlier steps (DPM-Solver++ order >= 2 only; the rows' own m_k must already be
    written into it), else None; noise: (S, B, H, D) or None; x0: the rows' data prediction if already
    computed. Returns (N, H, D)."""
    m_prev = (None, None)
    if hist is not None:
        m_prev = (hist[(k - 1).clamp(min=0), b], hist[(k - 2).clamp(min=0), b])
    mean = step_mean(sched, k, x, out, m_prev, x0=x0)
    if noise is None:
        return mean
    return mean + _col(sched.std, k, x) * noise[k, b]                                  # noise folded in: fixed-noise SDE


def sample_sequential(denoiser: Denoiser, scheduler, x_T: torch.Tensor, noise: torch.Tensor | None = None,
                      cond: torch.Tensor | None = None, num_inference_steps: int | None = None,
                      generator: torch.Generator | None = None, return_trajectory: bool = False):
    """Run the scheduler's S reverse steps one after another.

    x_T: (B, H, D) initial noise; noise: (S, B, H, D), noise[k] added at step k (scaled by that step's std;
    ignored by deterministic samplers), None -> drawn from `generator`; cond: (B, C) or None.
    Returns x_0 (B, H, D), or (x_0, trajectory (S+1, B, H, D)) with return_trajectory=True.
    Equals the diffusers `scheduler.step` loop fed the same noise (tests/test_sampling.py)."""
    sched = make_schedule(scheduler, num_inference_steps)
    S = sched.num_steps
    B, H, D = check_inputs(x_T, cond, noise, S)
    z = resolve_noise(noise, sched.std, x_T, generator)
    hist = x_T.new_zeros((S, B, H, D)) if sched.max_order > 1 else None
    b = torch.arange(B, device=x_T.device)
    ts = sched.timesteps.to(x_T.device)
    x = x_T
    traj = [x] if return_trajectory else None
    with torch.no_grad():
        for k in range(S):
            kk = torch.full((B,), k, dtype=torch.long, device=x_T.device)
            out = call_denoiser(denoiser, x, ts[kk], cond)
            if hist is not None:
                hist[k] = predict_x0(sched, kk, x, out)
            x = step_rows(sched, kk, x, out, hist, b, z)
            if traj is not None:
                traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x

"""Sequential sampling: S denoiser calls, one per reverse step; the reference for every parallel sampler."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from parapolicy.sampling.common import Denoiser, call_denoiser, check_inputs, check_tol, resolve_noise
from parapolicy.sampling.inpaint import Known
from parapolicy.sampling.rollout import Rollout
from parapolicy.sampling.stats import PicardStats
from parapolicy.schedule import Schedule, _col, make_schedule, on_device, predict_x0, step_mean


def step_rows(sched: Schedule, k: torch.Tensor, x: torch.Tensor, out: torch.Tensor,
              hist: torch.Tensor | None, b: torch.Tensor, noise: torch.Tensor | None,
              x0: torch.Tensor | None = None, known=None) -> torch.Tensor:
    """One reverse step for N independent rows: x_{k+1} = mean_k(x_k, out_k, m_{k-1}, m_{k-2}) + std_k z_k.

    k: (N,) long step indices; x, out: (N, H, D); b: (N,) long sample index of each row; hist: (S, B, H, D)
    data predictions of earlier steps (DPM-Solver++ order >= 2 only; the rows' own m_k must already be
    written into it), else None; noise: (S, B, H, D) or None; x0: the rows' data prediction if already
    computed; known: an `inpaint.Known`, applied to the result (x_{k+1} = P_{k+1}(G_k(x_k)), inpaint.py).
    Returns (N, H, D)."""
    m_prev = (None, None)
    if hist is not None:
        m_prev = (hist[(k - 1).clamp(min=0), b], hist[(k - 2).clamp(min=0), b])
    x_next = step_mean(sched, k, x, out, m_prev, x0=x0)
    if noise is not None:
        x_next = x_next + _col(sched.std, k, x) * noise[k, b]                          # noise folded in: fixed-noise SDE
    return x_next if known is None else known.rows(x_next, k + 1, b)


def sample_sequential(denoiser: Denoiser, scheduler, x_T: torch.Tensor, noise: torch.Tensor | None = None,
                      cond: torch.Tensor | None = None, num_inference_steps: int | None = None,
                      generator: torch.Generator | None = None, return_trajectory: bool = False,
                      max_iters: int | None = None, deadline: float | None = None,
                      clock: Callable[[], float] = time.monotonic, return_stats: bool = False,
                      known: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Run the scheduler's S reverse steps one after another.

    x_T: (B, H, D) initial noise; noise: (S, B, H, D), noise[k] added at step k (scaled by that step's std;
    ignored by deterministic samplers), None -> drawn from `generator`; cond: (B, C) or None.
    max_iters (>= 1) / deadline (a time on `clock`, checked before every step after the first): stop early.
    The anytime result then is the one of `sample_picard`: the remaining steps are rolled out with the data
    prediction frozen at the last step's (x_S = that prediction for DDPM / DDIM), marked `stats.capped`.
    Returns x_0 (B, H, D); with return_trajectory=True (x_0, trajectory (S+1, B, H, D)); with
    return_stats=True (x_0, PicardStats) whose `trajectory` is filled and `iterations` counts the steps run.
    known: (mask (B, H, D) bool, value (B, H, D)) normalised: inpaint the masked entries (`inpaint.py`).
    Equals the diffusers `scheduler.step` loop fed the same noise (tests/test_sampling.py)."""
    sched = on_device(make_schedule(scheduler, num_inference_steps), x_T.device)
    S = sched.num_steps
    B, H, D = check_inputs(x_T, cond, noise, S)
    check_tol(0.0, max_iters)
    z = resolve_noise(noise, sched.std, x_T, generator)
    hist = x_T.new_zeros((S, B, H, D)) if sched.max_order > 1 else None
    b = torch.arange(B, device=x_T.device)
    ts = sched.timesteps.to(x_T.device)
    keep = return_trajectory or return_stats
    traj = x_T.new_zeros((S + 1, B, H, D)) if keep else None
    kn = None if known is None else Known(sched, x_T, known)
    x, x0, steps = (x_T if kn is None else torch.where(kn.mask, kn.targets[0], x_T)), None, 0
    with torch.no_grad():
        for k in range(S):
            if k >= 1 and ((max_iters is not None and k >= max_iters) or (deadline is not None and clock() >= deadline)):
                break
            if traj is not None:
                traj[k] = x
            kk = torch.full((B,), k, dtype=torch.long, device=x_T.device)
            out = call_denoiser(denoiser, x, ts[kk], cond)
            x0 = predict_x0(sched, kk, x, out)
            if hist is not None:
                hist[k] = x0
            x = step_rows(sched, kk, x, out, hist, b, z, x0=x0, known=kn)
            steps = k + 1
        capped = steps < S
        if traj is not None:
            traj[steps] = x
        if capped:  # the anytime result: the frozen-x0 rollout from the last computed point
            if traj is None:
                traj = x_T.new_zeros((S + 1, B, H, D))
                traj[steps] = x
            Rollout(sched, x_T.device, x_T.dtype)(traj, b, torch.full((B,), steps, device=x_T.device), x0, z,
                                                  known=kn)
            x = traj[S].clone()
    if return_stats:
        stats = PicardStats(iterations=steps, nfe=float(steps), nfe_per_sample=[steps] * B, capped=capped,
                            converged_steps=[steps] * B, converged=[not capped] * B, trajectory=traj, window=1,
                            num_steps=S, guess="sequential")
        return x, stats
    return (x, traj) if return_trajectory else x

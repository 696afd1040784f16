"""Picard (ParaDiGMS) sliding-window sampling: ParaDDPM, ParaDDIM, ParaDPMSolver.

Shih et al., "Parallel Sampling of Diffusion Models", NeurIPS 2023, Alg. 1, with per-sample windows.

The noise z_k of every step is fixed in advance, so the reverse process is a deterministic recursion

    x_{k+1} = x_k + f_k(x_k),   f_k(x) = mean_k(x) + std_k z_k - x                          (drift, eq. 4)

(f_k also reads m_{k-1}, m_{k-2} for multistep DPM-Solver++). Picard iteration over a window of p steps
[s, s+p) evaluates the p drifts of the current iterate in ONE batched denoiser call and updates the window by
a cumulative sum anchored at the accepted point x_s (eq. 5):

    x_{j+1}^new = x_s + sum_{i=s..j} f_i(x_i^old)
                = G_j(x_j^old) + (x_j^new - x_j^old),    G_j(x) = x + f_j(x)  (the sequential step)

(the second form is what is computed; at j = s it is exactly the sequential step, which makes window=1 equal
sequential sampling bit for bit).

Tolerance rule (ParaDiGMS eq. 6 / diffusers' StableDiffusionParadigmsPipeline): for each sample, the error of
point x_j (s < j <= s+p) is

    e_j = ||x_j^new - x_j^old||^2 / (H * D * v_j),

v_j = DDPM posterior variance of step j (`Schedule.tol_var`, clamped >= 1e-20, v_S = inf). With i the first
window offset where e_{s+1+i} > tol^2 (i = p if none), the window start moves to s + min(i+1, n), n = the
number of steps evaluated this round (p, or fewer at the end / in the 1-step first round of the rollout).
Guarantee: every accepted x_{j+1} was computed with drifts evaluated at points x_i^old (s < i <= j) whose
RMS distance to the accepted x_i^new is <= tol * sqrt(v_i), i.e. each step's input is perturbed by at most
tol times the noise std that step injects (the sequential sampler's own noise scale); with tol = 0 only
unchanged points are accepted and the result equals sequential sampling (up to float rounding of the
cumulative sum). The window advances by >= 1 per round, so at most S rounds are ever needed.
"""

from __future__ import annotations

import time

import torch

from parapolicy.sampling.common import (
    Denoiser,
    call_denoiser,
    check_inputs,
    check_tol,
    check_window,
    resolve_noise,
)
from parapolicy.sampling.sequential import step_rows
from parapolicy.sampling.stats import PicardStats
from parapolicy.schedule import frozen_x0_coeffs, make_schedule, predict_x0

ACCELS = ("none", "anderson", "taa")


def sample_picard(denoiser: Denoiser, scheduler, x_T: torch.Tensor, noise: torch.Tensor | None = None,
                  cond: torch.Tensor | None = None, num_inference_steps: int | None = None,
                  window: int | str = 16, tol: float = 0.1, max_iters: int | None = None,
                  init: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  deadline: float | None = None, accel: str | None = None, cost_model=None,
                  accel_memory: int = 3, rollout: bool = True) -> tuple[torch.Tensor, PicardStats]:
    """Parallel-in-time sampling by Picard iteration over a sliding window of `window` steps.

    x_T: (B, H, D); noise: (S, B, H, D) or None (drawn from `generator`, same draw as `sample_sequential`);
    cond: (B, C) or None; window: steps per sample per round (int >= 1) or "auto" (cost model, see
    `parapolicy.sampling.cost`; `cost_model` may be a {batch: seconds} dict or a `CostModel`);
    tol: ParaDiGMS tolerance (module docstring), 0 = exact; max_iters: cap on rounds;
    init: (S+1, B, H, D) initial trajectory guess (warm start; init[0] is replaced by x_T; never modified);
    deadline: a `time.monotonic()` value checked before each round (anytime stop, like max_iters);
    accel: None/"none" plain Picard, "anderson" or "taa" (triangular Anderson, see `accel.py`).
    rollout: (only without `init`) start with a 1-step round and, after every round, re-initialise the
    points past each window's end by rolling the steps out with the data prediction frozen at the last
    evaluated point (`frozen_x0_coeffs`; no denoiser calls). Only the starting guess of points that were
    never evaluated changes, so exactness and the tolerance guarantee are untouched; it saves rounds.

    Returns (x_0 (B, H, D), PicardStats). x_0 = trajectory[S]. After a cap (max_iters / deadline) the
    result is still defined: points up to `stats.converged_steps[b]` are accepted (exact for tol = 0), the
    rest -- including x_0 of an unconverged sample -- are the current Picard iterate (the last computed
    cumulative-drift update, i.e. x_S = x_s + sum of drifts of the latest iterate over the last window).
    Each sample has its own window: a converged sample stops costing evaluations."""
    sched = make_schedule(scheduler, num_inference_steps)
    S = sched.num_steps
    B, H, D = check_inputs(x_T, cond, noise, S, init)
    check_tol(tol, max_iters)
    p = check_window(window, S)
    acc_name = "none" if accel is None else accel
    if acc_name not in ACCELS:
        raise ValueError(f"accel must be one of {ACCELS} or None, got {accel!r}")
    predicted = None
    if p == "auto":
        from parapolicy.sampling.cost import choose_window

        p, predicted = choose_window(denoiser, x_T, cond, S, cost_model=cost_model)
    z = resolve_noise(noise, sched.std, x_T, generator)
    dev = x_T.device

    traj = (init.to(device=dev, dtype=x_T.dtype).clone() if init is not None
            else x_T.unsqueeze(0).repeat(S + 1, 1, 1, 1))
    traj[0] = x_T
    hist = x_T.new_zeros((S, B, H, D)) if sched.max_order > 1 else None
    # weight of each point's squared error: 1 / (H*D*v_j); v_S = inf -> 0 (x_S feeds no step)
    inv_var = (1.0 / (sched.tol_var.double() * (H * D))).to(dev)
    tol2 = float(tol) ** 2
    ts = sched.timesteps.to(dev)
    accelerator = None
    if acc_name != "none":
        from parapolicy.sampling.accel import AndersonMixer

        accelerator = AndersonMixer(S, B, (H, D), memory=accel_memory, triangular=acc_name == "taa",
                                    device=dev, dtype=x_T.dtype)

    do_roll = bool(rollout) and init is None
    if do_roll:
        roll_a, roll_b = (v.to(device=dev, dtype=x_T.dtype) for v in frozen_x0_coeffs(sched))
        roll_w = transfer_matrix(roll_a)
        roll_s = sched.std.to(device=dev, dtype=x_T.dtype)
    begin = [0] * B
    nfe = [0] * B
    rounds, capped = 0, False
    windows, residuals = [], []
    ar = torch.arange(p, device=dev)
    with torch.no_grad():
        while True:
            active = [b for b in range(B) if begin[b] < S]
            if not active:
                break
            if (max_iters is not None and rounds >= max_iters) or (
                    deadline is not None and time.monotonic() >= deadline):
                capped = True
                break
            bs = torch.tensor(active, device=dev)
            s = torch.tensor([begin[b] for b in active], device=dev)
            pos = s[None, :] + ar[:, None]                              # (p, A) step index of each slot
            valid = pos < S
            if do_roll and rounds == 0:
                valid = valid & (ar[:, None] < 1)                       # first round: x_T alone
            vi, vj = valid.nonzero(as_tuple=True)
            k_rows, b_rows = pos[vi, vj], bs[vj]
            x_rows = traj[k_rows, b_rows]                                # (N, H, D) current iterate x_k
            out = call_denoiser(denoiser, x_rows, ts[k_rows], None if cond is None else cond[b_rows])
            x0_rows = predict_x0(sched, k_rows, x_rows, out) if (hist is not None or do_roll) else None
            if hist is not None:
                hist[k_rows, b_rows] = x0_rows
            g_rows = step_rows(sched, k_rows, x_rows, out, hist, b_rows, z)  # G_k(x_k^old)
            rounds += 1
            for j, b in enumerate(active):
                nfe[b] += int(valid[:, j].sum())

            A = len(active)
            G = x_T.new_zeros((p, A, H, D))
            G[vi, vj] = g_rows
            nxt = (pos + 1).clamp(max=S)
            old = traj[nxt, bs[None, :]]                                 # (p, A, H, D) x_{k+1}^old
            new = torch.empty_like(G)
            delta = torch.zeros_like(G[0])
            for i in range(p):                                           # cumulative drift (eq. 5)
                new[i] = G[i] + delta
                delta = new[i] - old[i]
            sq = (new - old).reshape(p, A, -1).double().pow(2).sum(-1)
            err = sq * inv_var[nxt]                                      # (p, A) error ratios
            bad = (err > tol2) | ~valid
            first_bad = torch.where(bad.any(0), bad.int().argmax(0), torch.full_like(s, p))
            adv = torch.minimum(first_bad + 1, valid.sum(0))             # (A,) accepted steps this round
            # (ParaDiGMS: min(first bad + 1, p); never past the last point computed this round)
            write = new
            if accelerator is not None:
                write = accelerator.mix(nxt, valid, bs, old, new, adv)
            keep = valid & (ar[:, None] < adv[None, :])                  # accepted prefix gets plain Picard
            write = torch.where(keep[..., None, None], new, write)
            wi, wj = valid.nonzero(as_tuple=True)
            traj[nxt[wi, wj], bs[wj]] = write[wi, wj]
            if do_roll:
                n_valid = valid.sum(0)                                   # (A,)
                last = vi == (n_valid[vj] - 1)                           # each sample's last evaluated row
                x0_hat = x_T.new_zeros((A, H, D))
                x0_hat[vj[last]] = x0_rows[last]
                _roll_tail(traj, bs, s + n_valid, x0_hat, roll_w, roll_b, roll_s, z)
            wl, rl = [], []
            for j, b in enumerate(active):
                n_valid = int(valid[:, j].sum())
                wl.append((b, begin[b], begin[b] + n_valid))
                rl.append(err[:n_valid, j].sqrt().float().cpu())
                begin[b] = min(S, begin[b] + int(adv[j]))
            windows.append(wl)
            residuals.append(rl)

    stats = PicardStats(iterations=rounds, nfe=sum(nfe) / B, nfe_per_sample=nfe, capped=capped,
                        converged_steps=list(begin), converged=[bg >= S for bg in begin], windows=windows,
                        residuals=residuals, trajectory=traj, window=int(p), num_steps=S, accel=acc_name,
                        predicted_latency_s=predicted)
    return traj[S].clone(), stats


def transfer_matrix(a: torch.Tensor) -> torch.Tensor:
    """(S,) step gains -> (S+1, S+1) W with W[m, k] = a_k a_{k+1} .. a_{m-1} for m >= k (W[k, k] = 1), 0 above:
    the affine recursion x_{k+1} = a_k x_k + c_k unrolls to x_m = W[m, e] x_e + sum_{e<=k<m} W[m, k+1] c_k."""
    S = a.shape[0]
    W = torch.zeros(S + 1, S + 1, dtype=torch.float64, device=a.device)
    for k in range(S + 1):
        W[k, k] = 1.0
        if k < S:
            W[k + 1:, k] = torch.cumprod(a[k:].double(), 0)
    return W.to(a.dtype)


def _roll_tail(traj, bs, end, x0_hat, W, b, std, z):
    """In place: for each sample j, x_{k+1} = a_k x_k + b_k x0_hat_j + std_k z_k for k >= end_j (the points
    past its window, never evaluated), all k at once through the transfer matrix W of a (`transfer_matrix`).
    traj: (S+1, B, H, D); bs, end: (A,); x0_hat: (A, H, D)."""
    S, _, H, D = traj.shape
    S -= 1
    for j, e in enumerate(end.tolist()):
        if e >= S:
            continue
        bj = int(bs[j])
        c = b[e:S, None] * x0_hat[j].reshape(1, -1)                      # (S-e, H*D) forcing c_k
        if z is not None:
            c = c + std[e:S, None] * z[e:S, bj].reshape(S - e, -1)
        tail = W[e + 1:, e, None] * traj[e, bj].reshape(1, -1) + W[e + 1:, e + 1:] @ c
        traj[e + 1:, bj] = tail.reshape(S - e, H, D)

"""The frozen-x0 rollout: the reverse steps with the data prediction held fixed, in closed form.

With x0_hat frozen, step k is affine (`schedule.frozen_x0_coeffs`):

    x_{k+1} = a_k x_k + b_k x0_hat + std_k z_k

so a whole tail of steps unrolls through the transfer matrix of a, with no denoiser call. Picard uses it to
guess the points it has not accepted; every sampler uses it for its anytime result after a cap.
"""

from __future__ import annotations

import torch

from parapolicy.schedule import Schedule, frozen_x0_coeffs

_ROLL_CACHE: dict = {}



class Rollout:
    """The frozen-x0 rollout (4) of the module docstring for one schedule, on one device: its transfer
    matrix is built once per (schedule, device, dtype) and cached."""

    def __init__(self, sched: Schedule, device, dtype):
        key = (sched, str(device), dtype)
        hit = _ROLL_CACHE.get(key)
        if hit is None:
            a, b = frozen_x0_coeffs(sched)
            hit = (transfer_matrix(a).to(device=device, dtype=dtype), b.to(device=device, dtype=dtype),
                   sched.std.to(device=device, dtype=dtype), a.to(device=device, dtype=dtype))
            if len(_ROLL_CACHE) > 16:
                _ROLL_CACHE.clear()
            _ROLL_CACHE[key] = hit
        self.W, self.b, self.std, self.gain = hit                 # gain: the a_k of the step (S,)

    def __call__(self, traj: torch.Tensor, bs: torch.Tensor, start: torch.Tensor, x0_hat: torch.Tensor,
                 z: torch.Tensor | None, known=None) -> None:
        """In place, for every listed sample j at once: x_{k+1} = a_k x_k + b_k x0_hat_j + std_k z_k for
        k >= start_j; points up to start_j are kept. traj: (S+1, B, H, D); bs, start: (A,) long;
        x0_hat: (A, H, D); z: (S, B, H, D) or None; known: an `inpaint.Known` whose projection the rolled-out
        points satisfy (the rollout is elementwise, so projecting afterwards = projecting every step)."""
        if bs.numel() == 0:
            return
        S1, _, H, D = traj.shape
        A, S = bs.shape[0], S1 - 1
        X = traj[:, bs].reshape(S1, A, H * D)
        c = self.b[:, None, None] * x0_hat.reshape(1, A, H * D)                # (S, A, HD) forcing c_k
        if z is not None:
            c = c + self.std[:, None, None] * z[:, bs].reshape(S, A, H * D)
        k = torch.arange(S, device=traj.device)
        c = c * (k[:, None] >= start[None, :])[..., None]
        x_e = X[start, torch.arange(A, device=traj.device)]                    # (A, HD)
        # x_m = W[m, e] x_e + sum_{e <= k < m} W[m, k+1] c_k  (W lower triangular, so m <= e keeps x_e / 0)
        tail = self.W[:, start, None] * x_e[None] + (self.W[:, 1:] @ c.reshape(S, -1)).reshape(S1, A, H * D)
        m = torch.arange(S1, device=traj.device)
        X = torch.where((m[:, None] > start[None, :])[..., None], tail, X).reshape(S1, A, H, D)
        if known is not None:
            X = torch.where(known.mask[bs][None], known.targets[:, bs], X)
        traj[:, bs] = X


def transfer_matrix(a: torch.Tensor) -> torch.Tensor:
    """(S,) step gains -> (S+1, S+1) W with W[m, k] = a_k a_{k+1} .. a_{m-1} for m >= k (W[k, k] = 1), 0 above:
    the affine recursion x_{k+1} = a_k x_k + c_k unrolls to x_m = W[m, e] x_e + sum_{e<=k<m} W[m, k+1] c_k."""
    S = a.shape[0]
    W = torch.zeros(S + 1, S + 1, dtype=torch.float64)
    a64 = a.detach().double().cpu()
    for k in range(S + 1):
        W[k, k] = 1.0
        if k < S:
            W[k + 1:, k] = torch.cumprod(a64[k:], 0)
    return W.to(device=a.device, dtype=a.dtype)

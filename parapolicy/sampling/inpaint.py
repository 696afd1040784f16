"""Inpainting a known part of the sample: the `known=` hook of every sampler (real-time chunking's prefix).

Given a mask M (B, H, D) and a value a (B, H, D) in normalised units, every trajectory point x_k is projected

    P_k(x) = M * c_k + (1 - M) * x,      c_k = signal_k * a + sqrt(1 - signal_k^2) * x_T            (5)

(`Schedule.signal`; signal_S = 1, so x_S = a on the mask exactly). The sampled recursion becomes

    x_0 = P_0(x_T),      x_{k+1} = P_{k+1}(G_k(x_k))                                                 (6)

RePaint-style replacement (Lugmayr et al. 2022): the denoiser sees the known part at the noise level of each
step, and the unknown part is denoised conditioned on it. The known part's noise is x_T itself, along the
deterministic forward path c_k, instead of fresh forward noise at each step, because

* (6) stays a fixed recursion given (x_T, step noise): sequential and Picard solve the same one, so at
  tol = 0 Picard returns the same chunk as sequential inpainting (to float rounding of the batched
  denoiser), and at tol > 0 the Picard guarantee holds for (6) as for (1);
* it needs no extra noise tensor and works unchanged for DDIM / DPM-Solver, which draw no step noise;
* each c_k has the forward marginal q(x_k | a) of the known part (only the correlation across k differs).

Under Picard the projection is inside every G_k (`step_rows`), applied to x_0 and to the rollout guesses, so
every point of the trajectory satisfies the mask; the cumulative drift (2) then moves no masked entry and the
errors (3) see only the unknown part. Cost: one elementwise `where` per step, no extra denoiser call (NFE
unchanged). The frozen-x0 rollout is elementwise in x, so projecting after the closed form equals projecting
at every step of it.
"""

from __future__ import annotations

import torch

from parapolicy.schedule import Schedule


class Known:
    """The projection (5) for one schedule and one x_T: `targets` (S+1, B, H, D) holds c_k, `mask` (B, H, D)."""

    def __init__(self, sched: Schedule, x_T: torch.Tensor, known: tuple[torch.Tensor, torch.Tensor]):
        mask, value = check_known(known, tuple(x_T.shape))
        self.mask = mask.to(device=x_T.device)
        a = torch.where(self.mask, value.to(device=x_T.device, dtype=x_T.dtype), torch.zeros_like(x_T))
        sig = sched.signal.to(device=x_T.device, dtype=torch.float64)
        noise_scale = (1.0 - sig ** 2).clamp(min=0.0).sqrt()
        s = sig.to(x_T.dtype)[:, None, None, None]
        n = noise_scale.to(x_T.dtype)[:, None, None, None]
        self.targets = s * a[None] + n * x_T[None]
        self.targets[-1] = a  # signal_S = 1: the known part of x_S is a exactly

    def rows(self, x: torch.Tensor, k: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """x (N, H, D) trajectory points with indices k (N,) of samples b (N,) -> P_k(x)."""
        return torch.where(self.mask[b], self.targets[k, b], x)

    def traj(self, traj: torch.Tensor) -> torch.Tensor:
        """(S+1, B, H, D) -> every point projected (new tensor)."""
        return torch.where(self.mask[None], self.targets, traj)


def check_known(known, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate `known` = (mask (B, H, D) bool, value (B, H, D) finite); ValueError naming the problem."""
    if not isinstance(known, (tuple, list)) or len(known) != 2:
        raise ValueError("known must be a pair (mask (B, H, D) bool, value (B, H, D)) in normalised units")
    mask, value = known
    for name, t in (("mask", mask), ("value", value)):
        if not torch.is_tensor(t) or tuple(t.shape) != shape:
            got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"known {name} must have the sample's shape {shape}, got {got}")
    if mask.dtype != torch.bool:
        raise ValueError(f"known mask must be a bool tensor, got {mask.dtype}")
    if not torch.isfinite(value[mask]).all():
        raise ValueError("known value contains NaN or inf on the mask")
    return mask, value

"""Anderson acceleration of the Picard iteration, plain and triangular (ParaTAA-style).

The window update is a fixed-point map x -> F(x) (the cumulative-drift update of `picard.py`) with residual
R(x) = F(x) - x. Anderson mixing with memory m (Anderson 1965; Walker & Ni 2011, "type II") keeps the last m
pairs (X_h, F_h) and proposes

    x+ = F(x) - sum_h gamma_h (F(x) - F_h),   gamma = argmin_g || R(x) - sum_h g_h (R(x) - R_h) ||^2.

The diffusion system is triangular (x_{j+1} depends only on x_{<=j}). "taa" exploits that as in ParaTAA
(Tang et al., ICML 2024, triangular Anderson acceleration): the coefficients used for point j are fitted
only on the residuals of the points up to j in the window (a prefix least-squares problem per point, done
with cumulative Gram matrices), so the correction of an early point never depends on the residual of a
later point, which it influences. "anderson" fits one gamma per sample on the whole window.

Histories are stored per absolute trajectory point, so they survive the window sliding forward; a point
that was not in the window in an earlier round contributes no difference for that round. The accepted
prefix of every round is written with the plain Picard value (see `picard.py`), so acceleration changes only
the iterate beyond the accepted prefix and never the tolerance guarantee.
"""

from __future__ import annotations

import torch


class AndersonMixer:
    """Per-point Anderson history for a (S+1, B, H, D) trajectory. Internal to `sample_picard`."""

    def __init__(self, S: int, B: int, shape: tuple[int, int], memory: int = 3, triangular: bool = True,
                 device=None, dtype=torch.float32, reg: float = 1e-8):
        if memory < 1:
            raise ValueError(f"accel_memory must be >= 1, got {memory}")
        self.m, self.tri, self.reg = memory, triangular, reg
        self.X = torch.zeros((memory, S + 1, B, *shape), device=device, dtype=dtype)
        self.F = torch.zeros_like(self.X)
        self.M = torch.zeros((memory, S + 1, B), device=device, dtype=torch.bool)
        self.n = 0

    def mix(self, nxt: torch.Tensor, valid: torch.Tensor, bs: torch.Tensor, old: torch.Tensor,
            new: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """nxt: (p, A) trajectory index of each window slot's updated point; valid: (p, A); bs: (A,) sample
        ids; old: (p, A, H, D) iterate x at those points; new: (p, A, H, D) F(x). Returns (p, A, H, D)."""
        p, A = nxt.shape
        R = (new - old).double()
        use = min(self.n, self.m)
        out = new
        if use > 0:
            idx = [(self.n - 1 - h) % self.m for h in range(use)]
            Xh = self.X[idx][:, nxt, bs[None, :]].double()             # (m, p, A, H, D)
            Fh = self.F[idx][:, nxt, bs[None, :]].double()
            Mh = self.M[idx][:, nxt, bs[None, :]] & valid[None]        # (m, p, A)
            w = Mh[..., None, None].double()
            dF = (new.double()[None] - Fh) * w
            dR = dF - (old.double()[None] - Xh) * w
            flat_dR = dR.flatten(3)                                    # (m, p, A, HD)
            flat_R = (R * valid[..., None, None]).flatten(2)           # (p, A, HD)
            gram = torch.einsum("ipak,jpak->paij", flat_dR, flat_dR)   # (p, A, m, m)
            rhs = torch.einsum("ipak,pak->pai", flat_dR, flat_R)       # (p, A, m)
            if self.tri:
                gram, rhs = gram.cumsum(0), rhs.cumsum(0)              # prefix least squares per point
            else:
                gram = gram.sum(0, keepdim=True).expand_as(gram)
                rhs = rhs.sum(0, keepdim=True).expand_as(rhs)
            eye = torch.eye(use, dtype=gram.dtype, device=gram.device)
            scale = gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp(min=1e-300)[..., None, None]
            gamma = torch.linalg.solve(gram + (self.reg * scale + 1e-30) * eye, rhs[..., None])[..., 0]
            gamma = torch.nan_to_num(gamma, nan=0.0, posinf=0.0, neginf=0.0)  # (p, A, m)
            corr = torch.einsum("pai,ipakl->pakl", gamma, dF)
            out = (new.double() - corr).to(new.dtype)
            out = torch.where(torch.isfinite(out), out, new)
        slot = self.n % self.m
        self.M[slot] = False
        vi, vj = valid.nonzero(as_tuple=True)
        self.X[slot, nxt[vi, vj], bs[vj]] = old[vi, vj]
        self.F[slot, nxt[vi, vj], bs[vj]] = new[vi, vj]
        self.M[slot, nxt[vi, vj], bs[vj]] = True
        self.n += 1
        return out

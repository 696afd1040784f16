"""The denoiser contract and input checks shared by every sampler.

Denoiser contract: `denoiser(x, t, cond) -> out` with x (N, H, D) float, t (N,) long model timesteps (one per
row; rows may be at different steps), cond (N, C) or None; out (N, H, D) in the scheduler's prediction_type
(epsilon / sample / v_prediction). Diffusion Policy's UNet: `lambda x, t, c: unet(x, t, global_cond=c)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _finite(name: str, v: torch.Tensor) -> None:
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} contains NaN or inf")


def check_inputs(x_T: torch.Tensor, cond: torch.Tensor | None, noise: torch.Tensor | None, num_steps: int,
                 init: torch.Tensor | None = None) -> tuple[int, int, int]:
    """Validate shapes and values; returns (B, H, D). Raises ValueError naming the offending argument."""
    if not torch.is_tensor(x_T) or x_T.ndim != 3 or not x_T.is_floating_point():
        raise ValueError(f"x_T must be a float tensor (B, H, D), got "
                         f"{tuple(x_T.shape) if torch.is_tensor(x_T) else type(x_T).__name__}")
    B, H, D = x_T.shape
    _finite("x_T", x_T)
    if cond is not None:
        if not torch.is_tensor(cond) or cond.ndim != 2 or cond.shape[0] != B:
            raise ValueError(f"cond must be (B, C) = ({B}, C), got "
                             f"{tuple(cond.shape) if torch.is_tensor(cond) else type(cond).__name__}")
        _finite("cond", cond)
    if noise is not None:
        if not torch.is_tensor(noise) or tuple(noise.shape) != (num_steps, B, H, D):
            raise ValueError(f"noise must be (S, B, H, D) = {(num_steps, B, H, D)}, got "
                             f"{tuple(noise.shape) if torch.is_tensor(noise) else type(noise).__name__}")
        _finite("noise", noise)
    if init is not None:
        if not torch.is_tensor(init) or tuple(init.shape) != (num_steps + 1, B, H, D):
            raise ValueError(f"init must be (S+1, B, H, D) = {(num_steps + 1, B, H, D)}, got "
                             f"{tuple(init.shape) if torch.is_tensor(init) else type(init).__name__}")
        _finite("init", init)
    return B, H, D


def resolve_noise(noise: torch.Tensor | None, std: torch.Tensor, x_T: torch.Tensor,
                  generator: torch.Generator | None) -> torch.Tensor | None:
    """The per-step noise (S, B, H, D) on x_T's device, or None when no step adds noise (DDIM, DPM-Solver++).

    When `noise` is None it is drawn once, up front, from `generator` (standard normal, on the generator's
    device), so that the same generator state gives the same sample from every sampler."""
    if not bool((std > 0).any()):
        return None
    if noise is not None:
        return noise.to(device=x_T.device, dtype=x_T.dtype)
    S = std.shape[0]
    gdev = generator.device if generator is not None else x_T.device
    z = torch.randn((S, *x_T.shape), generator=generator, device=gdev, dtype=x_T.dtype)
    return z.to(x_T.device)


def call_denoiser(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor,
                  cond: torch.Tensor | None) -> torch.Tensor:
    out = denoiser(x, t, cond)
    if not torch.is_tensor(out) or out.shape != x.shape:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"denoiser returned {got}, "
                         f"expected {tuple(x.shape)} (same shape as its input x)")
    return out


def check_window(window, num_steps: int) -> int | str:
    if isinstance(window, str):
        if window != "auto":
            raise ValueError(f"window must be an int >= 1 or 'auto', got {window!r}")
        return window
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1 or 'auto', got {window!r}")
    return min(window, num_steps)


def check_tol(tol, max_iters, name: str = "tol") -> None:
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {tol!r}")
    if max_iters is not None and (isinstance(max_iters, bool) or not isinstance(max_iters, int)
                                  or max_iters < 1):
        raise ValueError(f"max_iters must be None or an int >= 1, got {max_iters!r}")

"""Warm start with relayed noise: the next chunk's noise is the previous one moved by the executed actions
(fresh where new actions are predicted), and the guess is the previous trajectory moved the same way."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from parapolicy.sampling import sample_picard, sample_sequential
from parapolicy.sampling.warm import relay_init, relay_noise
from tests.sampling_helpers import GaussianDenoiser

S, B, H, D = 30, 2, 8, 2


def sched():
    return DDPMScheduler(num_train_timesteps=S, beta_schedule="squaredcos_cap_v2", clip_sample=True)


def test_relay_noise_moves_the_overlap_and_draws_fresh_for_new_positions():
    g = torch.Generator().manual_seed(0)
    xp, zp, xf, zf = (torch.randn(*s, generator=g) for s in [(B, H, D), (S, B, H, D), (B, H, D), (S, B, H, D)])
    x, z = relay_noise(xp, zp, xf, zf, 3)
    assert torch.equal(x[:, :H - 3], xp[:, 3:]) and torch.equal(x[:, H - 3:], xf[:, H - 3:])
    assert torch.equal(z[:, :, :H - 3], zp[:, :, 3:]) and torch.equal(z[:, :, H - 3:], zf[:, :, H - 3:])
    x0, _ = relay_noise(xp, zp, xf, zf, 0)
    assert torch.equal(x0, xp)                                   # nothing executed: the same noise
    xa, _ = relay_noise(xp, zp, xf, zf, 99)
    assert torch.equal(xa, xf)                                   # everything executed: all fresh
    with pytest.raises(ValueError, match="n must be"):
        relay_noise(xp, zp, xf, zf, -1)


def test_relay_init_is_a_guess_only_and_a_good_one():
    """Shift-invariant data (a Gaussian denoiser with a constant mean): after relaying, the moved trajectory is
    (almost) the new sample, so Picard from relay_init converges in fewer rounds than cold, to the same sample."""
    s = sched()
    den = GaussianDenoiser(s.alphas_cumprod, "epsilon", H, D)
    den.base.zero_()                                             # mean 0 everywhere: shifting is exact
    g = torch.Generator().manual_seed(1)
    x_T, z = torch.randn(B, H, D, generator=g), torch.randn(S, B, H, D, generator=g)
    _, traj = sample_sequential(den, s, x_T, noise=z, return_trajectory=True)
    x2, z2 = relay_noise(x_T, z, torch.randn(B, H, D, generator=g), torch.randn(S, B, H, D, generator=g), 2)
    init = relay_init(traj, 2, x2, z2, s)
    assert init.shape == traj.shape and torch.equal(init[0], x2)
    ref = sample_sequential(den, s, x2, noise=z2)
    cold, cst = sample_picard(den, s, x2, noise=z2, window=S, tol=0)
    warm, wst = sample_picard(den, s, x2, noise=z2, window=S, tol=0, init=init)
    assert (warm - ref).abs().max() <= 1e-5 and (cold - ref).abs().max() <= 1e-5
    assert wst.iterations < cst.iterations

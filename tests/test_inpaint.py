"""Inpainting a known prefix (real-time chunking): the `known=` hook of the samplers and
`predict_action(prefix_actions=...)`, for DDPM / DDIM, sequential and Picard, and the anytime path."""

from __future__ import annotations

import pytest
import torch

from parapolicy.policy import SamplerConfig, load_policy
from parapolicy.sampling import sample_picard, sample_sequential
from tests.sampling_helpers import diffusers_loop, tiny_unet

B, H, D = 3, 8, 2


def obs_batch(p, b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.rand(b, p.n_obs_steps, 20, generator=g) * 500}


def noise_for(p, name, b=B, seed=1):
    cfg = SamplerConfig(name=name)
    S = len(p.scheduler(cfg.family).timesteps)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, p.horizon, p.input_dim, generator=g), torch.randn(S, b, p.horizon, p.input_dim, generator=g)


def prefix(p, d, b=B, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, d, p.action_dim, generator=g) * 512


@pytest.mark.parametrize("name", ["ddpm", "paraddpm", "ddim", "paraddim"])
@pytest.mark.parametrize("cap", [None, 1])
def test_prefix_is_returned_exactly(tiny_policy_dir, name, cap):
    p = load_policy(tiny_policy_dir, fast="eager")
    A = prefix(p, 3)
    x_T, z = noise_for(p, name)
    out = p.predict_action(obs_batch(p), SamplerConfig(name=name, max_iters=cap), init_noise=x_T, step_noise=z,
                           prefix_actions=A)
    assert torch.equal(out["action"][:, :3], A)
    assert torch.equal(out["action_pred"][:, p.action_start:p.action_start + 3], A)
    assert torch.isfinite(out["action"]).all()
    if cap is None:  # the rest is conditioned on A
        plain = p.predict_action(obs_batch(p), name, init_noise=x_T, step_noise=z)
        rest = slice(p.action_start + 3, None)
        assert not torch.allclose(out["action_pred"][:, rest], plain["action_pred"][:, rest])


@pytest.mark.parametrize("name", ["ddpm", "paraddpm", "ddim", "paraddim"])
def test_empty_prefix_is_plain_sampling(tiny_policy_dir, name):
    p = load_policy(tiny_policy_dir, fast="eager")
    x_T, z = noise_for(p, name)
    cfg = SamplerConfig(name=name)
    a = p.predict_action(obs_batch(p), cfg, init_noise=x_T, step_noise=z, prefix_actions=prefix(p, 0))
    b = p.predict_action(obs_batch(p), cfg, init_noise=x_T, step_noise=z)
    assert torch.equal(a["action_pred"], b["action_pred"])


@pytest.mark.parametrize("family", ["ddpm", "ddim"])
@pytest.mark.parametrize("window", [1, 4, 20])
def test_sequential_and_picard_inpainting_agree_at_tol_0(tiny_policy_dir, family, window):
    p = load_policy(tiny_policy_dir, fast="eager")
    x_T, z = noise_for(p, family)
    A, obs = prefix(p, 2), obs_batch(p)
    seq = p.predict_action(obs, SamplerConfig(name=family), init_noise=x_T, step_noise=z, prefix_actions=A)
    par = p.predict_action(obs, SamplerConfig(name="para" + family, window=window, tol=0.0), init_noise=x_T,
                           step_noise=z, prefix_actions=A)
    assert torch.allclose(par["action_pred"], seq["action_pred"], atol=1e-3), \
        (par["action_pred"] - seq["action_pred"]).abs().max()
    assert torch.allclose(par["trajectory"], seq["trajectory"], atol=1e-5)


@pytest.mark.parametrize("family", ["ddpm", "ddim"])
def test_sequential_inpainting_is_the_diffusers_loop_with_replacement(family):
    """Reference: diffusers' scheduler.step per timestep, then the known entries replaced by
    sqrt(ab_next) a + sqrt(1 - ab_next) x_T (1 at the end), computed here from the scheduler's alphas_cumprod."""
    from diffusers import DDIMScheduler, DDPMScheduler

    base = DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    sch = base if family == "ddpm" else DDIMScheduler.from_config(base.config)
    sch.set_timesteps(10)
    den = tiny_unet(global_cond_dim=6)
    g = torch.Generator().manual_seed(0)
    x_T, cond = torch.randn(B, H, D, generator=g), torch.randn(B, 6, generator=g)
    mask = torch.zeros(B, H, D, dtype=torch.bool)
    mask[:, 1:4] = True
    value = torch.randn(B, H, D, generator=g)
    ts = list(sch.timesteps)
    ab = sch.alphas_cumprod

    def project(x, k):  # x_k's known part: signal_k a + sqrt(1 - signal_k^2) x_T
        s2 = ab[ts[k]] if k < len(ts) else torch.tensor(1.0)
        return torch.where(mask, s2.sqrt() * value + (1 - s2).sqrt() * x_T, x)

    gen = torch.Generator().manual_seed(5)
    x = project(x_T, 0)
    with torch.no_grad():
        for k, t in enumerate(ts):
            out = den(x, t.expand(B).long(), cond)
            x = (sch.step(out, t, x, generator=gen) if family == "ddpm" else sch.step(out, t, x)).prev_sample
            x = project(x, k + 1)
    _, noise = diffusers_loop(sch, den, x_T, cond, num_inference_steps=10, seed=5)
    got = sample_sequential(den, sch, x_T, noise=noise, cond=cond, known=(mask, value))
    assert torch.allclose(got, x, atol=1e-5), (got - x).abs().max()
    assert torch.allclose(got[mask], value[mask], atol=1e-6)
    par, _ = sample_picard(den, sch, x_T, noise=noise, cond=cond, window=4, tol=0.0, known=(mask, value))
    assert torch.allclose(par, x, atol=1e-4)


def test_known_and_prefix_inputs_are_validated(tiny_policy_dir):
    p = load_policy(tiny_policy_dir, fast="eager")
    with pytest.raises(ValueError, match="prefix_actions must have shape"):
        p.predict_action(obs_batch(p), "ddpm", prefix_actions=torch.zeros(B, 2, 3))
    with pytest.raises(ValueError, match="NaN"):
        p.predict_action(obs_batch(p), "ddpm", prefix_actions=torch.full((B, 2, 2), float("nan")))
    den = tiny_unet(global_cond_dim=6)
    from diffusers import DDPMScheduler

    sch = DDPMScheduler(num_train_timesteps=20)
    sch.set_timesteps(5)
    with pytest.raises(ValueError, match="bool"):
        sample_sequential(den, sch, torch.zeros(B, H, D), cond=torch.zeros(B, 6),
                          known=(torch.zeros(B, H, D), torch.zeros(B, H, D)))

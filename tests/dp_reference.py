"""Reference action sampling, written independently of parapolicy's samplers and policy wrapper.

`dp_predict_action` follows real-stanford/diffusion_policy's `DiffusionUnetLowdimPolicy.predict_action`
(global-cond and inpainting branches) step by step, with diffusers' `DDPMScheduler` doing the reverse steps;
`lerobot_generate_actions` follows LeRobot's `DiffusionModel.generate_actions` plus its (un)normalisation.
They exist to check that a checkpoint loaded by parapolicy, sampled through `parapolicy.policy`, gives the
actions the original code would give with the same noise.

Noise: either a `generator` (drawn exactly as the original does: the initial trajectory, then one draw inside
each `scheduler.step` with t > 0), or explicit `init_noise (B, H, D)` and `step_noise (S, B, H, D)` where
`step_noise[k]` is the standard normal draw of the k-th reverse step (scaled by that step's std inside
diffusers; unused where t = 0). `draw_reference_noise` turns a generator into the explicit pair, so
`dp_predict_action(..., generator=g(seed))` equals `dp_predict_action(...)` given the pair
`draw_reference_noise(g(seed), ...)` as init_noise, step_noise.
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import torch


def make_scheduler(scheduler_kwargs: dict, num_inference_steps: int, scheduler_type: str = "DDPM"):
    """diffusers DDPMScheduler, or DDIMScheduler (eta 0, as LeRobot's noise_scheduler_type "DDIM" uses it;
    DDIM takes no `variance_type`)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if scheduler_type.upper() == "DDIM":
        scheduler = DDIMScheduler(**{k: v for k, v in scheduler_kwargs.items() if k != "variance_type"})
    else:
        scheduler = DDPMScheduler(**scheduler_kwargs)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def draw_reference_noise(
    generator: torch.Generator, shape: tuple, timesteps
) -> tuple[torch.Tensor, torch.Tensor]:
    """The draws the original loop makes from `generator`: -> init_noise (B,H,D), step_noise (S,B,H,D)."""
    init = torch.randn(shape, generator=generator)
    steps = [torch.randn(shape, generator=generator) if int(t) > 0 else torch.zeros(shape) for t in timesteps]
    return init, torch.stack(steps)


@contextmanager
def _fed_noise(step_noise: torch.Tensor | None):
    """Make diffusers' DDPMScheduler.step take step_noise[k] at its k-th noise draw instead of sampling."""
    if step_noise is None:
        yield
        return
    import diffusers.schedulers.scheduling_ddpm as ddpm

    it = iter(step_noise)
    counter = {"k": 0}

    def feed(shape, generator=None, device=None, dtype=None, layout=None):
        z = next(it)
        assert tuple(z.shape) == tuple(shape), (z.shape, shape)
        counter["k"] += 1
        return z.to(device=device, dtype=dtype)

    with mock.patch.object(ddpm, "randn_tensor", feed):
        yield


def _denoise(model, scheduler, cond_data, cond_mask, global_cond, generator, init_noise, step_noise):
    """conditional_sample of DP: impose the condition, predict, step; impose once more at the end."""
    if init_noise is not None:
        trajectory = init_noise.clone().to(cond_data)
    else:
        trajectory = torch.randn(cond_data.shape, dtype=cond_data.dtype, generator=generator)
    if step_noise is not None:
        # Only steps with t > 0 draw noise in diffusers; hand it exactly those rows, in order.
        step_noise = (
            torch.stack([step_noise[k] for k, t in enumerate(scheduler.timesteps) if int(t) > 0])
            if any(int(t) > 0 for t in scheduler.timesteps)
            else None
        )
    with _fed_noise(step_noise):
        for t in scheduler.timesteps:
            trajectory[cond_mask] = cond_data[cond_mask]
            model_output = model(trajectory, t, local_cond=None, global_cond=global_cond)
            trajectory = scheduler.step(model_output, t, trajectory, generator=generator).prev_sample
    trajectory[cond_mask] = cond_data[cond_mask]
    return trajectory


@torch.no_grad()
def dp_predict_action(
    model,
    obs: torch.Tensor,
    *,
    obs_scale,
    obs_offset,
    action_scale,
    action_offset,
    horizon: int,
    n_obs_steps: int,
    n_action_steps: int,
    action_dim: int,
    obs_as_global_cond: bool,
    oa_step_convention: bool,
    scheduler_kwargs: dict,
    num_inference_steps: int,
    generator: torch.Generator | None = None,
    init_noise: torch.Tensor | None = None,
    step_noise: torch.Tensor | None = None,
) -> dict:
    """DiffusionUnetLowdimPolicy.predict_action. obs: (B, >=n_obs_steps, Do) in env units ->
    {"action": (B, n_action_steps, Da), "action_pred": (B, horizon, Da)}. Normaliser: x * scale + offset."""
    nobs = obs * obs_scale + obs_offset
    B, _, Do = nobs.shape
    To, T, Da = n_obs_steps, horizon, action_dim
    global_cond = None
    if obs_as_global_cond:
        global_cond = nobs[:, :To].reshape(B, -1)
        cond_data = torch.zeros(B, T, Da, dtype=obs.dtype)
        cond_mask = torch.zeros_like(cond_data, dtype=torch.bool)
    else:
        cond_data = torch.zeros(B, T, Da + Do, dtype=obs.dtype)
        cond_mask = torch.zeros_like(cond_data, dtype=torch.bool)
        cond_data[:, :To, Da:] = nobs[:, :To]
        cond_mask[:, :To, Da:] = True
    scheduler = make_scheduler(scheduler_kwargs, num_inference_steps)
    nsample = _denoise(model, scheduler, cond_data, cond_mask, global_cond, generator, init_noise, step_noise)
    action_pred = (nsample[..., :Da] - action_offset) / action_scale
    start = To - 1 if oa_step_convention else To
    return {"action": action_pred[:, start : start + n_action_steps], "action_pred": action_pred}


def lerobot_normalize(x, stats: dict, mode: str, eps: float = 1e-8, legacy: bool = True):
    """LeRobot's Normalize: legacy (buffers in model.safetensors) adds eps to the range; processor (>= 0.4)
    replaces a zero range by eps. mode: "min_max" | "mean_std" | "identity" (any case)."""
    mode = mode.lower()
    if mode == "mean_std":
        return (x - stats["mean"]) / (stats["std"] + eps)
    if mode == "min_max":
        rng = stats["max"] - stats["min"]
        if legacy:
            return (x - stats["min"]) / (rng + eps) * 2 - 1
        rng = torch.where(rng == 0, torch.full_like(rng, eps), rng)
        return 2 * (x - stats["min"]) / rng - 1
    return x


def lerobot_unnormalize(x, stats: dict, mode: str, eps: float = 1e-8, legacy: bool = True):
    mode = mode.lower()
    if mode == "mean_std":
        return x * stats["std"] + stats["mean"]
    if mode == "min_max":
        rng = stats["max"] - stats["min"]
        if not legacy:
            rng = torch.where(rng == 0, torch.full_like(rng, eps), rng)
        return (x + 1) / 2 * rng + stats["min"]
    return x


@torch.no_grad()
def lerobot_generate_actions(
    model,
    batch: dict[str, torch.Tensor],
    *,
    obs_keys: list[str],
    stats: dict,
    modes: dict[str, str],
    horizon: int,
    n_obs_steps: int,
    n_action_steps: int,
    action_dim: int,
    scheduler_kwargs: dict,
    num_inference_steps: int,
    legacy: bool = True,
    scheduler_type: str = "DDPM",
    generator: torch.Generator | None = None,
    init_noise: torch.Tensor | None = None,
    step_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """LeRobot DiffusionPolicy on a state-only batch {key: (B, n_obs_steps, d)} in env units ->
    actions (B, n_action_steps, Da) in env units. `obs_keys` in LeRobot's order: state, then env state."""
    feats = [
        lerobot_normalize(batch[k], stats.get(k, {}), modes.get(k, "identity"), legacy=legacy)
        for k in obs_keys
    ]
    B = feats[0].shape[0]
    global_cond = torch.cat(feats, dim=-1).flatten(start_dim=1)
    cond_data = torch.zeros(B, horizon, action_dim)
    cond_mask = torch.zeros_like(cond_data, dtype=torch.bool)
    scheduler = make_scheduler(scheduler_kwargs, num_inference_steps, scheduler_type)
    sample = _denoise(model, scheduler, cond_data, cond_mask, global_cond, generator, init_noise, step_noise)
    start = n_obs_steps - 1
    actions = sample[:, start : start + n_action_steps]
    return lerobot_unnormalize(actions, stats["action"], modes.get("action", "identity"), legacy=legacy)

"""What every checkpoint loader returns, and the config defaults they all fill in.

A leaf module (imports torch only), so that `parapolicy.checkpoint` (the format dispatcher) and the loaders
in `parapolicy.adapters` can both import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LoadedCheckpoint:
    """What every loader returns; `parapolicy.policy.DiffusionPolicy.from_checkpoint` builds a policy from it.

    config: our config schema (see `parapolicy.checkpoint`'s module docstring), including
        obs_keys [str], obs_dims {key: int}, action_dim, horizon, n_obs_steps, n_action_steps,
        action_start (first executed index of the predicted horizon; Diffusion Policy: n_obs_steps - 1),
        obs_as_global_cond (False: the UNet's input is [action, obs] and observations are inpainted),
        model (ConditionalUnet1D kwargs), scheduler (diffusers DDPMScheduler kwargs), num_inference_steps.
    model_state: ConditionalUnet1D state_dict (our parameter names).
    normalizer_state: LinearNormalizer state_dict with one entry per obs key and "action".
    source: "parapolicy", "diffusion_policy_ckpt" or "lerobot", and `path` it came from.
    encoder_state: image policies only (config["vision"], see parapolicy.image_cond): the camera encoders'
        tensors `encoders.<i>.*` and the image normalisation `norm_scale_<i>`, `norm_offset_<i>`.
    """

    config: dict
    model_state: dict[str, torch.Tensor]
    normalizer_state: dict[str, torch.Tensor]
    source: str
    path: str = ""
    encoder_state: dict[str, torch.Tensor] | None = None


REQUIRED_KEYS = ("action_dim", "horizon", "n_obs_steps", "n_action_steps", "model", "scheduler")


def complete_config(cfg: dict) -> dict:
    """Fill defaults of the config schema (obs_keys/obs_dims from a single obs_key/obs_dim, action_start =
    n_obs_steps - 1, obs_as_global_cond True) and check the required keys, naming any that is missing."""
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"checkpoint config lacks {missing}")
    cfg = dict(cfg)
    if "obs_keys" not in cfg:
        key = cfg.get("obs_key", "obs")
        cfg["obs_keys"] = [key]
        cfg["obs_dims"] = {key: cfg["obs_dim"]}
    cfg.setdefault("action_start", cfg["n_obs_steps"] - 1)
    cfg.setdefault("obs_as_global_cond", True)
    cfg.setdefault("num_inference_steps", cfg["scheduler"].get("num_train_timesteps", 100))
    if cfg["action_start"] + cfg["n_action_steps"] > cfg["horizon"]:
        raise ValueError(f"action_start {cfg['action_start']} + n_action_steps {cfg['n_action_steps']} exceeds "
                         f"horizon {cfg['horizon']}")
    return cfg

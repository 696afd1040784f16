"""Shared fixtures: tiny models, policies and replay buffers made in the test (no network, no big files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parapolicy.model import ConditionalUnet1D
from parapolicy.normalizer import LinearNormalizer

# One intra-op thread: tiny models gain nothing from more, and on a busy 2-core machine OpenMP threads that
# wait on each other make a test run many times slower.
torch.set_num_threads(1)

TINY_UNET = dict(diffusion_step_embed_dim=16, down_dims=[8, 16], kernel_size=3, n_groups=4,
                 cond_predict_scale=True)


def tiny_policy_config(obs_dim=20, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4,
                       global_cond=True) -> dict:
    model = dict(TINY_UNET, input_dim=action_dim if global_cond else action_dim + obs_dim, local_cond_dim=None,
                 global_cond_dim=obs_dim * n_obs_steps if global_cond else None)
    return {"policy_type": "diffusion_unet_lowdim", "obs_keys": ["obs"], "obs_dims": {"obs": obs_dim},
            "action_dim": action_dim, "horizon": horizon, "n_obs_steps": n_obs_steps,
            "n_action_steps": n_action_steps, "action_start": n_obs_steps - 1, "obs_as_global_cond": global_cond,
            "model": model, "num_inference_steps": 20,
            "scheduler": {"num_train_timesteps": 20, "beta_schedule": "squaredcos_cap_v2",
                          "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon"}}


def tiny_policy_parts(seed=0, **kw):
    """(config, UNet, fitted normaliser) of a tiny random policy."""
    cfg = tiny_policy_config(**kw)
    torch.manual_seed(seed)
    model = ConditionalUnet1D(**cfg["model"]).eval()
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(64, cfg["obs_dims"]["obs"], generator=g) * 500
    act = torch.rand(64, cfg["action_dim"], generator=g) * 500
    norm = LinearNormalizer().fit({"obs": obs, "action": act})
    return cfg, model, norm


@pytest.fixture
def tiny_policy_dir(tmp_path):
    from parapolicy.checkpoint import save_policy_dir

    cfg, model, norm = tiny_policy_parts()
    return save_policy_dir(tmp_path / "tiny_policy", cfg, model.state_dict(), norm.state_dict())


def make_tiny_store(path, n_episodes=4, seed=0):
    """A Push-T-shaped replay buffer (state, keypoint, action) with short random episodes."""
    from parapolicy.data import ReplayBuffer

    rng = np.random.default_rng(seed)
    lengths = rng.integers(12, 30, size=n_episodes)
    n = int(lengths.sum())
    data = {"state": rng.uniform(0, 512, (n, 5)).astype(np.float32),
            "keypoint": rng.uniform(0, 512, (n, 9, 2)).astype(np.float32),
            "action": rng.uniform(0, 512, (n, 2)).astype(np.float32)}
    buf = ReplayBuffer(data, np.cumsum(lengths))
    buf.save(path)
    return buf

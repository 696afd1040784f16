"""Default numerics: `load_policy(path)` with default arguments gives the training-time module's actions to
float32 rounding (<= 1e-3 px) for every loader; bf16 is opt-in."""

from __future__ import annotations

import pytest
import torch

from parapolicy.policy import SamplerConfig, load_policy


def same_noise_actions(path, fast, sampler, obs, seed=0):
    p = load_policy(path, fast=fast)
    g = torch.Generator().manual_seed(seed)
    S = len(p.scheduler(sampler.family, sampler.num_inference_steps).timesteps)
    x_T = torch.randn(obs_batch_size(obs), p.horizon, p.input_dim, generator=g)
    z = torch.randn(S, *x_T.shape, generator=g)
    return p, p.predict_action(obs, sampler=sampler, init_noise=x_T, step_noise=z)["action_pred"]


def obs_batch_size(obs):
    return next(iter(obs.values())).shape[0]


def check_default_is_exact(path, obs):
    for sampler in (SamplerConfig("ddpm"), SamplerConfig("paraddpm", tol=0.0)):
        default, got = same_noise_actions(path, "auto", sampler, obs)
        eager, want = same_noise_actions(path, "eager", sampler, obs)
        assert default.inference == "fast-fp32" and eager.inference == "eager"
        err = float((got - want).abs().max())
        assert err <= 1e-3, f"{sampler.name}: default path differs from eager by {err:.2e} px"


@pytest.mark.parametrize("global_cond", [True, False])
def test_dp_ckpt_default_path_equals_eager(tmp_path, global_cond):
    from tests.test_adapters_dp import ACTION_DIM, N_OBS, OBS_DIM, build_parts, dp_cfg, save_ckpt

    path = save_ckpt(tmp_path / "dp.ckpt", dp_cfg(global_cond), build_parts(global_cond, seed=2))
    obs = {"obs": torch.randn(3, N_OBS, OBS_DIM, generator=torch.Generator().manual_seed(1)) * 50 + 100}
    check_default_is_exact(path, obs)
    assert ACTION_DIM == 2


@pytest.mark.parametrize("normalization", ["buffers", "processor"])
def test_lerobot_dir_default_path_equals_eager(tmp_path, normalization):
    from tests.test_adapters_lerobot import (
        ENV_DIM,
        N_OBS,
        STATE_DIM,
        base_config,
        make_stats,
        mirror_unet,
        write_dir,
    )

    stats = make_stats(3)
    path = write_dir(tmp_path, base_config("draccus", "MIN_MAX"), mirror_unet(3), stats, normalization)
    g = torch.Generator().manual_seed(4)
    obs = {k: stats[k]["min"] + torch.rand(3, N_OBS, d, generator=g) * (stats[k]["max"] - stats[k]["min"])
           for k, d in [("observation.state", STATE_DIM), ("observation.environment_state", ENV_DIM)]}
    check_default_is_exact(path, obs)


def test_our_format_and_shipped_policy_default_path_equals_eager(tiny_policy_dir):
    obs = {"obs": torch.rand(2, 2, 20, generator=torch.Generator().manual_seed(0)) * 500}
    check_default_is_exact(tiny_policy_dir, obs)
    shipped = load_policy("pusht_keypoints")
    assert shipped.inference == "fast-fp32"          # no recorded bf16 parity: exact by default

"""The reproduction claims end to end: checkpoints loaded by the adapters, sampled by `parapolicy.policy` with
`sampler="ddpm"` and explicit noise, against the independent reference loops in tests/dp_reference.py.

Skipped until `parapolicy.policy` and `parapolicy.sampling` are present (they live on other branches)."""

from __future__ import annotations

import pytest
import torch

from tests import test_adapters_dp as T
from tests import test_adapters_lerobot as L
from tests.dp_reference import (
    dp_predict_action,
    draw_reference_noise,
    lerobot_generate_actions,
    make_scheduler,
)

policy_mod = pytest.importorskip("parapolicy.policy")
pytest.importorskip("parapolicy.sampling")




@pytest.mark.parametrize("global_cond", [True, False])
def test_dp_ckpt_policy_reproduces_predict_action(tmp_path, global_cond):
    parts = T.build_parts(global_cond, seed=1)
    pol = policy_mod.load_policy(str(T.save_ckpt(tmp_path / "a.ckpt", T.dp_cfg(global_cond), parts)), fast="eager")
    obs = torch.randn(3, T.N_OBS, T.OBS_DIM) * 50 + 100
    width = T.ACTION_DIM + (0 if global_cond else T.OBS_DIM)
    timesteps = make_scheduler(T.SCHED, 10).timesteps
    init, steps = draw_reference_noise(torch.Generator().manual_seed(7), (3, T.HORIZON, width), timesteps)
    p = parts[2].params_dict
    want = dp_predict_action(
        parts[1],
        obs,
        obs_scale=p["obs"]["scale"],
        obs_offset=p["obs"]["offset"],
        action_scale=p["action"]["scale"],
        action_offset=p["action"]["offset"],
        horizon=T.HORIZON,
        n_obs_steps=T.N_OBS,
        n_action_steps=T.N_ACT,
        action_dim=T.ACTION_DIM,
        obs_as_global_cond=global_cond,
        oa_step_convention=True,
        scheduler_kwargs=T.SCHED,
        num_inference_steps=10,
        generator=torch.Generator().manual_seed(7),
    )
    got = pol.predict_action({"obs": obs}, sampler="ddpm", init_noise=init, step_noise=steps)
    assert got["action"].shape == want["action"].shape
    assert torch.allclose(got["action_pred"], want["action_pred"], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("normalization", ["buffers", "processor"])
def test_lerobot_dir_policy_reproduces_generate_actions(tmp_path, normalization):
    stats, mirror = L.make_stats(3), L.mirror_unet(3)
    d = L.write_dir(tmp_path, L.base_config("draccus", "MIN_MAX"), mirror, stats, normalization)
    pol = policy_mod.load_policy(str(d), fast="eager")
    g = torch.Generator().manual_seed(4)
    batch = {
        k: stats[k]["min"] + torch.rand(3, L.N_OBS, dim, generator=g) * (stats[k]["max"] - stats[k]["min"])
        for k, dim in [("observation.state", L.STATE_DIM), ("observation.environment_state", L.ENV_DIM)]
    }
    sched = pol.config["scheduler"]
    timesteps = make_scheduler(sched, 10).timesteps
    init, steps = draw_reference_noise(
        torch.Generator().manual_seed(5), (3, L.HORIZON, L.ACTION_DIM), timesteps
    )
    want = lerobot_generate_actions(
        mirror,
        batch,
        obs_keys=["observation.state", "observation.environment_state"],
        stats=stats,
        modes={
            "observation.state": "min_max",
            "observation.environment_state": "min_max",
            "action": "min_max",
        },
        horizon=L.HORIZON,
        n_obs_steps=L.N_OBS,
        n_action_steps=L.N_ACT,
        action_dim=L.ACTION_DIM,
        scheduler_kwargs=sched,
        num_inference_steps=10,
        legacy=normalization == "buffers",
        generator=torch.Generator().manual_seed(5),
    )
    got = pol.predict_action(batch, sampler="ddpm", init_noise=init, step_noise=steps)["action"]
    # float32: LeRobot's (x - min) / range vs our x * scale + offset differ in rounding only.
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()) * 10)

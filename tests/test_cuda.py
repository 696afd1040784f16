"""The policy on a CUDA device gives the CPU's actions, with every sampler and UNet path (skipped without one).

Nothing here runs on this project's CI (no GPU there); `bash scripts/gpu_check.sh run` runs this file first on a
GPU machine, then the benchmarks."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (bash scripts/gpu_check.sh run, on a GPU machine)")

SECANT = {"name": "paraddpm", "update": "secant", "start": "zero", "window": 16, "first_window": 4, "tol": 0.03,
          "atol": "auto"}


def _same_call(policy, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = {"obs": torch.rand(3, policy.n_obs_steps, 20, generator=g) * 500}
    x_T = torch.randn(3, policy.horizon, policy.input_dim, generator=g)
    z = torch.randn(20, 3, policy.horizon, policy.input_dim, generator=g)
    return obs, x_T, z


@pytest.mark.parametrize("sampler", ["ddpm", "paraddpm", "ddim", "paraddim", "dpmsolver", "paradpmsolver", "secant"])
def test_every_sampler_on_cuda_gives_the_cpus_actions(tiny_policy_dir, sampler):
    from parapolicy.policy import load_policy

    cfg = SECANT if sampler == "secant" else sampler
    cpu = load_policy(tiny_policy_dir, fast="eager")
    gpu = load_policy(tiny_policy_dir, device="cuda", fast="eager")
    obs, x_T, z = _same_call(cpu)
    a = cpu.predict_action(obs, sampler=cfg, init_noise=x_T, step_noise=z)
    b = gpu.predict_action(obs, sampler=cfg, init_noise=x_T, step_noise=z)
    assert b["action"].device.type == "cuda"
    # float rounding differs between the devices; Picard may stop a round apart, within its tolerance
    bound = 1e-2 if sampler in ("ddpm", "ddim", "dpmsolver") else 1.0
    assert float((a["action"] - b["action"].cpu()).abs().max()) < bound
    assert b["stats"].nfe > 0 and b["timing"]["denoise_s"] > 0


def test_the_fast_path_on_cuda_gives_eagers_actions(tiny_policy_dir):
    from parapolicy.policy import load_policy

    eager = load_policy(tiny_policy_dir, device="cuda", fast="eager")
    fast = load_policy(tiny_policy_dir, device="cuda", fast="fp32")
    obs, x_T, z = _same_call(eager, seed=1)
    for sampler in ("ddpm", "paraddpm"):
        a = eager.predict_action(obs, sampler=sampler, init_noise=x_T, step_noise=z)["action"]
        b = fast.predict_action(obs, sampler=sampler, init_noise=x_T, step_noise=z)["action"]
        assert float((a - b).abs().max()) < 1e-2, sampler


def test_a_time_budget_on_cuda_still_returns_network_actions(tiny_policy_dir):
    """The anytime path with a budget that ends after the first round: finite actions, one round at least."""
    from parapolicy.policy import SamplerConfig, load_policy

    gpu = load_policy(tiny_policy_dir, device="cuda", fast="eager")
    obs, x_T, z = _same_call(gpu, seed=2)
    out = gpu.predict_action(obs, sampler=SamplerConfig("paraddpm", time_budget=1e-6), init_noise=x_T, step_noise=z)
    assert out["stats"].iterations >= 1 and torch.isfinite(out["action"]).all()

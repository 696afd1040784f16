"""The anytime contract on a real (tiny) policy: spent budgets, tiny budgets and virtual clocks never give an
action that has not seen the network, and the runner never sends one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parapolicy.policy import SamplerConfig, draw_normal, load_policy
from parapolicy.runtime import FakeClock, Runner, RunnerConfig, SimulatedExecutor
from parapolicy.schedule import make_schedule, predict_x0

STEPS = 20


def obs_batch(p, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.rand(b, p.n_obs_steps, 20, generator=g) * 500}


def network_prediction_at_x_T(p, obs, x_T):
    """What the policy's first denoiser call says the clean action chunk is: unnormalise(clip(x0_hat(x_T)))."""
    tab = make_schedule(p.scheduler("ddpm"))
    k0 = torch.zeros(x_T.shape[0], dtype=torch.long)
    cond = p.normalized_condition(obs)
    with torch.no_grad():
        x0 = predict_x0(tab, k0, x_T, p.denoiser(x_T, tab.timesteps[k0], cond))
    return p.normalizer.unnormalize(x0, p._norm_key["action"])


def costly(p, clock: FakeClock, per_call: float):
    """Make every denoiser call of the real policy cost `per_call` seconds of the virtual clock."""
    net = p._denoise_fn or p.model

    def timed(*args, **kw):
        clock.advance(per_call)
        return net(*args, **kw)

    p.use_denoiser(timed, name=p.inference)
    return p


@pytest.mark.parametrize("name", ["paraddpm", "ddpm"])
def test_spent_budget_gives_the_networks_prediction_not_noise(tiny_policy_dir, name):
    p = load_policy(tiny_policy_dir, fast="eager")
    obs = obs_batch(p, b=2)
    x_T = torch.randn(2, p.horizon, 2, generator=torch.Generator().manual_seed(1))
    out = p.predict_action(obs, sampler=SamplerConfig(name, time_budget=0.0), init_noise=x_T,
                           generator=torch.Generator().manual_seed(2))
    st = out["stats"]
    assert st.capped and st.iterations == 1 and st.converged_steps == [1, 1]
    want = network_prediction_at_x_T(p, obs, x_T)
    torch.testing.assert_close(out["action_pred"], want, atol=1e-3, rtol=1e-5)
    noise_as_action = p.normalizer.unnormalize(x_T, p._norm_key["action"])
    assert (out["action_pred"] - noise_as_action).abs().max() > 1.0


def test_one_millisecond_budget_on_a_virtual_clock_runs_real_rounds(tiny_policy_dir):
    clock = FakeClock(0.0)
    p = costly(load_policy(tiny_policy_dir, fast="eager"), clock, per_call=0.0004)
    obs = obs_batch(p)
    g = torch.Generator().manual_seed(0)
    out = p.predict_action(obs, sampler=SamplerConfig("paraddpm", window=4, time_budget=0.001), generator=g,
                           clock=clock)
    st = out["stats"]
    # rounds start while clock < start + 1 ms: at 0, 0.4, 0.8 ms -> 3 rounds, then the cap
    assert st.capped and st.iterations == 3 and torch.isfinite(out["action"]).all()
    # the same budget on a clock that does not move while the policy computes: the solve completes
    free = load_policy(tiny_policy_dir, fast="eager")
    out = free.predict_action(obs, sampler=SamplerConfig("paraddpm", window=4, time_budget=0.001),
                              generator=torch.Generator().manual_seed(0), clock=FakeClock(5.0))
    assert not out["stats"].capped and all(out["stats"].converged) and out["stats"].iterations > 1


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_sequential_samplers_honour_max_iters_and_budget(tiny_policy_dir, name):
    p = load_policy(tiny_policy_dir, fast="eager")
    obs = obs_batch(p)
    x_T = torch.randn(1, p.horizon, 2, generator=torch.Generator().manual_seed(1))
    kw = dict(init_noise=x_T, generator=torch.Generator().manual_seed(3))
    full = p.predict_action(obs, sampler=SamplerConfig(name, num_inference_steps=10), **kw)
    kw["generator"] = torch.Generator().manual_seed(3)
    cut = p.predict_action(obs, sampler=SamplerConfig(name, num_inference_steps=10, max_iters=3), **kw)
    assert not full["stats"].capped and full["stats"].iterations == 10
    assert cut["stats"].capped and cut["stats"].iterations == 3
    assert torch.isfinite(cut["action"]).all() and not torch.allclose(cut["action"], full["action"])
    # the capped sequential result is the data prediction of its last step: inside the normaliser's range
    lo, hi = p.normalizer.unnormalize(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), p._norm_key["action"])
    assert bool(((cut["action_pred"] >= lo - 1e-3) & (cut["action_pred"] <= hi + 1e-3)).all())


def test_runner_sends_only_actions_that_saw_the_network(tiny_policy_dir):
    """A real tiny policy whose calls cost virtual time, a budget smaller than one round plus the margin: the
    runner still gets chunks of >= 1 round, sends only finite actions from them, and records the budget."""
    clock = FakeClock(0.0)
    p = costly(load_policy(tiny_policy_dir, fast="eager"), clock, per_call=0.02)
    cfg = RunnerConfig(dt=0.1, sampler=SamplerConfig("paraddpm", window=4, time_budget=0.03), refill_at=1)
    runner = Runner(p, cfg, executor=SimulatedExecutor(clock), clock=clock)
    runner.reset(initial_action=[256.0, 256.0])
    sent = []
    for k in range(30):
        clock.set(k * 0.1)
        sent.append(runner.step({"obs": np.full(20, 100.0 + k)}, k * 0.1))
    chunks = runner.telemetry.chunks
    assert len(chunks) >= 3 and all(c.iterations is not None and c.iterations >= 1 for c in chunks)
    assert any(c.capped for c in chunks) and all(c.rejected is None for c in chunks)
    assert all(np.isfinite(a).all() for a in sent)
    assert any(t.source == "queue" for t in runner.telemetry.ticks)


class ZeroRounds:
    """Wraps a real policy but reports zero rounds (what an x_T-returning sampler would do)."""

    def __init__(self, policy):
        self.p = policy
        for k in ("n_obs_steps", "n_action_steps", "horizon", "action_dim", "obs_keys"):
            setattr(self, k, getattr(policy, k))

    def predict_action(self, obs, **kw):
        out = self.p.predict_action(obs, **kw)
        out["stats"].iterations = 0
        return out


def test_runner_refuses_a_chunk_that_ran_zero_rounds(tiny_policy_dir):
    clock = FakeClock(0.0)
    policy = ZeroRounds(load_policy(tiny_policy_dir, fast="eager"))
    runner = Runner(policy, RunnerConfig(dt=0.1, refill_at=0, sampler=SamplerConfig("paraddpm", window=4)),
                    executor=SimulatedExecutor(clock), clock=clock)
    runner.reset(initial_action=[10.0, 20.0])
    sent = []
    for k in range(6):
        clock.set(k * 0.1)
        sent.append(runner.step({"obs": np.full(20, 100.0)}, k * 0.1))
    assert all(np.allclose(a, [10.0, 20.0]) for a in sent)        # held, never the refused chunk
    assert all(c.rejected and "zero rounds" in c.rejected for c in runner.telemetry.chunks)


def test_auto_window_cost_model_is_measured_in_warmup_not_under_a_budget(tiny_policy_dir, monkeypatch):
    import parapolicy.sampling.cost as cost

    p = load_policy(tiny_policy_dir, fast="eager")
    sc = SamplerConfig("paraddpm", window="auto", time_budget=5.0)
    with pytest.raises(ValueError, match="prepare"):
        p.predict_action(obs_batch(p), sampler=sc, generator=torch.Generator().manual_seed(0))
    calls = []
    real = cost.measure_latency
    monkeypatch.setattr(cost, "measure_latency", lambda *a, **k: calls.append(1) or real(*a, repeats=1, warmup=0))
    runner = Runner(p, RunnerConfig(dt=0.1, sampler=sc), executor=SimulatedExecutor(FakeClock(0.0)),
                    clock=FakeClock(0.0))
    runner.warmup({"obs": np.full(20, 100.0)})
    assert calls == [1]
    out = p.predict_action(obs_batch(p), sampler=sc, generator=torch.Generator().manual_seed(0))
    assert calls == [1] and 1 <= out["stats"].window <= p.config["num_inference_steps"]


def test_noise_is_drawn_on_the_generators_device_then_moved():
    g = torch.Generator(device="cpu").manual_seed(0)
    z = draw_normal((2, 3), g, torch.device("meta"))           # a CPU generator, a policy elsewhere
    assert z.device.type == "meta" and z.shape == (2, 3)
    ref = torch.randn((2, 3), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draw_normal((2, 3), torch.Generator().manual_seed(0), "cpu"), ref)

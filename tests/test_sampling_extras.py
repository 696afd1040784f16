"""Warm start, cost model / auto window and import hygiene of parapolicy.sampling (CPU, seconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from diffusers import DDPMScheduler

from parapolicy.sampling import sample_picard, sample_sequential, shift_trajectory
from parapolicy.sampling.cost import CostModel, choose_window, predict
from parapolicy.sampling.warm import shift_horizon
from tests.sampling_helpers import GaussianDenoiser

B, H, D = 2, 8, 2




def sched():
    return DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2", clip_sample=True)


def test_shift_horizon_moves_slots_and_pads_with_last():
    x = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1)
    y = shift_horizon(x, 2)
    assert torch.equal(y[:, :3], x[:, 2:]) and torch.equal(y[:, 3:], x[:, 4:].expand(2, 2, 1))
    assert torch.equal(shift_horizon(x, 0), x) and torch.equal(shift_horizon(x, 9), x[:, 4:].expand(2, 5, 1))


def test_shift_trajectory_modes():
    s = sched()
    den = GaussianDenoiser(s.alphas_cumprod, "epsilon", H, D)
    x_T = torch.randn(B, H, D)
    gen = torch.Generator().manual_seed(0)
    _, traj = sample_sequential(den, s, x_T, return_trajectory=True, generator=gen)
    sig = shift_trajectory(traj, 3, s, mode="signal")
    nai = shift_trajectory(traj, 3, mode="naive")
    assert sig.shape == traj.shape == nai.shape
    assert torch.allclose(sig[-1], shift_horizon(traj[-1], 3))             # clean point: plain shift
    assert (sig[0] - traj[0]).abs().max() < 0.05                            # x_T: almost unchanged
    assert torch.equal(nai, shift_horizon(traj, 3))
    assert torch.equal(shift_trajectory(traj, 0, s), traj)
    for bad, msg in ((dict(n_executed=-1), "n_executed"), (dict(mode="zz"), "mode"),
                     (dict(scheduler=None), "scheduler")):
        kw = dict(trajectory=traj, n_executed=2, scheduler=s, mode="signal")
        kw.update(bad)
        with pytest.raises(ValueError, match=msg):
            shift_trajectory(**kw)
    with pytest.raises(ValueError, match="trajectory"):
        shift_trajectory(traj[0], 1, s)


def test_warm_start_converges_to_the_new_exact_sample_in_fewer_rounds():
    """A chunk sampled for condition c, shifted by n, warm-starts the chunk for a nearby condition."""
    s = sched()
    den = GaussianDenoiser(s.alphas_cumprod, "epsilon", H, D)
    g = torch.Generator().manual_seed(0)
    x_T, noise = torch.randn(B, H, D, generator=g), torch.randn(50, B, H, D, generator=g)
    c0 = torch.zeros(B, 3)
    c1 = c0 + 0.01
    _, st0 = sample_picard(den, s, x_T, noise=noise, cond=c0, window=50, tol=0.1)
    ref = sample_sequential(den, s, x_T, noise=noise, cond=c1)
    _, cold = sample_picard(den, s, x_T, noise=noise, cond=c1, window=50)            # default rollout start
    init = shift_trajectory(st0.trajectory, 0, s)        # the toy's mean has no time structure: shift 0
    x_w, warm = sample_picard(den, s, x_T, noise=noise, cond=c1, window=50, init=init)
    assert float((x_w - ref).abs().max()) <= 0.05 and all(warm.converged)
    assert warm.iterations < cold.iterations
    x_e, _ = sample_picard(den, s, x_T, noise=noise, cond=c1, window=50, tol=0, init=init)
    assert float((x_e - ref).abs().max()) <= 1e-5


def test_cost_model_validation_and_interpolation():
    cm = CostModel({1: 1.0, 16: 4.0})
    assert cm.t(1) == 1.0 and cm.t(16) == 4.0 and abs(cm.t(8) - (1 + 3 * 7 / 15)) < 1e-12
    assert cm.t(32) == pytest.approx(4.0 + 3 / 15 * 16)
    for bad in ({}, {0: 1.0}, {1: -1.0}, {1: float("nan")}):
        with pytest.raises(ValueError):
            CostModel(bad)
    with pytest.raises(ValueError, match="advance"):
        CostModel({1: 1.0}, advance={4: 0.5})
    secs, rounds = predict(CostModel({1: 1.0, 8: 1.0}, advance={4: 4.0}), 100, 4)
    assert rounds == 25 and secs == 25.0                 # flat latency curve, exact advance


def test_auto_window_follows_the_latency_curve():
    s = sched()
    den = GaussianDenoiser(s.alphas_cumprod, "epsilon", H, D)
    x_T = torch.randn(1, H, D)
    linear = {n: 1.0 * n for n in (1, 2, 4, 8, 16, 32, 64)}         # CPU-like: cost grows with the batch
    flat = {1: 1.0, 64: 1.01}                                         # GPU-like: batch is free
    p_lin, _ = choose_window(den, x_T, None, 50, cost_model=linear)
    p_flat, _ = choose_window(den, x_T, None, 50, cost_model=flat)
    assert p_lin == 1 and p_flat >= 8           # rounds saturate (~7 steps/round), so not 50
    out, st = sample_picard(den, s, x_T, window="auto", cost_model=flat, tol=0,
                            noise=torch.zeros(50, 1, H, D))
    assert st.window == p_flat and st.predicted_latency_s is not None
    assert torch.allclose(out, sample_sequential(den, s, x_T, noise=torch.zeros(50, 1, H, D)), atol=1e-5)
    with pytest.raises(ValueError, match="cost_model"):
        sample_picard(den, s, x_T, window="auto", cost_model=[1, 2])


def test_measured_latency_curve_is_never_cheaper_for_a_bigger_batch():
    """A load spike on a small batch (or a lucky big one) must not make a big window look free."""
    import time

    from parapolicy.sampling.cost import latency_batches, measure_latency

    calls = []

    def den(x, t, c):  # the batch of 1 is slow (as if disturbed), 2 and 4 are fast
        calls.append(x.shape[0])
        time.sleep(0.004 if x.shape[0] == 1 else 0.0)
        return x

    curve = measure_latency(den, torch.zeros(1, H, D), None, latency_batches(4), repeats=2, warmup=1)
    assert sorted(curve) == [1, 2, 4] and curve[1] >= 0.004
    assert curve[2] >= curve[1] and curve[4] >= curve[2]
    assert calls[:3] == [1, 2, 4]                     # sizes interleaved per repetition, not one after another
    assert latency_batches(100) == [1, 2, 4, 8, 16, 32, 64, 100] and latency_batches(1) == [1]
    with pytest.raises(ValueError, match="batch sizes"):
        measure_latency(den, torch.zeros(1, H, D), None, [0])


def test_importing_sampling_pulls_no_heavy_optional_deps():
    code = ("import sys, parapolicy.sampling, parapolicy.schedule; "
            "bad = [m for m in ('hydra', 'wandb', 'gymnasium', 'pymunk', 'zarr') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_cost_model_learns_how_far_a_round_advances():
    """The window choice follows the measured advance per round, not only the batch cost: refitting the
    advance curve to measurements recovers its saturation, and a start that advances further per round (e.g.
    a good warm start) makes a wider window pay on the same latency curve."""
    from parapolicy.sampling.cost import CostModel, choose_window, default_advance, fit_max_advance, predict

    measured = {p: default_advance(p, 4.0) for p in (2, 8, 16)}
    assert abs(fit_max_advance(measured) - 4.0) < 1e-3
    lat = {1: 1.0, 2: 1.05, 4: 1.1, 8: 1.3, 16: 1.8, 32: 3.0, 64: 5.5, 100: 8.5}
    slow = CostModel.measured(lat, {16: 3.0})            # rounds accept ~3 steps
    fast = CostModel.measured(lat, {16: 14.0})           # rounds accept ~14 of 16 steps
    assert slow.adv(16) == 3.0 and fast.adv(16) == 14.0 and fast.adv(32) > slow.adv(32)
    x = torch.zeros(1, 8, 2)
    w_slow, _ = choose_window(None, x, None, 100, cost_model=slow)
    w_fast, _ = choose_window(None, x, None, 100, cost_model=fast)
    assert w_fast > w_slow
    assert predict(fast, 100, 16)[1] < predict(slow, 100, 16)[1]


def test_policy_records_the_advance_of_its_own_solves(tiny_policy_dir):
    from parapolicy.policy import SamplerConfig, load_policy

    p = load_policy(tiny_policy_dir, fast="eager")
    obs = {"obs": torch.rand(1, 2, 20, generator=torch.Generator().manual_seed(0)) * 500}
    out = p.predict_action(obs, sampler=SamplerConfig("paraddpm", window=4),
                           generator=torch.Generator().manual_seed(0))
    st = out["stats"]
    assert p._advance[("ddpm", 20, False)][4] == pytest.approx(20 / st.iterations)
    cm = p.cost_model(torch.zeros(1, p.horizon, 2), torch.zeros(1, 40), 20, advance_key=("ddpm", 20, False))
    assert cm.adv(4) == pytest.approx(20 / st.iterations)
    # a start / update / tol that changes how far rounds get is measured apart from the default's
    fast = SamplerConfig("paraddpm", window=4, update="secant", start="zero", tol=0.03)
    st2 = p.predict_action(obs, sampler=fast, generator=torch.Generator().manual_seed(0))["stats"]
    key = ("ddpm", 20, False, ("update", "secant"), ("start", "zero"), ("tol", 0.03))
    assert p._advance[key][4] == pytest.approx(20 / st2.iterations)
    assert p._advance[("ddpm", 20, False)][4] == pytest.approx(20 / st.iterations)

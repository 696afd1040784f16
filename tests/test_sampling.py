"""Exactness of the samplers against diffusers' step loops and against each other (CPU, seconds)."""

from __future__ import annotations

import copy
import itertools
import time

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from parapolicy.sampling import sample_picard, sample_sequential
from tests.sampling_helpers import (
    GaussianDenoiser,
    accepted_input_points,
    accepted_input_residuals,
    diffusers_loop,
    tiny_unet,
)

B, H, D, C = 3, 8, 2, 6
PREDS = ("epsilon", "sample", "v_prediction")


def inputs(seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, H, D, generator=g), torch.randn(b, C, generator=g)


def ddpm(**kw):
    cfg = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    cfg.update(kw)
    return DDPMScheduler(**cfg)


def ddim(**kw):
    cfg = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    cfg.update(kw)
    return DDIMScheduler(**cfg)


def dpm(**kw):
    cfg = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    cfg.update(kw)
    return DPMSolverMultistepScheduler(**cfg)


def max_err(a, b):
    return float((a - b).abs().max())


# ---------------------------------------------------------------- sequential == diffusers step loop

DDPM_CASES = [dict(prediction_type=p, clip_sample=c, variance_type=v, timestep_spacing=s, n=n)
              for p, c, v, (s, n) in itertools.product(
                  PREDS, (True, False), ("fixed_small", "fixed_large"),
                  (("leading", None), ("leading", 20), ("linspace", 25), ("trailing", 10)))]


@pytest.mark.parametrize("case", DDPM_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_ddpm_sequential_equals_diffusers(case):
    case = dict(case)
    n = case.pop("n")
    sched = ddpm(**case)
    den = GaussianDenoiser(sched.alphas_cumprod, case["prediction_type"], H, D)
    x_T, cond = inputs()
    ref, noise = diffusers_loop(sched, den, x_T, cond, n)
    out = sample_sequential(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n)
    assert max_err(out, ref) <= 1e-6


@pytest.mark.parametrize("pred,clip,one,spacing", list(itertools.product(
    PREDS, (True, False), (True, False), ("leading", "trailing", "linspace"))))
def test_ddim_sequential_equals_diffusers(pred, clip, one, spacing):
    sched = ddim(prediction_type=pred, clip_sample=clip, set_alpha_to_one=one, timestep_spacing=spacing)
    den = GaussianDenoiser(sched.alphas_cumprod, pred, H, D)
    x_T, cond = inputs()
    ref, _ = diffusers_loop(sched, den, x_T, cond, 20)
    out = sample_sequential(den, sched, x_T, cond=cond, num_inference_steps=20)
    assert max_err(out, ref) <= 1e-6


DPM_CASES = [dict(prediction_type=p, solver_order=o, solver_type=st, n=n)
             for p, o, st, n in itertools.product(PREDS, (1, 2, 3), ("midpoint", "heun"), (8, 20))]
DPM_CASES += [dict(prediction_type="epsilon", solver_order=2, final_sigmas_type="sigma_min", n=10),
              dict(prediction_type="epsilon", solver_order=3, lower_order_final=False, n=10),
              dict(prediction_type="epsilon", solver_order=2, euler_at_final=True, n=20),
              dict(prediction_type="epsilon", solver_order=2, use_karras_sigmas=True, n=12),
              dict(prediction_type="epsilon", solver_order=2, timestep_spacing="trailing", n=12)]


@pytest.mark.parametrize("case", DPM_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_dpmsolver_sequential_equals_diffusers(case):
    case = dict(case)
    n = case.pop("n")
    sched = dpm(**case)
    den = GaussianDenoiser(sched.alphas_cumprod, case["prediction_type"], H, D)
    x_T, cond = inputs()
    ref, _ = diffusers_loop(sched, den, x_T, cond, n)
    out = sample_sequential(den, sched, x_T, cond=cond, num_inference_steps=n)
    assert max_err(out, ref) <= 1e-5 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("order,n", [(1, 5), (2, 5), (2, 20), (3, 10)])
def test_dpmsolver_with_clip_sample_equals_diffusers_thresholding_at_one(order, n):
    """parapolicy's DPM-Solver++ honours a `clip_sample` entry (policy.make_scheduler sets it): x0 clipped to
    [-1, 1]. diffusers' own dynamic thresholding with sample_max_value=1 clamps its scale s to exactly 1, i.e.
    the same clipping, so its step loop is an independent reference. The eps-predicting toy is scaled up so
    that x0 leaves [-1, 1] at the noisy end (the Push-T policy's case: alpha_bar(99) = 2e-7)."""
    from parapolicy.policy import make_scheduler

    ours = make_scheduler("dpmsolver", dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                            clip_sample=True, prediction_type="epsilon"), n)
    ours = DPMSolverMultistepScheduler.from_config(ours.config, solver_order=order)
    ref_sched = DPMSolverMultistepScheduler.from_config(
        {k: v for k, v in ours.config.items() if k not in ("clip_sample", "clip_sample_range")},
        thresholding=True, sample_max_value=1.0)
    den = tiny_unet(C, scale=3.0)
    x_T, cond = inputs()
    ref, _ = diffusers_loop(ref_sched, den, x_T, cond, n)
    out = sample_sequential(den, ours, x_T, cond=cond, num_inference_steps=n)
    assert max_err(out, ref) <= 1e-5
    unclipped, _ = diffusers_loop(dpm(solver_order=order, timestep_spacing="trailing"), den, x_T, cond, n)
    assert max_err(unclipped, ref) > 1.0     # the clipping matters here: without it the sample runs away
    assert float(out.abs().max()) <= 1.0 + 1e-5


@pytest.mark.parametrize("family", ["ddpm", "ddim", "dpm"])
def test_unet_sequential_equals_diffusers(family):
    sched, n = {"ddpm": (ddpm(), None), "ddim": (ddim(), 10),
                "dpm": (dpm(prediction_type="sample"), 10)}[family]
    den = tiny_unet(C)
    x_T, cond = inputs()
    ref, noise = diffusers_loop(sched, den, x_T, cond, n)
    out = sample_sequential(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n)
    assert max_err(out, ref) <= 1e-6


def test_generator_noise_matches_diffusers():
    sched = ddpm(clip_sample=False)
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    out = sample_sequential(den, sched, x_T, cond=cond, num_inference_steps=10,
                            generator=torch.Generator().manual_seed(5))
    # our draw is one (S, B, H, D) block; it must equal feeding that block explicitly
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(10, B, H, D, generator=g)
    again = sample_sequential(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=10)
    assert torch.equal(out, again)
    x1, _ = sample_picard(den, sched, x_T, cond=cond, num_inference_steps=10, window=4, tol=0,
                          generator=torch.Generator().manual_seed(5))
    assert max_err(x1, out) <= 1e-5


def test_scheduler_not_mutated():
    sched = ddpm()
    sched.set_timesteps(50)
    before = (sched.timesteps.clone(), sched.num_inference_steps, dict(sched.config))
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    sample_sequential(den, sched, x_T, cond=cond, num_inference_steps=10)
    sample_picard(den, sched, x_T, cond=cond, num_inference_steps=20)
    sample_picard(den, sched, x_T, cond=cond)                      # reuses its 50 timesteps
    assert torch.equal(sched.timesteps, before[0]) and sched.num_inference_steps == 50
    assert dict(sched.config) == before[2]
    d = dpm()
    d.set_timesteps(10)
    snap = copy.deepcopy(d.__dict__.get("_step_index")), d.lower_order_nums
    sample_picard(GaussianDenoiser(d.alphas_cumprod), d, x_T, cond=cond)
    assert (d.__dict__.get("_step_index"), d.lower_order_nums) == snap


# ---------------------------------------------------------------- Picard == sequential

FAMILIES = {
    "ddpm": lambda p: (ddpm(prediction_type=p), 50),
    "ddim": lambda p: (ddim(prediction_type=p), 25),
    "dpm2": lambda p: (dpm(prediction_type=p, solver_order=2), 20),
    "dpm3": lambda p: (dpm(prediction_type=p, solver_order=3), 20),
}


@pytest.mark.parametrize("fam,pred", list(itertools.product(FAMILIES, PREDS)))
def test_window1_is_sequential_bit_for_bit(fam, pred):
    sched, n = FAMILIES[fam](pred)
    den = GaussianDenoiser(sched.alphas_cumprod, pred, H, D)
    x_T, cond = inputs()
    noise = torch.randn(n, B, H, D, generator=torch.Generator().manual_seed(3))
    ref = sample_sequential(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n)
    out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n, window=1, tol=0.1)
    assert max_err(out, ref) <= 1e-6
    assert torch.equal(out, ref)
    assert st.iterations == n and st.nfe == n and not st.capped


@pytest.mark.parametrize("fam,pred,window", list(itertools.product(FAMILIES, PREDS, (2, 5, 16, 1000))))
def test_tol0_is_sequential_any_window(fam, pred, window):
    sched, n = FAMILIES[fam](pred)
    den = GaussianDenoiser(sched.alphas_cumprod, pred, H, D)
    x_T, cond = inputs()
    noise = torch.randn(n, B, H, D, generator=torch.Generator().manual_seed(3))
    ref = sample_sequential(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n)
    out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n, window=window,
                            tol=0)
    assert max_err(out, ref) <= 1e-5
    assert all(st.converged)
    # tol 0: every accepted input point was unchanged by its round (bit-exact fixed point)
    assert accepted_input_residuals(st) and max(accepted_input_residuals(st)) == 0.0


@pytest.mark.parametrize("fam", ["ddpm", "ddim", "dpm2"])
def test_unet_window1_and_tol0(fam):
    sched, n = {"ddpm": (ddpm(), 30), "ddim": (ddim(), 15), "dpm2": (dpm(prediction_type="sample"), 15)}[fam]
    den = tiny_unet(C)
    x_T, cond = inputs()
    noise = torch.randn(n, B, H, D, generator=torch.Generator().manual_seed(3))
    ref = sample_sequential(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n)
    out1, _ = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n, window=1)
    assert max_err(out1, ref) <= 1e-6
    for w in (4, n):
        out, _ = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n, window=w,
                               tol=0)
        # batched UNet calls round differently from B-row calls (~1e-7 per evaluation)
        assert max_err(out, ref) <= 1e-5


def gaussian_case(fam):
    """(scheduler, steps, Gaussian-data denoiser, x_T, cond, step noise, sequential reference sample)."""
    sched, n = FAMILIES[fam]("epsilon")
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    noise = torch.randn(n, B, H, D, generator=torch.Generator().manual_seed(3))
    ref = sample_sequential(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n)
    return sched, n, den, x_T, cond, noise, ref


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_default_tol_is_close_and_cheaper(fam):
    sched, n, den, x_T, cond, noise, ref = gaussian_case(fam)
    out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n, window=8)
    assert all(st.converged) and st.iterations < n
    assert max_err(out, ref) < 0.05
    assert torch.equal(out, st.trajectory[-1])
    res = accepted_input_residuals(st)                      # the per-step guarantee, checked point by point
    assert res and max(res) <= 0.1 + 1e-6
    _, exact = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n, window=8, tol=0)
    assert st.iterations < exact.iterations                 # the tolerance buys rounds


# ---------------------------------------------------------------- caps, deadline, init, batches

def test_max_iters_cap_semantics():
    sched = ddpm()
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    noise = torch.randn(100, B, H, D, generator=torch.Generator().manual_seed(3))
    ref, ref_traj = sample_sequential(den, sched, x_T, noise=noise, cond=cond, return_trajectory=True)
    out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, window=8, tol=0, max_iters=5)
    assert st.capped and st.iterations == 5 and not any(st.converged)
    for b in range(B):
        k = st.converged_steps[b]
        assert 5 <= k < 100
        assert max_err(st.trajectory[:k + 1, b], ref_traj[:k + 1, b]) <= 1e-5   # converged prefix exact
    assert torch.equal(out, st.trajectory[-1])
    # uncapped continuation from the capped trajectory converges to the same sample
    out2, st2 = sample_picard(den, sched, x_T, noise=noise, cond=cond, window=8, tol=0, init=st.trajectory)
    assert max_err(out2, ref) <= 1e-5 and not st2.capped


@pytest.mark.parametrize("fam", ["ddpm", "ddim"])
def test_spent_deadline_still_runs_one_round_and_returns_the_networks_prediction(fam):
    """Anytime contract: a deadline already passed never returns x_T. The first round always runs, and the
    capped result is the frozen-x0 rollout from the accepted frontier, whose end point is exactly the data
    prediction the network made (DDPM / DDIM: the last rollout step has gain 0 on x and 1 on x0_hat)."""
    from parapolicy.schedule import make_schedule, predict_x0

    sched = ddpm() if fam == "ddpm" else ddim()
    n = 100 if fam == "ddpm" else 20
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    out, st = sample_picard(den, sched, x_T, cond=cond, num_inference_steps=n, deadline=time.monotonic() - 1.0,
                            generator=torch.Generator().manual_seed(0))
    assert st.capped and st.iterations == 1 and den.calls == 1 and st.converged_steps == [1] * B
    assert not torch.allclose(out, x_T)
    tab = make_schedule(sched, n)
    k0 = torch.zeros(B, dtype=torch.long)
    x0_hat = predict_x0(tab, k0, x_T, den(x_T, tab.timesteps[k0], cond).float())
    torch.testing.assert_close(out, x0_hat, atol=1e-5, rtol=1e-5)
    # a virtual clock that never moves never stops the solve; one that is always late stops after round 1
    _, free = sample_picard(den, sched, x_T, cond=cond, num_inference_steps=n, deadline=5.0, clock=lambda: 0.0)
    _, late = sample_picard(den, sched, x_T, cond=cond, num_inference_steps=n, deadline=5.0, clock=lambda: 9.0)
    assert all(free.converged) and not free.capped and late.iterations == 1 and late.capped


def test_capped_result_is_the_rollout_from_the_accepted_frontier():
    """After max_iters rounds, every point past the accepted prefix is the frozen-x0 rollout from it (the
    documented result), for every guess mode, and the accepted prefix is the sequential one at tol 0."""
    sched = ddpm()
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    noise = torch.randn(100, B, H, D, generator=torch.Generator().manual_seed(3))
    _, ref_traj = sample_sequential(den, sched, x_T, noise=noise, cond=cond, return_trajectory=True)
    for guess in ("frontier", "window", "none"):
        out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, window=8, tol=0, max_iters=3,
                                guess=guess)
        assert st.capped and st.iterations == 3 and st.guess == guess
        for b in range(B):
            e = st.converged_steps[b]
            assert max_err(st.trajectory[:e + 1, b], ref_traj[:e + 1, b]) <= 1e-5
            # the rollout ends at a clipped data prediction: inside the clip range, not x_T-sized noise
            assert out[b].abs().max() <= 1.0 + 1e-6


def test_init_is_respected_and_not_overwritten():
    sched = ddpm()
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    noise = torch.randn(100, B, H, D, generator=torch.Generator().manual_seed(3))
    ref, traj = sample_sequential(den, sched, x_T, noise=noise, cond=cond, return_trajectory=True)
    init = traj.clone()
    init[0] = 123.0                                   # init[0] is replaced by x_T
    keep = init.clone()
    out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, window=100, tol=0, init=init)
    assert torch.equal(init, keep)
    assert st.iterations == 1 and st.nfe == 100       # exact guess: one round confirms it
    assert max_err(out, ref) <= 1e-6
    _, cold = sample_picard(den, sched, x_T, noise=noise, cond=cond, window=100, tol=0)
    assert cold.iterations > 1


def test_each_sample_converges_on_its_own():
    sched = ddpm()
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    noise = torch.randn(100, B, H, D, generator=torch.Generator().manual_seed(3))
    ref, traj = sample_sequential(den, sched, x_T, noise=noise, cond=cond, return_trajectory=True)
    init = x_T[None].repeat(101, 1, 1, 1)
    init[:, 0] = traj[:, 0]                           # sample 0 starts at its exact trajectory
    den.rows = 0
    out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, window=20, tol=0, init=init)
    assert max_err(out, ref) <= 1e-5
    assert st.nfe_per_sample[0] == 100                # 5 rounds x 20 steps, then it stops costing
    assert st.nfe_per_sample[1] > 100 and st.nfe_per_sample[2] > 100
    rows_per_round = [sum(e - s for _, s, e in w) for w in st.windows]
    assert den.rows == sum(rows_per_round) == sum(st.nfe_per_sample)


@pytest.mark.parametrize("accel", ["anderson", "taa"])
def test_acceleration_keeps_exactness(accel):
    sched = ddpm()
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    noise = torch.randn(100, B, H, D, generator=torch.Generator().manual_seed(3))
    ref = sample_sequential(den, sched, x_T, noise=noise, cond=cond)
    out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, window=16, tol=0, accel=accel)
    assert max_err(out, ref) <= 1e-5 and st.accel == accel
    out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, window=16, accel=accel)
    assert all(st.converged) and max_err(out, ref) < 0.05


# ---------------------------------------------------------------- bad input

def test_bad_inputs_raise_value_errors():
    sched = ddpm()
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", H, D)
    x_T, cond = inputs()
    nan = x_T.clone()
    nan[0, 0, 0] = float("nan")
    cases = [
        (dict(x_T=x_T[0]), "x_T must be"),
        (dict(x_T=nan), "x_T contains NaN"),
        (dict(cond=cond[:2]), "cond must be"),
        (dict(cond=torch.full_like(cond, float("nan"))), "cond contains NaN"),
        (dict(noise=torch.zeros(99, B, H, D)), "noise must be"),
        (dict(noise=torch.full((100, B, H, D), float("nan"))), "noise contains NaN"),
        (dict(init=torch.zeros(100, B, H, D)), "init must be"),
        (dict(window=0), "window"),
        (dict(window=-3), "window"),
        (dict(window="big"), "window"),
        (dict(window=True), "window"),
        (dict(tol=-0.1), "tol"),
        (dict(max_iters=0), "max_iters"),
        (dict(accel="newton"), "accel"),
        (dict(num_inference_steps=0), "num_inference_steps"),
    ]
    for kw, msg in cases:
        args = dict(x_T=x_T, cond=cond)
        args.update(kw)
        with pytest.raises(ValueError, match=msg):
            sample_picard(den, sched, **args)
    with pytest.raises(ValueError, match="x_T"):
        sample_sequential(den, sched, nan, cond=cond)
    with pytest.raises(ValueError, match="EulerDiscreteScheduler"):
        sample_sequential(den, EulerDiscreteScheduler(), x_T, cond=cond)
    with pytest.raises(ValueError, match="EulerDiscreteScheduler"):
        sample_picard(den, EulerDiscreteScheduler(), x_T, cond=cond)
    with pytest.raises(ValueError, match="algorithm_type"):
        sample_picard(den, dpm(algorithm_type="sde-dpmsolver++"), x_T, cond=cond, num_inference_steps=10)
    with pytest.raises(ValueError, match="thresholding"):
        sample_sequential(den, ddpm(thresholding=True), x_T, cond=cond)
    with pytest.raises(ValueError, match="denoiser returned"):
        sample_sequential(lambda x, t, c: x[:, :4], sched, x_T, cond=cond)


@pytest.mark.parametrize("fam", ["ddpm", "dpm3"])
def test_every_guess_mode_is_exact(fam):
    sched, n, den, x_T, cond, noise, ref = gaussian_case(fam)
    for guess in ("frontier", "window", "none"):
        out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n, window=8,
                                tol=0, guess=guess)
        assert max_err(out, ref) <= 1e-5 and all(st.converged)
        assert st.windows[0][0][2] - st.windows[0][0][1] == (8 if guess == "none" else 1)


def test_rollout_equals_the_step_by_step_recursion():
    """`Rollout` unrolls x_{k+1} = a_k x_k + b_k x0 + std_k z_k for k >= start, for all samples in one
    product; the same numbers as stepping it (points up to each sample's start untouched)."""
    from parapolicy.sampling.rollout import Rollout
    from parapolicy.schedule import frozen_x0_coeffs, make_schedule

    tab = make_schedule(ddpm(), 12)
    a, b = frozen_x0_coeffs(tab)
    S, Bt = 12, 3
    g = torch.Generator().manual_seed(0)
    traj, z = torch.randn(S + 1, Bt, H, D, generator=g), torch.randn(S, Bt, H, D, generator=g)
    x0 = torch.randn(3, H, D, generator=g)
    bs, start = torch.tensor([2, 0, 1]), torch.tensor([5, S, 0])  # sample 0 is done: nothing changes
    want = traj.clone()
    for j, (bj, e) in enumerate(zip(bs.tolist(), start.tolist())):
        for k in range(e, S):
            want[k + 1, bj] = a[k] * want[k, bj] + b[k] * x0[j] + tab.std[k] * z[k, bj]
    got = traj.clone()
    Rollout(tab, "cpu", torch.float32)(got, bs, start, x0, z)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- update="parareal" (eq. 2')
def test_gain_scan_is_the_recurrence_and_gain_one_is_the_cumsum():
    from parapolicy.sampling.picard import _gain_scan

    g = torch.Generator().manual_seed(0)
    step = torch.randn(5, 3, H, D, generator=g, dtype=torch.float64)
    gain = torch.rand(12, generator=g, dtype=torch.float64)
    s = torch.tensor([0, 4, 9])
    out = _gain_scan(step, gain, s)
    for a in range(3):                                      # carry_j = a_{s+j+1} (step_j + carry_{j-1})
        prev = torch.zeros(H, D, dtype=torch.float64)
        for j in range(5):
            prev = gain[min(int(s[a]) + j + 1, 11)] * (step[j, a] + prev)
            assert torch.allclose(out[j, a], prev)
    assert torch.allclose(_gain_scan(step, torch.ones(12, dtype=torch.float64), s), torch.cumsum(step, 0))


@pytest.mark.parametrize("update,start", [("parareal", "predict"), ("secant", "predict"), ("secant", "zero"),
                                          ("picard", "zero")])
@pytest.mark.parametrize("fam", ["ddpm", "ddim", "dpm2"])
def test_parareal_update_is_exact_at_tol0_and_window1(fam, update, start):
    sched, n, den, x_T, cond, noise, ref = gaussian_case(fam)
    out1, st1 = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n, window=1,
                              update=update, start=start)
    assert torch.equal(out1, ref) and st1.iterations == n
    for w in (4, 16):
        out, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=n, window=w, tol=0,
                                update=update, start=start)
        assert max_err(out, ref) <= 1e-5 and all(st.converged)
        assert accepted_input_residuals(st) and max(accepted_input_residuals(st)) == 0.0


def test_parareal_update_keeps_the_per_step_guarantee_and_changes_the_iteration():
    sched, n, den, x_T, cond, noise, ref = gaussian_case("ddpm")
    kw = dict(noise=noise, cond=cond, num_inference_steps=n, window=8, guess="window")
    out_p, st_p = sample_picard(den, sched, x_T, **kw)
    out_r, st_r = sample_picard(den, sched, x_T, update="parareal", **kw)
    res = accepted_input_residuals(st_r)
    assert all(st_r.converged) and res and max(res) <= 0.1 + 1e-6
    assert max_err(out_r, ref) < 0.05
    assert not torch.equal(out_r, out_p)                    # a different update: a different iterate
    with pytest.raises(ValueError, match="update must be one of"):
        sample_picard(den, sched, x_T, update="newton", **kw)


# ---------------------------------------------------------------- update="secant" (eq. 2'') and start="zero"
def test_gain_scan_with_a_rank_one_correction_is_its_recurrence():
    from parapolicy.sampling.picard import _gain_scan

    g = torch.Generator().manual_seed(1)
    step = torch.randn(5, 3, H, D, generator=g, dtype=torch.float64)
    U, W = (torch.randn(5, 3, H, D, generator=g, dtype=torch.float64) for _ in range(2))
    gain = torch.rand(12, generator=g, dtype=torch.float64)
    s = torch.tensor([0, 4, 9])
    out = _gain_scan(step, gain, s, U, W)
    for a in range(3):          # carry_j = a_{s+j+1} d + U_{j+1} <W_{j+1}, d>, d = step_j + carry_{j-1}
        prev = torch.zeros(H, D, dtype=torch.float64)
        for j in range(4):
            d = step[j, a] + prev
            prev = gain[min(int(s[a]) + j + 1, 11)] * d + U[j + 1, a] * (W[j + 1, a] * d).sum()
            assert torch.allclose(out[j, a], prev)
    assert torch.allclose(_gain_scan(step, gain, s, torch.zeros_like(U), W), _gain_scan(step, gain, s))


def test_gain_scan_costs_the_same_number_of_tensor_operations_whatever_the_window():
    """A GPU pays a kernel launch per tensor operation: the scan must not loop over the window's slots."""
    from torch.overrides import TorchFunctionMode

    from parapolicy.sampling.picard import _gain_scan

    class Count(TorchFunctionMode):
        n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    def ops(pw, secant):
        step = torch.randn(pw, 2, H, D)
        extra = (torch.randn_like(step), torch.randn_like(step)) if secant else ()
        Count.n = 0
        with Count():
            _gain_scan(step, torch.rand(100), torch.tensor([0, 30]), *extra)
        return Count.n

    for secant in (False, True):
        assert ops(4, secant) == ops(56, secant)


def test_secant_update_keeps_the_guarantee_and_takes_fewer_rounds_than_parareal():
    sched, n, den, x_T, cond, noise, ref = gaussian_case("ddpm")
    kw = dict(noise=noise, cond=cond, num_inference_steps=n, window=32, guess="window")
    out_r, st_r = sample_picard(den, sched, x_T, update="parareal", **kw)
    out_s, st_s = sample_picard(den, sched, x_T, update="secant", **kw)     # 9 rounds against 10 here
    res = accepted_input_residuals(st_s)
    assert all(st_s.converged) and res and max(res) <= 0.1 + 1e-6
    assert max_err(out_s, ref) < 0.05
    assert st_s.iterations < st_r.iterations, (st_s.iterations, st_r.iterations)


def test_zero_start_evaluates_a_full_first_window_and_keeps_the_guarantee():
    sched, n, den, x_T, cond, noise, ref = gaussian_case("ddpm")
    kw = dict(noise=noise, cond=cond, num_inference_steps=n, window=16)
    _, st_p = sample_picard(den, sched, x_T, **kw)
    out, st = sample_picard(den, sched, x_T, start="zero", **kw)
    assert [e - b for _, b, e in st_p.windows[0]] == [1, 1, 1]    # predict: x_T alone first
    assert [e - b for _, b, e in st.windows[0]] == [16] * 3     # zero: a full window from the zero rollout
    res = accepted_input_residuals(st)
    assert all(st.converged) and res and max(res) <= 0.1 + 1e-6 and max_err(out, ref) < 0.05
    with pytest.raises(ValueError, match="start must be one of"):
        sample_picard(den, sched, x_T, start="x_T", **kw)
    with pytest.raises(ValueError, match="start='zero' sets the first guess"):
        sample_picard(den, sched, x_T, start="zero", init=st.trajectory, **kw)
    with pytest.raises(ValueError, match="start='zero' sets the first guess"):
        sample_picard(den, sched, x_T, start="zero", guess="none", **kw)


@pytest.mark.parametrize("start", ["zero", "predict"])
def test_first_window_sets_only_the_first_rounds_window_and_keeps_the_guarantee(start):
    sched, n, den, x_T, cond, noise, ref = gaussian_case("ddpm")
    kw = dict(noise=noise, cond=cond, num_inference_steps=n, window=16, update="secant", start=start)
    out, st = sample_picard(den, sched, x_T, first_window=4, **kw)
    assert [e - b for _, b, e in st.windows[0]] == [4] * 3
    assert all(e - b == min(16, n - b) for w in st.windows[1:] for _, b, e in w)
    res = accepted_input_residuals(st)
    assert all(st.converged) and res and max(res) <= 0.1 + 1e-6 and max_err(out, ref) < 0.05
    out0, st0 = sample_picard(den, sched, x_T, first_window=4, **{**kw, "tol": 0})
    assert max_err(out0, ref) <= 1e-5
    default = 16 if start == "zero" else 1                     # None: the start's own first window
    _, st_d = sample_picard(den, sched, x_T, **kw)
    _, st_e = sample_picard(den, sched, x_T, first_window=default, **kw)
    assert [e - b for _, b, e in st_d.windows[0]] == [default] * 3 and st_e.windows == st_d.windows
    for bad in (0, -1, 2.0, "auto", True):
        with pytest.raises(ValueError, match="first_window must be None or an int >= 1"):
            sample_picard(den, sched, x_T, first_window=bad, **kw)


# ---------------------------------------------------------------- atol="auto": a floor for the noise-free last step
@pytest.mark.parametrize("fam", ["ddpm", "dpm2"])
def test_auto_atol_holds_the_last_steps_input_to_the_last_noisy_steps_tolerance(fam):
    from parapolicy.schedule import make_schedule

    sched, n, den, x_T, cond, noise, ref = gaussian_case(fam)
    kw = dict(noise=noise, cond=cond, num_inference_steps=n, window=16)
    _, st0 = sample_picard(den, sched, x_T, **kw)
    out, st = sample_picard(den, sched, x_T, atol="auto", **kw)
    s = copy.deepcopy(sched)
    s.set_timesteps(n)
    a, a_prev = (sched.alphas_cumprod[t] for t in s.timesteps[-2:])      # the last noisy step's posterior
    assert st.atol == pytest.approx(0.1 * float(((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()), rel=1e-5)
    var = make_schedule(sched, n).tol_var.double()
    pts = accepted_input_points(st)
    for j, r in pts:                                       # rule (3) with the floor, point by point
        assert r * float(var[j].sqrt()) <= max(0.1 * float(var[j].sqrt()), st.atol) * (1 + 1e-5), (j, r)
    floored = {j for j, r in pts if r > 0.1 + 1e-6}
    assert floored == {n - 1}                              # only the noise-free step's input used the floor
    assert st.iterations < st0.iterations and all(st.converged)
    assert max_err(out, ref) < 0.05
    exact, st_e = sample_picard(den, sched, x_T, atol="auto", tol=0, **kw)
    assert st_e.atol == 0.0 and max_err(exact, ref) <= 1e-5
    with pytest.raises(ValueError, match="atol must be a finite number >= 0 or 'auto'"):
        sample_picard(den, sched, x_T, atol="loose", **kw)

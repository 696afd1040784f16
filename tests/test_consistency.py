"""Consistency distillation (parapolicy.consistency, consistency_math) and the `consistency` sampler."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from parapolicy import consistency as C
from parapolicy import consistency_math as M
from parapolicy.sampling.consistency import ConsistencyScheduler, consistency_scheduler, sample_consistency
from tests.conftest import make_tiny_store, tiny_policy_parts


def _abar(T=100):
    """float64 cosine (squaredcos_cap_v2) alphas_cumprod written out here: beta_t = min(1 - a(t+1)/a(t), 0.999)."""
    a = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
    betas = [min(1 - a[t + 1] / a[t], 0.999) for t in range(T)]
    return np.cumprod([1 - b for b in betas])


def _ref_levels(abar, n):
    """(alpha_n, sigma_n) in float64 with n = 0 the clean end."""
    return (1.0, 0.0) if n == 0 else (math.sqrt(abar[n - 1]), math.sqrt(1 - abar[n - 1]))


def _ref_scalings(n, sd=0.5, s=10.0):
    return sd ** 2 / ((s * n) ** 2 + sd ** 2), s * n / math.sqrt((s * n) ** 2 + sd ** 2)


def _ref_f(x, eps, n, abar, alpha_min=1 / 80, clip=None):
    """float64 f(x, n) = c_skip x + c_out clip((x - sigma eps) / max(alpha, alpha_min)); x, eps numpy arrays."""
    a, s = _ref_levels(abar, n)
    x0 = (x - s * eps) / max(a, alpha_min)
    if clip is not None:
        x0 = np.clip(x0, -clip, clip)
    cs, co = _ref_scalings(n)
    return cs * x + co * x0


AC = torch.from_numpy(_abar())


def test_schedule_written_here_matches_diffusers():
    from diffusers import DDPMScheduler

    ac = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    assert torch.allclose(ac, AC, rtol=1e-5, atol=1e-9)
    assert abs(math.sqrt(AC[99]) - 4.9e-4) < 1e-5          # the guarded level (issue 17)


def test_boundary_scalings_against_float64_reference_and_exact_at_zero():
    n = torch.tensor([0, 1, 2, 5, 37, 99, 100])
    c_skip, c_out = M.boundary_scalings(n)
    for i, k in enumerate(n.tolist()):
        rs, ro = _ref_scalings(k)
        assert c_skip[i].item() == pytest.approx(rs, rel=1e-12, abs=1e-300)
        assert c_out[i].item() == pytest.approx(ro, rel=1e-12, abs=1e-300)
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0
    # an identity of these scalings: c_skip + c_out^2 = (sd^2 + (s n)^2) / ((s n)^2 + sd^2) = 1
    assert torch.allclose(c_skip + c_out ** 2, torch.ones(len(n), dtype=torch.float64))


def test_f_at_the_clean_end_is_exactly_x():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 8, 2, generator=g)
    eps = 100 * torch.randn(5, 8, 2, generator=g)            # whatever the net says
    f = M.consistency_from_eps(x, eps, torch.zeros(5, dtype=torch.long), AC, clip=1.0)
    assert torch.equal(f, x)
    # also through the student's UNet call (model timestep clamped to 0)
    cfg, net, _ = tiny_policy_parts()
    cond = torch.randn(5, 40, generator=g)
    ccfg = C.ConsistencyConfig()
    out = C.student_f(net, torch.randn(5, 8, 2, generator=g), torch.zeros(5, dtype=torch.long), cond,
                      AC[:20], ccfg, None)
    assert torch.isfinite(out).all()
    x2 = torch.randn(5, 8, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(C.student_f(net, x2, torch.zeros(5, dtype=torch.long), cond, AC[:20], ccfg, None), x2)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_consistency_function_against_float64_reference(clip):
    g = torch.Generator().manual_seed(1)
    n = torch.tensor([0, 1, 10, 50, 90, 99, 100])
    x = torch.randn(len(n), 4, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(len(n), 4, 2, generator=g, dtype=torch.float64)
    f = M.consistency_from_eps(x, eps, n, AC, clip=clip)
    for i, k in enumerate(n.tolist()):
        ref = _ref_f(x[i].numpy(), eps[i].numpy(), k, _abar(), clip=clip)
        np.testing.assert_allclose(f[i].numpy(), ref, rtol=1e-10, atol=1e-12)
    # the floor acts at n = 100 only (alpha_100 = 4.9e-4 < 1/80 < alpha_99 = 0.0156)
    a, _ = M.levels(AC, torch.arange(101))
    assert (a < 1 / 80).nonzero().flatten().tolist() == [100]


def _eps_fn(x, t):
    """A fixed nonlinear 'teacher': eps(x, t) (any smooth function will do for the step math)."""
    return torch.tanh(x * (t.to(x.dtype)[:, None, None] + 1) / 50) + 0.1 * x


@pytest.mark.parametrize("clip", [None, 1.0])
def test_teacher_ddim_step_matches_diffusers_ddim(clip):
    """skip 10 of 100 is one DDIM-10 step of diffusers (t -> t - 10): levels n -> n - 10, and 9 -> clean."""
    from diffusers import DDIMScheduler

    sch = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=clip is not None,
                        set_alpha_to_one=True, steps_offset=9, timestep_spacing="leading")
    sch.set_timesteps(10)
    g = torch.Generator().manual_seed(2)
    for t in sch.timesteps.tolist():
        x = 2 * torch.randn(3, 8, 2, generator=g, dtype=torch.float64)
        tt = torch.full((3,), t)
        ref = sch.step(_eps_fn(x, tt), t, x).prev_sample
        n = tt + 1
        got = M.teacher_ode_step(_eps_fn, x, n, (n - 10).clamp(min=0), AC, "ddim", clip)
        assert torch.allclose(got, ref, rtol=2e-5, atol=1e-5), (t, (got - ref).abs().max())  # diffusers: float32 abar


def test_heun_step_is_second_order_on_gaussian_data():
    """Data N(0, s^2): the exact eps is sigma x / (alpha^2 s^2 + sigma^2) and the ODE maps x_n to
    x_n sqrt(alpha_m^2 s^2 + sigma_m^2) / sqrt(alpha_n^2 s^2 + sigma_n^2) (float64, written here)."""
    s2 = 0.3 ** 2
    abar = _abar()

    def var(k):
        a, s = _ref_levels(abar, k)
        return a * a * s2 + s * s

    def eps_fn(x, t):
        n = (t + 1).tolist()
        sig = torch.tensor([_ref_levels(abar, k)[1] / var(k) for k in n], dtype=x.dtype)
        return sig[:, None, None] * x

    n = torch.tensor([100, 80, 50, 30, 20, 11])
    m = n - 10
    x = torch.randn(len(n), 4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = torch.stack([x[i] * math.sqrt(var(int(m[i])) / var(int(n[i]))) for i in range(len(n))])
    ddim = M.teacher_ode_step(eps_fn, x, n, m, AC, "ddim")
    heun = M.teacher_ode_step(eps_fn, x, n, m, AC, "heun")
    e_ddim = (ddim - exact).flatten(1).abs().max(1).values
    e_heun = (heun - exact).flatten(1).abs().max(1).values
    # Below the top level Heun is 2-9x closer. From n = 100 (r = sigma/alpha falls from 2029 to 6.4 in one step)
    # the trapezoid weights the endpoint's slope by half over three decades of r and is worse than DDIM, whose
    # slope is nearly constant there (docs/consistency.md); the default solver is DDIM.
    assert (e_heun[1:] < e_ddim[1:]).all(), (e_heun, e_ddim)
    assert e_heun[0] > e_ddim[0]
    # m = 0 falls back to the DDIM step (eps is undefined at the clean end)
    z = M.teacher_ode_step(eps_fn, x[:1], torch.tensor([9]), torch.tensor([0]), AC, "heun")
    assert torch.equal(z, M.teacher_ode_step(eps_fn, x[:1], torch.tensor([9]), torch.tensor([0]), AC, "ddim"))


class _Net(torch.nn.Module):
    """net(x, t, global_cond=c) -> eps: a fixed smooth function with one trainable scale."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(float(w)))

    def forward(self, x, t, global_cond=None):
        return self.w * torch.tanh(x * (t.to(x.dtype)[:, None, None] + 1) / 50) + global_cond[:, :1, None] * 0.01


class _Teacher:
    def __init__(self):
        self.net, self.alphas_cumprod, self.clip, self.T = _Net(1.0), AC, 1.0, 100


@pytest.mark.parametrize("distance,weighting", [("l2", "snr"), ("l2", "uniform"), ("huber", "uniform")])
def test_consistency_batch_loss_against_float64_reference(distance, weighting):
    """The training target and loss, rederived in float64 from the same draws (n, then eps, from the generator)."""
    cfg = C.ConsistencyConfig(skip=10, distance=distance, weighting=weighting)
    teacher, student, target = _Teacher(), _Net(0.9), _Net(0.8)
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(16, 8, 2, generator=g) * 2 - 1
    cond = torch.randn(16, 3, generator=g)
    res = C.consistency_batch(student, target, teacher, x0, cond, cfg, generator=torch.Generator().manual_seed(5))
    g2 = torch.Generator().manual_seed(5)
    n = torch.randint(1, 101, (16,), generator=g2)
    eps = torch.randn(x0.shape, generator=g2)
    assert torch.equal(res["n"], n)
    abar = _abar()
    x0d, epsd, cd = x0.double().numpy(), eps.double().numpy(), cond.double().numpy()

    def net_np(w, x, t, c):
        return w * np.tanh(x * (t + 1) / 50) + c[0] * 0.01

    for i, k in enumerate(n.tolist()):
        a, s = _ref_levels(abar, k)
        x_n = np.float32(a * x0d[i] + s * epsd[i]).astype(np.float64)     # x_n is fed to the nets in float32
        e = net_np(1.0, x_n, k - 1, cd[i])
        x0_hat = np.clip((x_n - s * e) / a, -1, 1)
        mm = max(k - 10, 0)
        am, sm = _ref_levels(abar, mm)
        x_m = am * x0_hat + sm * e                                       # DDIM, eps from the unclipped x0_hat
        tgt = _ref_f(x_m, net_np(0.8, x_m, max(mm - 1, 0), cd[i]), mm, abar, clip=1.0)
        pred = _ref_f(x_n, net_np(0.9, x_n, k - 1, cd[i]), k, abar)
        d = pred - tgt
        want = (d ** 2).mean() if distance == "l2" else math.sqrt((d ** 2).sum() + (0.00054 * 4) ** 2) - 0.00054 * 4
        if weighting == "snr":                                           # eps-space: max(alpha, 1/80)^2 / sigma^2
            want *= max(a, 1 / 80) ** 2 / s ** 2
        assert res["loss"][i].item() == pytest.approx(want, rel=2e-3, abs=1e-6), (k, res["loss"][i].item(), want)
    res["loss"].mean().backward()
    assert student.w.grad is not None and target.w.grad is None and teacher.net.w.grad is None


def test_snr_weight_makes_the_loss_eps_space():
    """w(n) |f(eps + de) - f(eps)|^2 = c_out^2 |de|^2 per element: the snr weight undoes the 1/alpha gain of f."""
    n = torch.tensor([1, 10, 50, 90, 99, 100])
    x = torch.randn(len(n), 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    eps, de = torch.zeros_like(x), 1e-3 * torch.ones_like(x)
    df = M.consistency_from_eps(x, eps + de, n, AC) - M.consistency_from_eps(x, eps, n, AC)
    w = M.loss_weight(n, AC, "snr")
    _, c_out = M.boundary_scalings(n)
    torch.testing.assert_close(w * df.pow(2).flatten(1).mean(1), c_out ** 2 * 1e-6, rtol=1e-6, atol=0)
    assert torch.equal(M.loss_weight(n, AC, "uniform"), torch.ones(len(n), dtype=torch.float64))


def test_sampling_levels_follow_the_documented_schedule():
    assert [M.sampling_levels(100, 10, s) for s in (1, 2, 3, 4)] == [[100], [100, 50], [100, 70, 40],
                                                                      [100, 80, 60, 40]]
    assert M.sampling_levels(20, 5, 2) == [20, 10]
    for bad in (0, 11, 2.0):
        with pytest.raises(ValueError, match="steps"):
            M.sampling_levels(100, 10, bad)


def _sched(steps, T=100, clip=1.0):
    return ConsistencyScheduler(AC[:T] if T == 100 else torch.from_numpy(_abar(T)), skip=10, clip=clip,
                                num_inference_steps=steps)


def test_sample_consistency_against_float64_loop_and_uses_its_step_noise():
    def den(x, t, c):
        return torch.tanh(x * (t.to(x.dtype)[:, None, None] + 1) / 50) + 0.01 * c[:, :1, None]

    g = torch.Generator().manual_seed(6)
    x_T, cond = torch.randn(3, 8, 2, generator=g), torch.randn(3, 4, generator=g)
    abar = _abar()
    for S in (1, 2, 3, 4):
        noise = torch.randn(S, 3, 8, 2, generator=g)
        got = sample_consistency(den, _sched(S), x_T, noise=noise, cond=cond)
        lv = {1: [100], 2: [100, 50], 3: [100, 70, 40], 4: [100, 80, 60, 40]}[S]
        x = x_T.double().numpy()
        for k, n in enumerate(lv):
            e = den(torch.from_numpy(x).float(), torch.full((3,), n - 1), cond).double().numpy()
            x0 = np.stack([_ref_f(x[b], e[b], n, abar, clip=1.0) for b in range(3)])
            if k + 1 < S:
                a, s = _ref_levels(abar, lv[k + 1])
                x = a * x0 + s * noise[k].double().numpy()
            else:
                x = x0
        np.testing.assert_allclose(got.numpy(), x, rtol=1e-4, atol=1e-5)
        # same noise -> same result; the last step's noise is unused; other noise -> another result (S > 1)
        assert torch.equal(sample_consistency(den, _sched(S), x_T, noise=noise.clone(), cond=cond), got)
        n2 = noise.clone()
        n2[-1] += 1
        assert torch.equal(sample_consistency(den, _sched(S), x_T, noise=n2, cond=cond), got)
        if S > 1:
            n3 = noise.clone()
            n3[0] += 1
            assert not torch.allclose(sample_consistency(den, _sched(S), x_T, noise=n3, cond=cond), got)
        # generator-drawn noise is reproducible
        a1 = sample_consistency(den, _sched(S), x_T, cond=cond, generator=torch.Generator().manual_seed(0))
        a2 = sample_consistency(den, _sched(S), x_T, cond=cond, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a1, a2)
    with pytest.raises(ValueError, match="noise must be"):
        sample_consistency(den, _sched(2), x_T, noise=torch.zeros(3, 3, 8, 2), cond=cond)
    with pytest.raises(ValueError, match="ConsistencyScheduler"):
        sample_consistency(den, object(), x_T, cond=cond)


def test_config_rejects_bad_values():
    for kw in ({"skip": 0}, {"solver": "euler"}, {"distance": "l1"}, {"weighting": "karras"}, {"target_ema": 1.0}, {"steps": -1},
               {"lr": 0.0}, {"alpha_min": 1.0}):
        with pytest.raises(ValueError):
            C.ConsistencyConfig(**kw)


# ------------------------------------------------------------------------------------------- end to end
def _tiny_run(tmp_path, **kw):
    cfg, model, norm = tiny_policy_parts()
    from parapolicy.checkpoint import save_policy_dir

    teacher = save_policy_dir(tmp_path / "teacher", cfg, model.state_dict(), norm.state_dict())
    make_tiny_store(tmp_path / "store.zarr")
    base = dict(teacher=str(teacher), out=str(tmp_path / "cm"), steps=4, batch_size=8, skip=5, eval_every=2,
                eval_batch=4, log_every=1, save_every=2, zarr=str(tmp_path / "store.zarr"), val_ratio=0.3)
    return teacher, C.ConsistencyConfig(**dict(base, **kw))


def test_tiny_end_to_end_resume_load_and_sample(tmp_path):
    from eval.config import validate
    from eval.rollout import chunk_noise, n_sampler_steps, predict_chunk
    from parapolicy.policy import SamplerConfig, load_policy

    teacher_dir, cfg = _tiny_run(tmp_path, time_budget_min=0.0)
    assert C.train(cfg) is None                                    # budget 0: stops after one step, saved
    out = tmp_path / "cm"
    st = torch.load(out / "train_state.pt", weights_only=True)
    assert st["step"] == 1 and set(st) >= {"model", "target", "optimizer", "lr_scheduler", "rng", "step"}
    cfg = C.ConsistencyConfig(**dict(vars(cfg), time_budget_min=None))
    summary = C.train(cfg)
    steps_logged = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert steps_logged == [0, 1, 2, 3, 4]                         # resumed at step 1, not restarted
    assert summary["train_steps"] == 4 and np.isfinite(summary["gap_cm2"]) and summary["gap_teacher_ddim2"] >= 0
    # the student trained (its weights left the teacher's) and the target is what was saved
    from parapolicy.checkpoint import load_checkpoint

    ck, tk = load_checkpoint(out / "policy"), load_checkpoint(teacher_dir)
    assert any(not torch.equal(ck.model_state[k], tk.model_state[k]) for k in tk.model_state)
    st = torch.load(out / "train_state.pt", weights_only=True)
    assert all(torch.equal(ck.model_state[k], st["target"][k]) for k in st["target"])

    pol = load_policy(out / "policy", fast="eager")
    assert pol.default_sampler == "consistency" and pol.config["num_inference_steps"] == 2
    assert pol.config["consistency"]["skip"] == 5
    obs = {"obs": torch.rand(2, 2, 20) * 500}
    cond = pol.normalized_condition(obs)
    x_T = torch.randn(2, 8, 2, generator=torch.Generator().manual_seed(0))
    for k in (1, 2, 3, 4):
        noise = torch.randn(k, 2, 8, 2, generator=torch.Generator().manual_seed(k))
        res = pol.predict_action(obs, sampler=SamplerConfig(name="consistency", num_inference_steps=k),
                                 init_noise=x_T, step_noise=noise)
        ref = sample_consistency(pol.denoiser, consistency_scheduler(pol.config, k), x_T, noise=noise, cond=cond)
        ref = pol.normalizer.unnormalize(ref, "action")
        assert torch.allclose(res["action_pred"], ref, atol=1e-5)
        assert res["action"].shape == (2, 4, 2) and torch.isfinite(res["action"]).all()
        # the harness: config validation, S = k step-noise rows, per-(seed, chunk) noise
        _, samplers = validate({"policy": {"path": str(out / "policy")}, "env": {"id": "x"},
                                "sampler": {}, "samplers": [{"name": "consistency", "num_inference_steps": k}],
                                "wandb": {"mode": "disabled"}})
        sc = next(iter(samplers.values()))
        assert n_sampler_steps(pol, sc) == k
        w = np.random.default_rng(0).uniform(0, 500, (2, 20)).astype(np.float32)
        out1, _ = predict_chunk(pol, sc, [7], [0], [w])
        x_T1, z1 = chunk_noise(7, 0, pol.horizon, pol.input_dim, k)
        direct = pol.predict_action({"obs": torch.from_numpy(w)[None]}, sampler=sc, init_noise=x_T1, step_noise=z1)
        assert torch.allclose(out1["action"], direct["action"])
    assert pol.predict_action(obs)["action"].shape == (2, 4, 2)    # its default sampler
    with pytest.raises(ValueError, match="only by the 'consistency' sampler"):
        pol.predict_action(obs, sampler="ddim")
    with pytest.raises(ValueError, match="needs a consistency student"):
        load_policy(teacher_dir, fast="eager").predict_action(obs, sampler="consistency")
    with pytest.raises(ValueError, match="steps"):
        pol.predict_action(obs, sampler={"name": "consistency", "num_inference_steps": 5})   # skip 5 of 20: <= 4

    # rerun after the end: nothing retrained, the policy is kept
    mtime = (out / "policy" / "model.safetensors").stat().st_mtime
    C.train(cfg)
    assert (out / "policy" / "model.safetensors").stat().st_mtime == mtime


def test_zero_steps_writes_the_teacher_as_a_consistency_student(tmp_path):
    from parapolicy.checkpoint import load_checkpoint

    teacher_dir, cfg = _tiny_run(tmp_path, steps=0)
    summary = C.train(cfg)
    assert summary["train_steps"] == 0
    ck, tk = load_checkpoint(tmp_path / "cm" / "policy"), load_checkpoint(teacher_dir)
    assert ck.config["default_sampler"] == "consistency"
    assert all(torch.equal(ck.model_state[k], tk.model_state[k]) for k in tk.model_state)


def test_runtime_runner_passes_the_consistency_sampler(tmp_path):
    from parapolicy.policy import load_policy
    from parapolicy.runtime import InlineExecutor, Runner, RunnerConfig

    _, cfg = _tiny_run(tmp_path, steps=1, eval_every=0)
    C.train(cfg)
    pol = load_policy(tmp_path / "cm" / "policy", fast="eager")
    seen = []
    orig = pol.predict_action

    def spy(*a, **kw):
        seen.append(kw.get("sampler"))
        return orig(*a, **kw)

    pol.predict_action = spy
    runner = Runner(pol, RunnerConfig(sampler={"name": "consistency", "num_inference_steps": 1}, refill_at=0),
                    executor=InlineExecutor())
    a = None
    for k in range(3):
        a = runner.step({"obs": np.full(20, 100.0, dtype=np.float32)}, k * 0.1)
    assert seen and all(s.name == "consistency" and s.num_inference_steps == 1 for s in seen)
    assert a is not None and np.isfinite(a).all()


def test_frontier_lists_the_consistency_student_with_its_sampler(tmp_path):
    from eval import frontier

    _, cfg = _tiny_run(tmp_path, steps=1, eval_every=0)
    C.train(cfg)
    fr = frontier.check_frontier({"frontier": {"consistency_steps": [1, 2], "few_step": [], "warm_start": False,
                                               "paraddpm": False}})
    path, note = frontier.find_consistency(str(tmp_path / "cm"), cwd=tmp_path)
    assert path == str((tmp_path / "cm" / "policy").resolve()) and "consistency:" in note
    assert frontier.find_consistency("auto", cwd=tmp_path)[0] is None
    (tmp_path / "runs").mkdir()
    (tmp_path / "cm").rename(tmp_path / "runs" / "consistency")
    assert frontier.find_consistency("auto", cwd=tmp_path)[0] == str((tmp_path / "runs/consistency/policy").resolve())
    with pytest.raises(ValueError, match="frontier.consistency"):
        frontier.find_consistency(str(tmp_path / "teacher"), cwd=tmp_path)    # not a consistency student
    entries = frontier.build_entries(fr, "t", 100, [], path)
    cm = [e for e in entries if e.family == "consistency"]
    assert [e.label for e in cm] == ["student consistency-1", "student consistency-2"]
    assert {e.group for e in cm} == {"consistency"} and all(e.reference == "ddpm-100" for e in cm)
    assert [e.sampler for e in cm] == [{"name": "consistency", "num_inference_steps": k,
                                        "label": f"consistency-{k}"} for k in (1, 2)]
    with pytest.raises(ValueError, match="consistency_steps"):
        frontier.check_frontier({"frontier": {"consistency_steps": [0]}})


def test_plan_times_steps_and_writes_nothing(tmp_path):
    _, cfg = _tiny_run(tmp_path, out=str(tmp_path / "never"), steps=1000)
    res = C.plan(cfg, n_steps=1)
    assert res["sec_per_step"] > 0 and res["projected_min"] >= 0 and res["steps_in_75_min"] > 0
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_real_teacher_two_steps(tmp_path):
    """On the shipped Push-T policy and the real demonstrations: two training steps write a student that loads
    and samples finite actions at 1-4 steps on the documented levels."""
    from parapolicy.checkpoint import builtin_names
    from parapolicy.data import find_pusht_zarr
    from parapolicy.policy import load_policy

    if "pusht_keypoints" not in builtin_names():
        pytest.skip("needs the built-in pusht_keypoints policy")
    if find_pusht_zarr() is None:
        pytest.skip("needs the Push-T replay buffer (../shared/pusht/pusht_cchi_v7_replay.zarr)")
    cfg = C.ConsistencyConfig(out=str(tmp_path / "cm"), steps=2, batch_size=16, eval_batch=8, eval_every=0)
    summary = C.train(cfg)
    assert np.isfinite(summary["gap_cm2"]) and summary["gap_teacher_ddim2"] > 0
    pol = load_policy(summary["policy"], fast="eager")
    obs = {"obs": torch.full((1, 2, 20), 256.0)}
    for k, lv in ((1, [100]), (2, [100, 50]), (3, [100, 70, 40]), (4, [100, 80, 60, 40])):
        assert pol.scheduler("consistency", k).levels == lv
        assert torch.isfinite(pol.predict_action(obs, sampler={"name": "consistency",
                                                               "num_inference_steps": k})["action"]).all()

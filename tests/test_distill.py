"""Progressive distillation: target math against independent computations, grids, a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from parapolicy import distill as D
from parapolicy import distill_math as M
from parapolicy import distill_score as S
from parapolicy.ddim_teacher import DDIMTeacher
from parapolicy.schedule import alpha_sigma

T = 100
TEACHER_SCHED = {"num_train_timesteps": T, "beta_schedule": "squaredcos_cap_v2", "variance_type": "fixed_small",
                 "clip_sample": True, "prediction_type": "epsilon"}




def _ac() -> torch.Tensor:
    from diffusers import DDPMScheduler
    return DDPMScheduler(**TEACHER_SCHED).alphas_cumprod.to(torch.float64)


def _ddim(sched_kwargs: dict, n: int):
    from parapolicy.policy import make_scheduler
    return make_scheduler("ddim", sched_kwargs, n)


# ------------------------------------------------------------------------------------------------ math
def test_conversions_eps_x_v_round_trip():
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 7, 50, 97, 99])
    a, s = alpha_sigma(_ac(), t)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(a), atol=1e-12)
    x = torch.randn(5, 4, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 4, 2, generator=g, dtype=torch.float64)
    ab, sb = a[:, None, None], s[:, None, None]
    z = ab * x + sb * eps
    v = ab * eps - sb * x  # paper's definition
    for kind, out in (("epsilon", eps), ("sample", x), ("v_prediction", v)):
        assert torch.allclose(M.pred_to_x(out, z, a, s, kind), x, atol=1e-7), kind
        assert torch.allclose(M.pred_to_eps(out, z, a, s, kind), eps, atol=1e-7 if kind != "epsilon" else 0), kind
    assert torch.allclose(M.x_to_v(x, z, a, s), v, atol=1e-9)
    a0, s0 = alpha_sigma(_ac(), torch.tensor([-1]))
    assert a0.item() == 1.0 and s0.item() == 0.0
    with pytest.raises(ValueError, match="prediction_type"):
        M.pred_to_x(x, z, a, s, "velocity")


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_matches_diffusers(prediction_type, clip):
    """Our batched DDIM step equals DDIMScheduler.step (eta=0) along a 25-step student-style grid."""
    n = 25
    kw = dict(TEACHER_SCHED, prediction_type=prediction_type, clip_sample=clip, timestep_spacing="leading",
              steps_offset=3)
    sch = _ddim(kw, n)
    ac = sch.alphas_cumprod.to(torch.float64)
    g = torch.Generator().manual_seed(1)
    z = 1.5 * torch.randn(3, 8, 2, generator=g)
    for t in sch.timesteps.tolist():
        out = torch.randn(3, 8, 2, generator=g)
        ref = sch.step(out, t, z).prev_sample
        s = t - T // n
        tt, ss = torch.full((3,), t), torch.full((3,), s)
        a_t, s_t = alpha_sigma(ac, tt)
        a_s, s_s = alpha_sigma(ac, ss)
        ours = M.ddim_step(out.double(), z.double(), a_t, s_t, a_s, s_s, prediction_type, 1.0 if clip else None)
        assert torch.allclose(ours.float(), ref, atol=2e-5, rtol=1e-4), (t, (ours.float() - ref).abs().max())
        z = ref


def _toy_eps(z: torch.Tensor, t: int) -> torch.Tensor:
    """A fixed nonlinear 'teacher' (no learning needed): eps_hat(z, t)."""
    return torch.tanh(0.8 * z + 0.01 * t) + 0.1 * torch.sin(3 * z)


@pytest.mark.parametrize("parameterization", ["v", "x"])
def test_target_lands_on_teacher_two_steps_via_diffusers(parameterization):
    """Independent check through diffusers: two teacher DDIMScheduler steps (epsilon, clipped, 50-step grid)
    from z_t, then ONE student DDIMScheduler step (the student's checkpoint kwargs, 25 steps) fed our target,
    must land on the same point."""
    teacher_grid = M.halve_grid(M.scheduler_grid(TEACHER_SCHED, T), T)                  # 50 steps
    teacher_kw = dict(TEACHER_SCHED, **M.grid_scheduler_fields(teacher_grid, T))
    student_grid = M.halve_grid(teacher_grid, T)                                       # 25 steps
    cfg = D.DistillConfig(parameterization=parameterization)
    student_kw = D.student_config({"scheduler": TEACHER_SCHED}, student_grid, cfg, {})["scheduler"]
    tsch, ssch = _ddim(teacher_kw, len(teacher_grid)), _ddim(student_kw, len(student_grid))
    assert tuple(tsch.timesteps.tolist()) == teacher_grid and tuple(ssch.timesteps.tolist()) == student_grid
    for sch in (tsch, ssch):  # run diffusers' step math in float64 too, so only the formulas are compared
        sch.alphas_cumprod = sch.alphas_cumprod.to(torch.float64)
        sch.final_alpha_cumprod = sch.final_alpha_cumprod.to(torch.float64)
    ac = tsch.alphas_cumprod
    g = torch.Generator().manual_seed(2)
    for t in student_grid:
        z = torch.randn(4, 8, 2, generator=g, dtype=torch.float64)
        t_mid = t - (T // len(teacher_grid))
        z_mid = tsch.step(_toy_eps(z, t), t, z).prev_sample
        z_end = tsch.step(_toy_eps(z_mid, t_mid), t_mid, z_mid).prev_sample
        t_end = t_mid - T // len(teacher_grid)
        b = lambda v: torch.full((4,), v)  # noqa: E731
        a_t, s_t = alpha_sigma(ac, b(t))
        a_e, s_e = alpha_sigma(ac, b(t_end))
        x_t = M.distill_target_x(z, z_end, a_t, s_t, a_e, s_e)
        target = M.x_to_v(x_t, z, a_t, s_t) if parameterization == "v" else x_t
        landed = ssch.step(target, t, z).prev_sample
        assert torch.allclose(landed, z_end, atol=1e-9, rtol=0), (t, (landed - z_end).abs().max())


def test_point_mass_target_is_the_point():
    """Data = one point mu: the exact teacher predicts x_hat = mu everywhere, DDIM is exact, and the student's
    target must be mu for every t and z (closed form), with the teacher's clipping on."""
    ac = _ac()
    mu = torch.tensor([0.3, -0.7], dtype=torch.float64)
    teacher_grid = M.scheduler_grid(TEACHER_SCHED, T)
    student_grid = M.halve_grid(teacher_grid, T)
    g = torch.Generator().manual_seed(3)
    for t in student_grid:
        z = torch.randn(6, 8, 2, generator=g, dtype=torch.float64) * 2
        tt = torch.full((6,), t)
        path = [tt, tt - 1, tt - 2]
        zz = z
        for a, b in zip(path[:-1], path[1:]):
            a_t, s_t = alpha_sigma(ac, a)
            a_s, s_s = alpha_sigma(ac, b)
            eps = (zz - a_t[:, None, None] * mu) / s_t[:, None, None]  # exact eps of the point mass
            zz = M.ddim_step(eps, zz, a_t, s_t, a_s, s_s, "epsilon", 1.0)
        a_t, s_t = alpha_sigma(ac, tt)
        a_e, s_e = alpha_sigma(ac, tt - 2)
        x_t = M.distill_target_x(z, zz, a_t, s_t, a_e, s_e)
        assert torch.allclose(x_t, mu.expand_as(x_t), atol=1e-6 if t < 99 else 1e-3), (t, (x_t - mu).abs().max())


def test_gaussian_data_float64_rederivation():
    """Gaussian data x ~ N(m, q^2): the exact teacher is affine, so two DDIM steps are an affine map z'' = A z + B
    and the one-step target is affine too. Re-derived here with numpy scalars (no torch, no shared code):
    one DDIM step with x_hat = c0 + c1 z is z_s = (sigma_s/sigma_t) z + (alpha_s - sigma_s alpha_t/sigma_t) x_hat;
    the target solves alpha'' x + sigma'' (z - alpha x)/sigma = z'' for x."""
    m, q = 0.2, 0.4
    acn = _ac().numpy()

    def a_s(t):
        return (1.0, 0.0) if t < 0 else (float(np.sqrt(acn[t])), float(np.sqrt(1 - acn[t])))

    def post(t):  # E[x | z_t] = c0 + c1 z
        a, s = a_s(t)
        c1 = a * q * q / (a * a * q * q + s * s)
        return m - c1 * a * m, c1

    def step(t, s_, A, B):  # apply one exact-teacher DDIM step to the affine map z_t = A z + B
        (at, st), (as_, ss) = a_s(t), a_s(s_)
        c0, c1 = post(t)
        k = as_ - ss * at / st
        return (ss / st) * A + k * c1 * A, (ss / st) * B + k * (c0 + c1 * B)

    ac = _ac()
    z = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(7, 1, 1)
    for t, stride in ((99, 2), (51, 2), (7, 4), (3, 2), (95, 16)):
        A, B = step(t - stride, t - 2 * stride, *step(t, t - stride, 1.0, 0.0))
        z_end_np = A * z.numpy() + B
        (at, st), (ae, se) = a_s(t), a_s(t - 2 * stride)
        r = se / st
        x_np = (z_end_np - r * z.numpy()) / (ae - r * at)
        # ours, through the torch code path with the exact Gaussian denoiser
        tt = torch.full((7,), t)
        zz = z.clone()
        for a_, b_ in ((tt, tt - stride), (tt - stride, tt - 2 * stride)):
            c0, c1 = post(int(a_[0]))
            at_, st_ = alpha_sigma(ac, a_)
            as__, ss__ = alpha_sigma(ac, b_)
            eps = (zz - at_[:, None, None] * (c0 + c1 * zz)) / st_[:, None, None]
            zz = M.ddim_step(eps, zz, at_, st_, as__, ss__, "epsilon", None)
        at_, st_ = alpha_sigma(ac, tt)
        ae_, se_ = alpha_sigma(ac, tt - 2 * stride)
        x_ours = M.distill_target_x(z, zz, at_, st_, ae_, se_)
        np.testing.assert_allclose(x_ours.numpy(), x_np, rtol=1e-9, atol=1e-9)


class _PointMass(torch.nn.Module):
    """Exact denoiser of data concentrated on mu, in a chosen parameterisation: net(z, t, global_cond)."""

    def __init__(self, mu: torch.Tensor, kind: str):
        super().__init__()
        self.mu, self.kind, self.ac = mu, kind, _ac()
        self.scale = torch.nn.Parameter(torch.ones(()))  # something for autograd to reach

    def forward(self, z, t, global_cond=None):
        a, s = alpha_sigma(self.ac, t)
        a, s = a[:, None, None].float(), s[:, None, None].float()
        eps = (z - a * self.mu) / s
        out = {"sample": self.mu.expand_as(z), "epsilon": eps, "v_prediction": a * eps - s * self.mu}[self.kind]
        return self.scale * out


@pytest.mark.parametrize("parameterization", ["v", "x"])
def test_distill_batch_exact_student_has_zero_loss(parameterization):
    """Point-mass data: teacher and student both exact (teacher epsilon with clipping, student in its own
    parameterisation), so the loss and the landing error vanish on every grid; a wrong student does not."""
    mu = torch.tensor([0.3, -0.7])
    teacher = DDIMTeacher(_PointMass(mu, "epsilon"), "epsilon", 1.0, _ac())
    x0, cond = mu.expand(16, 8, 2).clone(), torch.zeros(16, 3)
    g100 = M.scheduler_grid(TEACHER_SCHED, T)
    for tgrid in (g100, M.halving_schedule(g100, T, 2)[-1]):
        sgrid = M.halve_grid(tgrid, T)
        stride = tgrid[0] - tgrid[1]
        student = _PointMass(mu, M.PARAMETERIZATIONS[parameterization])
        res = D.distill_batch(student, teacher, x0, cond, sgrid, stride, parameterization, "truncated_snr",
                              generator=torch.Generator().manual_seed(5))
        assert set(res["t"].tolist()) <= set(sgrid)
        assert res["loss"].max() < 1e-6 and res["landing"].max() < 1e-9, (res["loss"].max(), res["landing"].max())
        res["loss"].mean().backward()
        with torch.no_grad():
            student.scale.fill_(1.1)
        res = D.distill_batch(student, teacher, x0, cond, sgrid, stride, parameterization, "truncated_snr",
                              generator=torch.Generator().manual_seed(5))
        assert res["loss"].min() > 1e-4


def test_loss_weights_x_and_v_agree():
    ac = _ac()
    t = torch.tensor([1, 15, 50, 95, 99])
    a, s = alpha_sigma(ac, t)
    snr = a ** 2 / s ** 2
    assert torch.allclose(M.loss_weight(a, s, "snr_plus_one", "v"), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(M.loss_weight(a, s, "truncated_snr", "x"), torch.maximum(snr, torch.ones_like(snr)))
    g = torch.Generator().manual_seed(4)
    z, xh, xt = (torch.randn(5, 3, 2, generator=g, dtype=torch.float64) for _ in range(3))
    for w in M.WEIGHTINGS:
        ex = M.loss_weight(a, s, w, "x")[:, None, None] * (xh - xt) ** 2
        ev = M.loss_weight(a, s, w, "v")[:, None, None] * (M.x_to_v(xh, z, a, s) - M.x_to_v(xt, z, a, s)) ** 2
        assert torch.allclose(ex, ev, rtol=1e-9)
    with pytest.raises(ValueError, match="weighting"):
        M.loss_weight(a, s, "snr", "v")


# ------------------------------------------------------------------------------------------------ grids
def test_halving_grids_for_100_train_steps():
    g100 = M.scheduler_grid(TEACHER_SCHED, T)
    assert g100 == tuple(range(99, -1, -1))
    grids = M.halving_schedule(g100, T, 4)
    assert [len(g) for g in grids] == [50, 25, 12, 6]
    assert grids[0] == tuple(range(99, 0, -2))
    assert grids[1] == tuple(range(99, 0, -4))
    assert grids[2] == tuple(range(95, 0, -8))      # 25 is odd: the teacher's point 99 is dropped
    assert grids[3] == tuple(range(95, 0, -16))
    for parent, child in zip([g100] + grids[:-1], grids):
        assert set(child) <= set(parent)
        stride = parent[0] - parent[1] if len(parent) > 1 else T
        for t in child:  # each student step spans exactly two teacher steps, the last one ends clean
            assert t - stride in parent and (t - 2 * stride in parent or t - 2 * stride < 0)
        # the policy's DDIM scheduler reproduces the student grid and steps along it
        sch = _ddim(dict(TEACHER_SCHED, **M.grid_scheduler_fields(child, T)), len(child))
        assert tuple(sch.timesteps.tolist()) == child
        assert child[-1] - T // len(child) < 0
        assert all(a - T // len(child) == b for a, b in zip(child[:-1], child[1:]))
    with pytest.raises(ValueError, match="round 5 of 5.*100 // 3"):
        M.halving_schedule(g100, T, 5)
    with pytest.raises(ValueError, match="not uniform"):
        M.halve_grid((99, 90, 50, 0), T)
    with pytest.raises(ValueError, match="clean"):
        M.halve_grid((98, 88, 78), T)  # ends at 78: its last step would not reach the clean sample


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="parameterization"):
        D.DistillConfig(parameterization="eps")
    with pytest.raises(ValueError, match="weighting"):
        D.DistillConfig(weighting="min_snr")
    with pytest.raises(ValueError, match="rounds"):
        D.DistillConfig(rounds=0)
    cfg = D.parse_args(["--teacher", "x", "--rounds", "2", "--no-use-ema", "--lr", "3e-5"])
    assert cfg.rounds == 2 and cfg.use_ema is False and cfg.lr == 3e-5 and cfg.teacher == "x"


# --------------------------------------------------------------------------------------- end to end
def _tiny_teacher(tmp_path):
    from parapolicy.checkpoint import save_policy_dir
    from parapolicy.model import ConditionalUnet1D
    from parapolicy.normalizer import LinearNormalizer

    torch.manual_seed(0)
    cfg = {"policy_type": "diffusion_unet_lowdim", "obs_key": "obs", "obs_dim": 3, "action_dim": 2, "horizon": 8,
           "n_obs_steps": 2, "n_action_steps": 4, "obs_as_global_cond": True, "num_inference_steps": 20,
           "model": {"input_dim": 2, "local_cond_dim": None, "global_cond_dim": 6, "diffusion_step_embed_dim": 16,
                     "down_dims": [8, 16], "kernel_size": 3, "n_groups": 4, "cond_predict_scale": True},
           "scheduler": dict(TEACHER_SCHED), "training": {"steps": 0}}
    net = ConditionalUnet1D(**cfg["model"])
    obs = torch.randn(64, 2, 3)
    act = torch.cumsum(0.1 * torch.randn(64, 8, 2), dim=1)
    norm = LinearNormalizer().fit({"obs": obs, "action": act})
    path = save_policy_dir(tmp_path / "teacher", cfg, net.state_dict(), norm.state_dict())
    n_obs = norm.normalize(obs, "obs").reshape(64, -1)
    data = ((n_obs[:48], norm.normalize(act, "action")[:48]), (n_obs[48:], norm.normalize(act, "action")[48:]))
    return path, data, obs


def test_tiny_end_to_end_two_rounds_resume_and_load(tmp_path):
    from parapolicy.policy import load_policy

    teacher, data, obs = _tiny_teacher(tmp_path)
    out = tmp_path / "distill"
    cfg = D.DistillConfig(teacher=str(teacher), out=str(out), rounds=2, steps_per_round=3, first_round_steps=4,
                          batch_size=8,
                          warmup_steps=1, eval_batch=4, log_every=1, save_every=2, time_budget_min=0.0)
    assert D.distill(cfg, data=data) == []           # budget 0: stops after the first step, state saved
    st = torch.load(out / "round1" / "train_state.pt", weights_only=True)
    assert st["step"] == 1
    cfg = D.DistillConfig(**dict(vars(cfg), time_budget_min=None))
    done = D.distill(cfg, data=data)
    assert [d["student_steps"] for d in done] == [10, 5]   # teacher DDIM-20: 95, 90, .., 0
    steps_logged = [json.loads(x)["step"] for x in (out / "round1" / "log.jsonl").read_text().splitlines()]
    assert steps_logged == [1, 2, 3, 4]              # resumed at step 1, not restarted
    assert [d["train_steps"] for d in done] == [4, 3]
    for d in done:
        assert np.isfinite(d["val_loss"]) and np.isfinite(d["gap_student"]) and d["gap_teacher_same_steps"] >= 0
    assert "gap_student_vs_original" not in done[0] and np.isfinite(done[1]["gap_student_vs_original"])
    assert done[1]["gap_original_same_steps"] > 0   # an untrained net's DDIM-5 differs from its DDIM-20
    assert json.loads((out / "students.json").read_text())[1]["steps"] == 5
    # rerun: nothing retrained
    mtime = (out / "round2" / "policy" / "model.safetensors").stat().st_mtime
    assert len(D.distill(cfg, data=data)) == 2
    assert (out / "round2" / "policy" / "model.safetensors").stat().st_mtime == mtime

    pol = load_policy(out / "round2" / "policy", fast="eager")
    sk = pol.config["scheduler"]
    assert sk["prediction_type"] == "v_prediction" and sk["clip_sample"] is False
    assert pol.config["num_inference_steps"] == 5 and pol.config["default_sampler"] == "ddim"
    assert tuple(pol.scheduler("ddim").timesteps.tolist()) == (95, 75, 55, 35, 15)
    assert pol.config["distillation"]["timesteps"] == [95, 75, 55, 35, 15]
    # the student's weights differ from the teacher's (it trained) and sample finite actions on its grid
    stu = DDIMTeacher.from_checkpoint(D.load_checkpoint(out / "round2" / "policy"))
    x_T = torch.randn(2, 8, 2, generator=torch.Generator().manual_seed(0))
    cond = pol.normalized_condition({"obs": obs[:2]})
    x0 = stu.sample(x_T, cond, (95, 75, 55, 35, 15))
    assert torch.isfinite(x0).all()
    # the policy's own DDIM scheduler (diffusers step loop) with the policy's denoiser gives the same sample
    sch = pol.scheduler("ddim")
    z = x_T.clone()
    with torch.no_grad():
        for t in sch.timesteps:
            z = sch.step(pol.denoiser(z, t.expand(2), cond), int(t), z).prev_sample
    assert torch.allclose(z, x0, atol=1e-4), (z - x0).abs().max()


def test_student_runs_through_policy_predict_action(tmp_path):
    """load_policy(student).predict_action(obs, sampler="ddim") runs the student with its own step count and
    equals our DDIM loop from the same x_T (needs parapolicy.sampling)."""
    pytest.importorskip("parapolicy.sampling")
    from parapolicy.policy import load_policy

    teacher, data, obs = _tiny_teacher(tmp_path)
    cfg = D.DistillConfig(teacher=str(teacher), out=str(tmp_path / "d"), rounds=1, steps_per_round=2, batch_size=8,
                          eval_batch=4, parameterization="x")
    (summary,) = D.distill(cfg, data=data)
    pol = load_policy(summary["policy"], fast="eager")
    x_T = torch.randn(2, 8, 2, generator=torch.Generator().manual_seed(0))
    res = pol.predict_action({"obs": obs[:2]}, sampler="ddim", init_noise=x_T)
    stu = DDIMTeacher.from_checkpoint(D.load_checkpoint(summary["policy"]))
    ref = stu.sample(x_T, pol.normalized_condition({"obs": obs[:2]}), tuple(range(95, 0, -10)))
    ref = pol.normalizer.unnormalize(ref, "action")
    assert torch.allclose(res["action_pred"], ref, atol=1e-4), (res["action_pred"] - ref).abs().max()
    # the student's default sampler is the parallel DDIM on the same grid; exact at tol=0
    assert pol.default_sampler == "paraddim"
    par = pol.predict_action({"obs": obs[:2]}, sampler={"name": "paraddim", "tol": 0.0, "window": 4}, init_noise=x_T)
    assert torch.allclose(par["action_pred"], ref, atol=1e-4), (par["action_pred"] - ref).abs().max()


def test_plan_times_steps_and_writes_nothing(tmp_path):
    teacher, data, _ = _tiny_teacher(tmp_path)
    cfg = D.DistillConfig(teacher=str(teacher), out=str(tmp_path / "never"), rounds=2, steps_per_round=1000,
                          batch_size=8)
    res = D.plan(cfg, data=data, n_steps=2)
    assert res["student_steps"] == [10, 5] and res["sec_per_step"] > 0
    assert len(res["min_per_round"]) == 2 and res["min_all_rounds"] >= max(res["min_per_round"])
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_real_teacher_one_tiny_round(tmp_path):
    """On the shipped (or the training run's interim) Push-T policy and the real demonstrations: a 3-step round
    writes a 50-step student that loads and samples finite actions."""
    from parapolicy.checkpoint import builtin_names
    from parapolicy.data import find_pusht_zarr
    from parapolicy.policy import load_policy

    if "pusht_keypoints" in builtin_names():
        teacher = "pusht_keypoints"
    elif Path("runs/pusht_keypoints/policy/config.json").exists():
        teacher = "runs/pusht_keypoints/policy"
    else:
        pytest.skip("needs a trained pusht_keypoints policy (built in, or runs/pusht_keypoints/policy)")
    if find_pusht_zarr() is None:
        pytest.skip("needs the Push-T replay buffer (../shared/pusht/pusht_cchi_v7_replay.zarr)")
    cfg = D.DistillConfig(teacher=teacher, out=str(tmp_path / "d"), rounds=1, steps_per_round=3, batch_size=16,
                          eval_batch=8)
    (summary,) = D.distill(cfg)
    pol = load_policy(summary["policy"], fast="eager")
    assert pol.config["num_inference_steps"] == 50 and np.isfinite(summary["gap_student"])


def test_score_cmd_reads_results_json_or_stdout(tmp_path):
    import sys
    write = ("import json,os,sys; os.makedirs(sys.argv[2], exist_ok=True); json.dump({'samplers': {'ddim': "
             "{'mean_score': 0.5, 'n_episodes': 2, 'latency_ms': {'p50': 3.0}, 'nfe_per_call': {'mean': 6}}}}, "
             "open(sys.argv[2] + '/results.json', 'w')); print(sys.argv[1])")
    cmd = f"{sys.executable} -c \"{write}\" {{policy}} {{out}}"
    res = S.run_score_cmd(cmd, tmp_path / "pol", tmp_path / "score")
    assert res == {"ddim": {"mean_score": 0.5, "mean_score_ci95": None, "pc_success": None, "n_episodes": 2,
                            "latency_ms_p50": 3.0, "nfe_per_call": 6}}
    res = S.run_score_cmd(f"{sys.executable} -c \"print('x'); print('{{\\\"mean_score\\\": 0.25}}')\"",
                          tmp_path / "pol", tmp_path / "none")
    assert res == {"mean_score": 0.25}
    with pytest.raises(RuntimeError, match="failed"):
        S.run_score_cmd(f"{sys.executable} -c \"raise SystemExit(3)\"", tmp_path / "pol", tmp_path / "none")


def test_import_is_light():
    import subprocess
    import sys
    code = ("import sys, parapolicy.distill; print([m for m in ('hydra', 'wandb', 'gymnasium', 'pymunk', 'zarr') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

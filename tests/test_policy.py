import pytest
import torch

from parapolicy import load_policy
from parapolicy.checkpoint import save_policy_dir
from parapolicy.policy import SAMPLERS, SamplerConfig
from tests.conftest import tiny_policy_parts
from tests.sampling_helpers import accepted_input_residuals


def obs_batch(policy, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.rand(b, policy.n_obs_steps, 20, generator=g) * 500}


def noise(policy, b=2, steps=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, policy.horizon, policy.input_dim, generator=g),
            torch.randn(steps, b, policy.horizon, policy.input_dim, generator=g))


@pytest.mark.parametrize("name", [s for s in SAMPLERS if s != "consistency"])  # students only: test_consistency
def test_every_sampler_returns_chunks_of_the_right_shape(tiny_policy_dir, name):
    p = load_policy(tiny_policy_dir)
    out = p.predict_action(obs_batch(p), sampler=SamplerConfig(name=name, num_inference_steps=10),
                           generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (2, p.n_action_steps, 2)
    assert out["action_pred"].shape == (2, p.horizon, 2)
    torch.testing.assert_close(out["action"], out["action_pred"][:, p.action_start:p.action_start + p.n_action_steps])
    assert torch.isfinite(out["action"]).all()
    st = out["stats"]  # every sampler reports its rounds (sequential: steps) and whether it was capped
    assert st.iterations == (10 if not name.startswith("para") else st.iterations) and not st.capped
    assert st.iterations >= 1 and all(st.converged) and st.trajectory.shape[0] == 11


def test_parallel_equals_sequential_on_the_same_noise(tiny_policy_dir):
    p = load_policy(tiny_policy_dir)
    x_T, z = noise(p)
    seq = p.predict_action(obs_batch(p), sampler="ddpm", init_noise=x_T, step_noise=z)
    par = p.predict_action(obs_batch(p), sampler=SamplerConfig("paraddpm", window=5, tol=0.0),
                           init_noise=x_T, step_noise=z)
    torch.testing.assert_close(par["action_pred"], seq["action_pred"], atol=1e-3, rtol=1e-5)
    assert all(par["stats"].converged) and max(accepted_input_residuals(par["stats"]), default=0.0) == 0.0
    # the default tolerance: fewer rounds than sequential steps, the per-step guarantee, close actions
    loose = p.predict_action(obs_batch(p), sampler=SamplerConfig("paraddpm", window=5),
                             init_noise=x_T, step_noise=z)
    assert loose["stats"].iterations < 20 and max(accepted_input_residuals(loose["stats"])) <= 0.1 + 1e-6
    span = float(seq["action_pred"].max() - seq["action_pred"].min())
    assert float((loose["action_pred"] - seq["action_pred"]).abs().max()) < 0.05 * span
    # atol "auto" reaches the sampler through SamplerConfig: a positive floor, still close to sequential
    auto = p.predict_action(obs_batch(p), sampler=SamplerConfig("paraddpm", window=5, atol="auto"),
                            init_noise=x_T, step_noise=z)
    assert 0 < auto["stats"].atol < 0.1 and all(auto["stats"].converged)
    assert float((auto["action_pred"] - seq["action_pred"]).abs().max()) < 0.05 * span
    # first_window reaches the sampler: the zero start's first round has 2 points, the later ones 5
    fw = p.predict_action(obs_batch(p), sampler=SamplerConfig("paraddpm", window=5, start="zero", first_window=2),
                          init_noise=x_T, step_noise=z)
    sizes = [[e - b for _, b, e in w] for w in fw["stats"].windows]
    assert sizes[0] == [2] * x_T.shape[0] and max(max(w) for w in sizes[1:]) == 5
    assert float((fw["action_pred"] - seq["action_pred"]).abs().max()) < 0.05 * span


def test_global_cond_is_normalised_and_flattened_in_key_order(tiny_policy_dir):
    p = load_policy(tiny_policy_dir)
    obs = obs_batch(p)
    cond = p.normalized_condition(obs)
    expected = p.normalizer.normalize(obs["obs"], "obs").reshape(2, -1)
    torch.testing.assert_close(cond, expected)


def test_inpainting_policy_samples(tmp_path):
    cfg, model, norm = tiny_policy_parts(global_cond=False)
    path = save_policy_dir(tmp_path / "inpaint", cfg, model.state_dict(), norm.state_dict())
    p = load_policy(path)
    assert p.input_dim == 22 and not p.global_cond
    out = p.predict_action(obs_batch(p), sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (2, p.n_action_steps, 2)


def test_bad_observations_are_named(tiny_policy_dir):
    p = load_policy(tiny_policy_dir)
    with pytest.raises(ValueError, match="lacks"):
        p.predict_action({"state": torch.zeros(1, 2, 20)}, sampler="ddpm")
    with pytest.raises(ValueError, match=r"shape \(B, 2, 20\)"):
        p.predict_action({"obs": torch.zeros(1, 3, 20)}, sampler="ddpm")
    bad = torch.zeros(1, 2, 20)
    bad[0, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        p.predict_action({"obs": bad}, sampler="ddpm")
    with pytest.raises(ValueError, match="init_noise"):
        p.predict_action({"obs": torch.zeros(1, 2, 20)}, sampler="ddpm", init_noise=torch.zeros(1, 4, 2))


def test_sampler_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown sampler 'fast'"):
        SamplerConfig(name="fast")
    with pytest.raises(ValueError, match="window"):
        SamplerConfig(window=0)
    with pytest.raises(ValueError, match="tol"):
        SamplerConfig(tol=-1)
    with pytest.raises(ValueError, match="max_iters"):
        SamplerConfig(max_iters=0)
    with pytest.raises(ValueError, match="update must be one of"):
        SamplerConfig(update="newton")
    with pytest.raises(ValueError, match="start must be one of"):
        SamplerConfig(start="x_T")
    with pytest.raises(ValueError, match="guess 'none' never uses"):
        SamplerConfig(start="zero", guess="none")
    with pytest.raises(ValueError, match="atol must be a finite number >= 0 or 'auto'"):
        SamplerConfig(atol="loose")
    assert SamplerConfig(atol="auto").atol == "auto"
    with pytest.raises(ValueError, match="first_window must be None or an int >= 1"):
        SamplerConfig(first_window=0)


def test_act_queues_a_chunk_and_predicts_once_per_chunk(tiny_policy_dir):
    p = load_policy(tiny_policy_dir)
    calls = []
    real = p.predict_action
    p.predict_action = lambda *a, **k: calls.append(1) or real(*a, **k)
    g = torch.Generator().manual_seed(0)
    actions = [p.act({"obs": torch.rand(20) * 500}, sampler="ddpm", generator=g) for _ in range(2 * p.n_action_steps)]
    assert len(calls) == 2 and all(a.shape == (2,) for a in actions)
    p.reset()
    p.act({"obs": torch.rand(20)}, sampler="ddpm", generator=g)
    assert len(calls) == 3


def test_warm_start_in_act_uses_the_previous_trajectory(tiny_policy_dir):
    p = load_policy(tiny_policy_dir)
    import parapolicy.sampling as sampling

    cfg = SamplerConfig("paraddpm", window=4, warm_start=True)
    g = torch.Generator().manual_seed(0)
    seen, real = [], sampling.sample_picard

    def spy(*args, **kw):
        seen.append(None if kw.get("init") is None else kw["init"].clone())
        out = real(*args, **kw)
        seen.append(out[1].trajectory.clone())
        return out

    sampling.sample_picard = spy
    try:
        for _ in range(2 * p.n_action_steps):
            p.act({"obs": torch.full((20,), 100.0)}, sampler=cfg, generator=g)
    finally:
        sampling.sample_picard = real
    first_init, first_traj, second_init = seen[0], seen[1], seen[2]
    assert first_init is None and second_init is not None
    torch.testing.assert_close(second_init, p.shift_trajectory(first_traj, p.n_action_steps, cfg))


# ------------------------------------------------------------------------------- UNet path (fast default)
def test_resolve_fast_modes_and_errors():
    from parapolicy.fast import has_fast_bf16
    from parapolicy.policy import resolve_fast

    # auto = the fastest exact path; bf16 only with a recorded, measured parity on a CPU that has fast bf16
    assert resolve_fast("auto") == "fp32" and resolve_fast("auto", "cuda") == "eager"
    record = {"inference_parity": {"path": "bf16", "command": "python -m eval.run ...", "result": "+0.001"}}
    assert resolve_fast("auto", "cpu", record) == ("bf16" if has_fast_bf16("cpu") else "fp32")
    assert resolve_fast("auto", "cpu", {"inference_parity": {"path": "bf16"}}) == "fp32"  # no evidence
    assert [resolve_fast(m) for m in ("bf16", "fp32", "eager", True, False, None)] == \
        ["bf16", "fp32", "eager", "fp32", "eager", "eager"]
    with pytest.raises(ValueError, match="unknown fast denoiser mode 'turbo'"):
        resolve_fast("turbo")


def test_load_policy_default_is_exact_and_bf16_is_opt_in(tiny_policy_dir):
    from parapolicy.fast import has_fast_bf16

    eager = load_policy(tiny_policy_dir, fast="eager")
    auto = load_policy(tiny_policy_dir)
    bf16 = load_policy(tiny_policy_dir, fast="bf16")
    assert eager.inference == "eager" and auto.inference == "fast-fp32"
    assert bf16.inference == ("fast-bf16" if has_fast_bf16("cpu") else "fast-fp32")
    x_T, z = noise(eager, steps=10)
    sc = SamplerConfig("ddpm", num_inference_steps=10)
    ref = eager.predict_action(obs_batch(eager), sampler=sc, init_noise=x_T, step_noise=z)["action_pred"]
    got = auto.predict_action(obs_batch(auto), sampler=sc, init_noise=x_T, step_noise=z)["action_pred"]
    assert (got - ref).abs().max() <= 1e-3                       # env units (the actions span hundreds)
    low = bf16.predict_action(obs_batch(bf16), sampler=sc, init_noise=x_T, step_noise=z)["action_pred"]
    assert torch.isfinite(low).all() and (low - ref).abs().max() < 0.05 * (ref.max() - ref.min())
    eager.set_fast("fp32")
    assert eager.inference == "fast-fp32"
    eager.use_denoiser(None)
    assert eager.inference == "eager"
    with pytest.raises(ValueError, match="unknown fast denoiser mode"):
        load_policy(tiny_policy_dir, fast="fastest")


def test_auto_window_uses_the_current_denoisers_curve(tiny_policy_dir, monkeypatch):
    """window="auto" measures the denoiser the policy calls now (fast path included), once per shape, and
    measures again after use_denoiser swaps it."""
    import parapolicy.sampling.cost as cost

    p = load_policy(tiny_policy_dir, fast="eager")
    measured = []
    real = cost.measure_latency

    def spy(den, x, cond, batches, **kw):
        measured.append((p.inference, max(batches)))
        return real(den, x, cond, batches, repeats=1, warmup=0)

    monkeypatch.setattr(cost, "measure_latency", spy)
    sc = SamplerConfig("paraddpm", num_inference_steps=10, window="auto")
    out = p.predict_action(obs_batch(p), sampler=sc, generator=torch.Generator().manual_seed(0))
    p.predict_action(obs_batch(p), sampler=sc, generator=torch.Generator().manual_seed(1))
    assert measured == [("eager", 20)]          # batch 2 x 10 steps, measured once
    assert 1 <= out["stats"].window <= 10
    p.set_fast("fp32")
    p.predict_action(obs_batch(p), sampler=sc, generator=torch.Generator().manual_seed(0))
    assert measured == [("eager", 20), ("fast-fp32", 20)]


def test_fast_path_follows_changed_weights(tiny_policy_dir):
    """The fast path copies the weights; after the module changes (fine-tuning, load_state_dict) the policy
    rebuilds it instead of sampling with stale weights."""
    p = load_policy(tiny_policy_dir, fast="fp32")
    ref = load_policy(tiny_policy_dir, fast="eager")
    x_T, z = noise(p, steps=10)
    sc = SamplerConfig("ddpm", num_inference_steps=10)
    before = p.predict_action(obs_batch(p), sampler=sc, init_noise=x_T, step_noise=z)["action_pred"]
    with torch.no_grad():
        for m in (p.model, ref.model):
            for q in m.parameters():
                q.mul_(1.1)
    after = p.predict_action(obs_batch(p), sampler=sc, init_noise=x_T, step_noise=z)["action_pred"]
    want = ref.predict_action(obs_batch(ref), sampler=sc, init_noise=x_T, step_noise=z)["action_pred"]
    assert (after - before).abs().max() > 1e-2
    torch.testing.assert_close(after, want, rtol=1e-4, atol=1e-3)
    assert p.inference == "fast-fp32"


@pytest.mark.parametrize("update,start", [("parareal", "predict"), ("secant", "zero")])
def test_predict_action_passes_the_parareal_update(tiny_policy_dir, update, start):
    from parapolicy.sampling import sample_picard

    p = load_policy(tiny_policy_dir)
    x_T, z = noise(p)
    cfg = SamplerConfig("paraddpm", window=5, update=update, start=start)
    out = p.predict_action(obs_batch(p), sampler=cfg, init_noise=x_T, step_noise=z)
    x0, st = sample_picard(p.denoiser, p.scheduler("ddpm"), x_T, noise=z, cond=p.normalized_condition(obs_batch(p)),
                           window=5, update=update, start=start)
    assert out["stats"].guess == "window" and out["stats"].iterations == st.iterations
    assert out["stats"].windows[0][0][2] - out["stats"].windows[0][0][1] == (5 if start == "zero" else 1)
    torch.testing.assert_close(out["trajectory"][-1], x0)
    seq = p.predict_action(obs_batch(p), sampler="ddpm", init_noise=x_T, step_noise=z)
    exact = p.predict_action(obs_batch(p), sampler=cfg.replace(tol=0.0), init_noise=x_T, step_noise=z)
    torch.testing.assert_close(exact["action_pred"], seq["action_pred"], atol=1e-3, rtol=1e-5)

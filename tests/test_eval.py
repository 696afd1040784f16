"""Eval harness: metrics, noise seeding, rollouts (lock-step, vectorised, realtime), outputs, resume, faults,
wandb offline logging, config validation. A tiny random policy (plumbing, not score) in Push-T, 10 env steps."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import numpy as np
import pytest
import torch

from eval import metrics
from eval.realtime import rollout_runner, switch_smoothness
from eval.rollout import CallCounter, chunk_noise, rollout_block

MAX_STEPS = 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: tiny models gain nothing from two, and a loaded 2-core machine slows 2 threads a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from parapolicy.checkpoint import save_policy_dir
    from parapolicy.model import ConditionalUnet1D
    from parapolicy.normalizer import LinearNormalizer
    from parapolicy.train import TrainConfig, policy_config

    cfg = policy_config(TrainConfig(down_dims=(8, 16), n_groups=4, diffusion_step_embed_dim=16,
                                    num_train_timesteps=10), obs_dim=20, action_dim=2)
    torch.manual_seed(0)
    model = ConditionalUnet1D(**cfg["model"])
    g = torch.Generator().manual_seed(0)
    norm = LinearNormalizer().fit({"obs": torch.rand(64, 20, generator=g) * 512,
                                   "action": 100 + torch.rand(64, 2, generator=g) * 300})
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_policy_dir(path, cfg, model.state_dict(), norm.state_dict())
    return str(path)


@pytest.fixture(scope="module")
def policy(tiny_ckpt):
    from parapolicy.policy import load_policy
    return load_policy(tiny_ckpt)


def make_env():
    import gymnasium as gym

    import envs  # noqa: F401
    return gym.make("parapolicy/PushT-v0", obs_type="keypoints", max_episode_steps=MAX_STEPS)


def base_cfg(ckpt: str, **kw) -> dict:
    cfg = {"policy": {"path": ckpt}, "env": {"id": "parapolicy/PushT-v0", "obs_type": "keypoints", "control_hz": 10},
           "sampler": {"window": 4, "tol": 0.1}, "samplers": ["ddpm", "paraddpm"], "n_episodes": 2, "n_envs": 2,
           "max_steps": MAX_STEPS, "num_threads": 1, "progress": False, "probe_calls": 2, "warmup_calls": 1,
           "wandb": {"mode": "disabled"}}
    cfg.update(kw)
    return cfg


# --------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("df,want", [(1, 12.7062), (4, 2.7764), (9, 2.2622), (29, 2.0452), (math.inf, 1.9600)])
def test_t_quantile_matches_published_table(df, want):
    assert metrics.t_quantile(0.975, df) == pytest.approx(want, abs=2e-4)


def test_mean_ci_and_paired_difference():
    xs = [0.2, 0.9, 0.5, 0.7]
    ci = metrics.mean_ci(xs)
    hw = metrics.t_quantile(0.975, 3) * statistics.stdev(xs) / 2
    assert ci["mean"] == pytest.approx(statistics.mean(xs))
    assert (ci["lo"], ci["hi"]) == pytest.approx((statistics.mean(xs) - hw, statistics.mean(xs) + hw))
    assert metrics.mean_ci([0.3])["lo"] is None and metrics.mean_ci([])["mean"] is None
    clipped = metrics.mean_ci([0.0, 1.0], bounds=(0.0, 1.0))
    assert (clipped["lo"], clipped["hi"]) == (0.0, 1.0) and clipped["half_width"] > 1
    a, b = {1: 0.5, 2: 0.4, 3: 1.0}, {2: 0.6, 3: 0.9, 4: 0.0}
    d = metrics.paired_difference(a, b)
    assert d["seeds"] == [2, 3] and d["mean"] == pytest.approx(((0.6 - 0.4) + (0.9 - 1.0)) / 2)
    s = metrics.summary([1, 2, 3, 4, 100])
    assert s["p50"] == 3 and s["max"] == 100 and s["p95"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 95))


# ----------------------------------------------------------------------------------------------- noise
def test_chunk_noise_is_a_function_of_seed_and_chunk():
    a0, a1 = chunk_noise(100000, 3, 16, 2, 10)
    b0, b1 = chunk_noise(100000, 3, 16, 2, 10)
    assert torch.equal(a0, b0) and torch.equal(a1, b1) and a1.shape == (10, 1, 16, 2)
    assert not torch.equal(a0, chunk_noise(100000, 4, 16, 2, 10)[0])
    assert not torch.equal(a0, chunk_noise(100001, 3, 16, 2, 10)[0])
    assert torch.equal(a0, chunk_noise(100000, 3, 16, 2, 5)[0])  # x_T shared across step counts


# --------------------------------------------------------------------------------------------- rollouts
def _rewards(results):
    return {r.seed: r.rewards for r in results}


def test_same_noise_gives_same_actions_for_exact_picard(policy):
    from parapolicy.policy import SamplerConfig

    seeds = [100000, 100001]
    ref = rollout_block(policy, SamplerConfig("ddpm"), "ddpm", [make_env() for _ in seeds], seeds, MAX_STEPS,
                        CallCounter(0))
    exact = rollout_block(policy, SamplerConfig("paraddpm", window=3, tol=0.0), "exact",
                          [make_env() for _ in seeds], seeds, MAX_STEPS, CallCounter(0))
    warm = rollout_block(policy, SamplerConfig("paraddpm", window=3, tol=0.0, warm_start=True), "warm",
                         [make_env() for _ in seeds], seeds, MAX_STEPS, CallCounter(0))
    for r in ref + exact + warm:
        assert r.status == "ok", r.error
        assert r.steps == MAX_STEPS and len(r.calls) == math.ceil(MAX_STEPS / policy.n_action_steps)
    for s in seeds:
        np.testing.assert_allclose(_rewards(exact)[s], _rewards(ref)[s], atol=1e-5)
        np.testing.assert_allclose(_rewards(warm)[s], _rewards(ref)[s], atol=1e-5)
    # one noise per episode (noise="episode", what warm start assumes): again the same for every sampler
    ref1 = rollout_block(policy, SamplerConfig("ddpm"), "ddpm", [make_env() for _ in seeds], seeds, MAX_STEPS,
                         CallCounter(0), same_noise_all_chunks=True)
    warm1 = rollout_block(policy, SamplerConfig("paraddpm", window=3, tol=0.0, warm_start=True), "warm",
                          [make_env() for _ in seeds], seeds, MAX_STEPS, CallCounter(0), same_noise_all_chunks=True)
    for s in seeds:
        np.testing.assert_allclose(_rewards(warm1)[s], _rewards(ref1)[s], atol=1e-5)
    assert any(not np.allclose(_rewards(ref1)[s], _rewards(ref)[s]) for s in seeds)  # the noise did change
    assert all(c.rounds == 10 and c.nfe == 10 for r in ref for c in r.calls)


def test_vectorised_episodes_match_one_at_a_time(policy):
    from parapolicy.policy import SamplerConfig

    sc = SamplerConfig("ddpm")
    seeds = [100000, 100001, 100002]
    vec = rollout_block(policy, sc, "ddpm", [make_env() for _ in seeds], seeds, MAX_STEPS, CallCounter(0))
    env = make_env()
    single = [rollout_block(policy, sc, "ddpm", [env], [s], MAX_STEPS, CallCounter(0))[0] for s in seeds]
    assert [c.batch for c in vec[0].calls] == [3, 3] and all(c.batch == 1 for c in single[0].calls)
    for v, s in zip(vec, single):
        np.testing.assert_allclose(v.rewards, s.rewards, atol=1e-4)


def test_realtime_with_zero_delay_is_lockstep_and_delay_costs_steps(policy):
    """The harness's realtime mode is the runtime Runner on a simulated clock (eval.realtime)."""
    from parapolicy.policy import SamplerConfig

    sc = SamplerConfig("ddpm")
    env = make_env()

    def rt(**kw):
        return rollout_runner(policy, sc, "ddpm", [env], [100003], MAX_STEPS, CallCounter(0), control_hz=10,
                              **kw)[0]

    lock = rollout_block(policy, sc, "ddpm", [env], [100003], MAX_STEPS, CallCounter(0))[0]
    rt0 = rt(fixed_delay=0)
    assert rt0.status == "ok" and rt0.held_steps == 0 and rt0.dropped_actions == 0
    assert rt0.runner["n_chunks"] == 2  # the Runner's own telemetry: it ran the episode
    np.testing.assert_allclose(rt0.rewards, lock.rewards, atol=1e-5)
    # a delay of 3 env steps. trigger 0: hold 3 (nothing queued), drop a[0..2], execute a[3..7] (t = 3..7),
    # next call: hold t = 8, 9 -> the 10-step episode ends
    r = rt(fixed_delay=3)
    assert (r.steps, r.held_steps, r.dropped_actions, len(r.calls)) == (10, 5, 3, 2)
    # trigger 2: the next observation is taken with 2 actions left, which run during the next inference
    r = rt(fixed_delay=3, trigger=2)
    assert [c.step for c in r.calls] == [0, 6]
    assert (r.held_steps, r.dropped_actions) == (4, 6)
    # measured latency x a huge scale: the first chunk never arrives within the episode
    slow = rt(latency_scale=1e6)
    assert slow.steps == MAX_STEPS and slow.held_steps == MAX_STEPS and len(slow.calls) == 1


@pytest.mark.parametrize("overlap", ["replace", "inpaint"])
def test_fixed_delay_batches_envs_like_one_env_at_a_time(policy, overlap):
    """Fixed delays in simulated time: the episodes run in lock-step, one Runner each, one batched policy call
    per tick for all requests; the same episodes as one env at a time (same per-(seed, chunk) noise)."""
    from parapolicy.policy import SamplerConfig

    sc = SamplerConfig("ddpm")
    seeds = [100000, 100001, 100002]
    kw = dict(control_hz=10, fixed_delay=2, trigger=2, overlap=overlap)
    vec = rollout_runner(policy, sc, "ddpm", [make_env() for _ in seeds], seeds, MAX_STEPS, CallCounter(0), **kw)
    env = make_env()
    single = [rollout_runner(policy, sc, "ddpm", [env], [s], MAX_STEPS, CallCounter(0), **kw)[0] for s in seeds]
    assert [c.batch for c in vec[0].calls] == [3] * len(vec[0].calls) and all(c.batch == 1 for c in single[0].calls)
    for v, s in zip(vec, single):
        assert v.status == "ok" and v.runner["n_chunks"] >= 2
        np.testing.assert_allclose(v.rewards, s.rewards, atol=1e-4)
        assert v.smoothness["n_switches"] >= 1
    if overlap == "inpaint":
        assert all(v.runner["inpainted_mean"] > 0 for v in vec)


def test_switch_smoothness_against_a_hand_computation():
    a = np.array([[0, 0], [1, 0], [2, 0], [10, 0], [11, 0], [12, 0]], dtype=float)
    src = [0, 0, 0, 1, 1, 1]
    m = switch_smoothness(a, src)
    assert m["n_switches"] == 1 and m["switch_jump_max"] == 8.0 and m["within_jump_mean"] == 1.0
    # jerk windows a[0..3], a[1..4], a[2..5] all contain the switch (between ticks 2 and 3)
    jerk = [abs(a[k, 0] - 3 * a[k - 1, 0] + 3 * a[k - 2, 0] - a[k - 3, 0]) for k in (3, 4, 5)]
    assert m["switch_jerk_mean"] == pytest.approx(np.mean(jerk)) and math.isnan(m["within_jerk_mean"])
    # a hold (None) is neither a switch nor inside a chunk: the jump into and out of it is not counted
    h = switch_smoothness(np.array([[0, 0], [50, 0], [51, 0], [52, 0], [53, 0]], float), [None, 0, 0, 0, 0])
    assert h["n_switches"] == 0 and math.isnan(h["switch_jump_max"]) and h["within_jump_max"] == 1.0
    assert h["within_jerk_mean"] == 0.0  # only the window a[1..4] is all chunk actions


# ------------------------------------------------------------------------------------------ evaluation
def test_evaluate_writes_outputs_and_resumes(tiny_ckpt, tmp_path):
    from eval.outputs import read_jsonl
    from eval.run import evaluate
    from eval.wandb_log import read_offline_run

    out = tmp_path / "run"
    res = evaluate(base_cfg(tiny_ckpt, wandb={"mode": "offline", "project": "t"}), out)
    for f in ("episodes.jsonl", "results.json", "results.md", "latency_hist.png", "reward_per_episode.png",
              "rounds_per_call.png"):
        assert (out / f).exists(), f
    on_disk = json.loads((out / "results.json").read_text())
    for label in ("ddpm", "paraddpm"):
        m = on_disk["samplers"][label]
        for k in ("mean_score", "avg_max_reward", "pc_success", "latency_ms", "rounds_per_call", "nfe_per_call",
                  "max_action_error", "episodes_per_min"):
            assert k in m, k
        assert m["n_episodes"] == 2 and m["latency_ms"]["n"] == 2  # probe_calls, after 1 warm-up call
        assert m["latency_source"].startswith("probe")
    assert on_disk["samplers"]["ddpm"]["max_action_error"] == 0.0
    assert on_disk["paired"]["paraddpm"]["max_reward"]["n"] == 2
    assert on_disk["versions"]["torch"] == torch.__version__ and on_disk["config"]["n_episodes"] == 2
    assert "| ddpm | 2 |" in (out / "results.md").read_text()
    # the offline wandb run: what was logged in-process, and read back from the .wandb file
    assert res["wandb"]["status"] == "ok" and res["wandb"]["mode"] == "offline"
    logged = read_offline_run(res["wandb"]["dir"], wait_s=30)
    assert logged["complete"]
    assert logged["summary"]["ddpm/mean_score"] == pytest.approx(on_disk["samplers"]["ddpm"]["mean_score"])
    assert res["wandb"]["summary"]["paraddpm/pc_success"] == on_disk["samplers"]["paraddpm"]["pc_success"]
    assert any(k.startswith("ddpm/latency_ms_hist") for k in logged["history_keys"])
    assert logged["config"]["n_episodes"] == 2
    # resume: one more episode per sampler runs, the finished ones are skipped
    evaluate(base_cfg(tiny_ckpt, n_episodes=3), out)
    recs = read_jsonl(out / "episodes.jsonl")
    assert len(recs) == 6 and sorted(r["seed"] for r in recs if r["sampler"] == "ddpm") == [100000, 100001, 100002]
    assert json.loads((out / "results.json").read_text())["samplers"]["ddpm"]["n_episodes"] == 3


def test_realtime_evaluation_and_report(tiny_ckpt, tmp_path):
    from eval.report import main as report_main
    from eval.run import evaluate

    res = evaluate(base_cfg(tiny_ckpt, n_episodes=1, n_envs=1, realtime=True, latency_scale=50.0, plots=False,
                            warmup_calls=0),
                   tmp_path / "rt")
    for m in res["samplers"].values():
        assert m["n_episodes"] == 1 and m["latency_source"].startswith("rollout")
        assert m["held_steps_per_episode"] > 0  # 50x the measured latency is more than one env step
        assert m["runner_chunks_per_episode"] >= 1 and "switch_jump_max" in m["smoothness"]
    assert res["config"]["realtime"] is True and "latency-aware" in (tmp_path / "rt" / "results.md").read_text()
    # every episode ran through the runtime Runner: its telemetry is there
    from eval.outputs import read_jsonl

    recs = read_jsonl(tmp_path / "rt" / "episodes.jsonl")
    assert recs and all(r["runner"]["n_chunks"] >= 1 and "holds" in r["runner"] for r in recs)
    assert report_main([str(tmp_path), "--no-plot"]) == 0
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert [r["sampler"] for r in rows] == ["ddpm", "paraddpm"] and rows[0]["realtime"] is True


def test_one_rollout_per_robot_reports_rollout_latency(tiny_ckpt, tmp_path):
    from eval.run import evaluate

    res = evaluate(base_cfg(tiny_ckpt, n_episodes=1, n_envs=1, samplers=["ddpm"], probe_calls=0,
                            warmup_calls=0, plots=False, fast_denoiser=True), tmp_path)
    m = res["samplers"]["ddpm"]
    assert m["latency_source"].startswith("rollout") and m["latency_ms"]["n"] == 2
    assert res["denoiser"] == "fast-fp32"
    assert "UNet path: fast-fp32" in (tmp_path / "results.md").read_text()


def _register_faulty(kind: str, bad_seed: int, exc):
    import gymnasium as gym

    class Faulty(gym.Wrapper):
        def reset(self, *, seed=None, options=None):
            self.bad = seed == bad_seed
            return self.env.reset(seed=seed, options=options)

        def step(self, action):
            if self.bad:
                raise exc("injected fault")
            return self.env.step(action)

    def make(**kw):
        import envs  # noqa: F401
        return Faulty(gym.make("parapolicy/PushT-v0", **kw).unwrapped)

    env_id = f"evaltest/{kind}-v0"
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=make)
    return env_id


def test_failing_episode_is_recorded_and_the_others_go_on(tiny_ckpt, tmp_path):
    from eval.run import evaluate

    env_id = _register_faulty("Faulty", 100001, RuntimeError)
    res = evaluate(base_cfg(tiny_ckpt, env={"id": env_id, "obs_type": "keypoints"}, n_episodes=3, plots=False),
                   tmp_path)
    for label in ("ddpm", "paraddpm"):
        m = res["samplers"][label]
        assert m["n_episodes"] == 2 and m["n_errors"] == 1
        assert m["errors"][0]["seed"] == 100001 and "injected fault" in m["errors"][0]["error"]


def test_ctrl_c_leaves_valid_files(tiny_ckpt, tmp_path):
    from eval.outputs import read_jsonl
    from eval.run import evaluate

    env_id = _register_faulty("Interrupt", 100001, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        evaluate(base_cfg(tiny_ckpt, env={"id": env_id, "obs_type": "keypoints"}, n_envs=1, plots=False), tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["interrupted"] is True and res["samplers"]["ddpm"]["n_episodes"] == 1
    assert [r["seed"] for r in read_jsonl(tmp_path / "episodes.jsonl")] == [100000, 100000]


def test_wandb_failure_keeps_local_results(tiny_ckpt, tmp_path, monkeypatch):
    import wandb

    from eval.run import evaluate

    def boom(*a, **k):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", boom)
    res = evaluate(base_cfg(tiny_ckpt, n_episodes=1, plots=False, wandb={"mode": "online"}), tmp_path)
    assert res["wandb"]["status"] == "failed" and "no network" in res["wandb"]["error"]
    assert json.loads((tmp_path / "results.json").read_text())["wandb"]["status"] == "failed"


@pytest.mark.parametrize("override,key", [
    ({"samplers": ["ddpm", "fastest"]}, "samplers[1]"),
    ({"sampler": {"window": 0}}, "samplers[0]"),
    ({"samplers": [{"name": "paraddpm", "window": 0}]}, "samplers[0]"),
    ({"sampler": {"windw": 4}}, "sampler.windw"),
    ({"n_episodes": 0}, "n_episodes"),
    ({"n_envs": 0}, "n_envs"),
    ({"realtime": True}, "n_envs"),
    ({"wandb": {}}, "wandb.mode"),
    ({"latency_scale": -1}, "latency_scale"),
    ({"noise": "step"}, "noise"),
    ({"fast_denoiser": "yes"}, "fast_denoiser"),
    ({"policy": {"path": "/nonexistent/ckpt"}}, "policy.path"),
    ({"env": {"id": "NoSuchEnv-v9"}}, "env.id"),
])
def test_bad_config_fails_before_any_episode(tiny_ckpt, tmp_path, override, key):
    from eval.run import evaluate

    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
        evaluate(base_cfg(tiny_ckpt, **override), tmp_path)
    assert not (tmp_path / "episodes.jsonl").exists()


def test_library_does_not_import_hydra_or_wandb():
    code = ("import sys, parapolicy.policy, eval.rollout, eval.metrics, eval.outputs; "
            "print(sorted(m for m in ('hydra', 'wandb', 'omegaconf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_videos_of_the_first_episodes(tiny_ckpt, tmp_path):
    from eval.run import evaluate

    evaluate(base_cfg(tiny_ckpt, n_episodes=2, samplers=["ddpm"], videos=1, plots=False, probe_calls=0), tmp_path)
    gifs = sorted(p.name for p in tmp_path.glob("*.gif"))
    assert gifs == ["episode_ddpm_100000.gif"]
    import imageio.v2 as imageio

    frames = imageio.mimread(tmp_path / gifs[0])
    assert len(frames) == MAX_STEPS + 1 and frames[0].ndim == 3


def test_delay_sweep_writes_table_plot_and_resumes(tiny_ckpt, tmp_path):
    from eval.delay_sweep import main
    from eval.outputs import read_jsonl

    args = ["--policy", tiny_ckpt, "--n-episodes", "2", "--n-envs", "2", "--max-steps", str(MAX_STEPS),
            "--delays", "0", "2", "--modes", "replace", "inpaint", "--out", str(tmp_path)]
    assert main(args) == 0
    for f in ("episodes.jsonl", "delay_sweep.json", "delay_sweep.md", "delay_sweep.png"):
        assert (tmp_path / f).exists(), f
    res = json.loads((tmp_path / "delay_sweep.json").read_text())
    cells = {(c["mode"], c["delay"]): c for c in res["cells"]}
    assert set(cells) == {(m, d) for m in ("replace", "inpaint") for d in (0, 2)}
    assert all(c["n"] == 2 and "switch_jump_max" in c["smoothness"] for c in cells.values())
    # delay 0: nothing executes during inference, so inpaint fixes no prefix and equals replace
    assert cells[("inpaint", 0)]["mean_score"] == cells[("replace", 0)]["mean_score"]
    assert cells[("inpaint", 0)]["vs_replace"]["mean"] == 0.0 and "vs_replace" not in cells[("replace", 2)]
    assert "d vs replace" in (tmp_path / "delay_sweep.md").read_text()
    recs = read_jsonl(tmp_path / "episodes.jsonl")
    assert all(r["runner"]["n_chunks"] >= 1 for r in recs)
    assert any(r["runner"]["inpainted_mean"] > 0 for r in recs if r["mode"] == "inpaint" and r["delay"] == 2)
    main(args)  # resume: nothing new runs
    assert len(read_jsonl(tmp_path / "episodes.jsonl")) == len(recs) == 8

"""eval.run and eval.frontier with an image policy: the pixel env is chosen from the policy, episodes run
batched, results carry the encoder / denoising latency split. A tiny random image policy (plumbing, not score),
a few env steps."""

import json

import pytest
import torch

MAX_STEPS = 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_image_policy(tmp_path_factory):
    from parapolicy.checkpoint import save_policy_dir
    from parapolicy.image_cond import ImageConditioner
    from parapolicy.model import ConditionalUnet1D
    from parapolicy.normalizer import LinearNormalizer
    from parapolicy.train_image import ImageTrainConfig, policy_config

    cfg = policy_config(ImageTrainConfig(horizon=8, n_action_steps=4, width=16, blocks=(1, 1, 1, 1), num_kp=8,
                                         down_dims=(8, 16), diffusion_step_embed_dim=16, n_groups=4,
                                         num_train_timesteps=10))
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    norm = LinearNormalizer().fit({"observation_state": torch.rand(64, 2, generator=g) * 512,
                                   "action": 100 + torch.rand(64, 2, generator=g) * 300})
    path = tmp_path_factory.mktemp("ckpt") / "tiny_image"
    save_policy_dir(path, cfg, ConditionalUnet1D(**cfg["model"]).state_dict(), norm.state_dict(),
                    encoder_state=ImageConditioner(cfg["vision"]).state_dict())
    return str(path)


def test_obs_window_maps_pixels_to_the_policy_keys(tiny_image_policy):
    import numpy as np

    from eval.rollout import _flat_obs, _obs_dict
    from parapolicy.policy import load_policy

    policy = load_policy(tiny_image_policy, fast="eager")
    rng = np.random.default_rng(0)
    obs = [{"pixels": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), "agent_pos": rng.uniform(0, 512, 2)}
           for _ in range(2)]
    d = _obs_dict(policy, [np.stack([_flat_obs(o) for o in obs])])
    img = d["observation.image"]
    assert img.shape == (1, 2, 3, 96, 96) and img.dtype == torch.float32
    for t in range(2):  # channel-first, [0, 1], same pixels
        np.testing.assert_array_equal((img[0, t] * 255).round().byte().permute(1, 2, 0).numpy(), obs[t]["pixels"])
        np.testing.assert_allclose(d["observation.state"][0, t].numpy(), obs[t]["agent_pos"], rtol=1e-6)


def test_eval_run_on_pixels_reports_latency_split(tiny_image_policy, tmp_path):
    from eval.run import evaluate

    cfg = {"policy": {"path": tiny_image_policy, "fast_denoiser": "eager"},
           "env": {"id": "parapolicy/PushT-v0", "obs_type": "keypoints", "control_hz": 10},
           "sampler": {"window": 4, "tol": 0.1}, "samplers": ["ddpm", "paraddpm"], "n_episodes": 2, "n_envs": 2,
           "max_steps": MAX_STEPS, "num_threads": 1, "progress": False, "probe_calls": 2, "warmup_calls": 1,
           "plots": False, "wandb": {"mode": "disabled"}}
    evaluate(cfg, tmp_path / "run")
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["config"]["env"]["obs_type"] == "pixels"
    for label in ("ddpm", "paraddpm"):
        m = res["samplers"][label]
        assert m["n_episodes"] == 2 and m["n_errors"] == 0
        assert m["encoder_ms"]["n"] == 2 and m["denoise_ms"]["n"] == 2  # probe: batch 1, after warm-up
        assert m["encoder_ms"]["p50"] > 0 and m["denoise_ms"]["p50"] > 0
    md = (tmp_path / "run" / "results.md").read_text()
    assert "Latency split per chunk" in md and "| paraddpm |" in md


def test_frontier_with_an_image_policy(tiny_image_policy, tmp_path):
    from eval import frontier

    fr = {"steps": [2], "few_step": ["ddim"], "paraddpm": True, "warm_start": False, "students": "none",
          "student_samplers": ["ddim"], "plan": False}
    raw = {"policy": {"path": tiny_image_policy}, "env": {"id": "parapolicy/PushT-v0", "obs_type": "keypoints",
                                                           "control_hz": 10},
           "sampler": {"num_inference_steps": None, "window": 4, "tol": 0.1, "max_iters": None, "accel": None,
                       "warm_start": False},
           "samplers": None, "noise": None, "n_episodes": 1, "n_envs": 1, "max_steps": 4, "num_threads": 1,
           "progress": False, "plots": False, "probe_calls": 1, "warmup_calls": 0, "wandb": {"mode": "disabled"},
           "frontier": fr}
    res = frontier.run_frontier(raw, tmp_path / "fr", command="test")
    rows = {r["label"]: r for r in res["rows"]}
    assert {"ddpm-10", "paraddpm-10", "ddim-2"} <= set(rows)
    assert all(r["status"] == "done" for r in rows.values())


def test_bench_chunk_splits_an_image_policy_call_into_encoder_and_denoising(tiny_image_policy, tmp_path):
    from eval import bench_chunk
    from parapolicy.data import find_pusht_zarr

    if find_pusht_zarr() is None:
        pytest.skip("needs the Push-T demonstrations' images (../shared/pusht)")
    out = tmp_path / "chunk.json"
    bench_chunk.main(["--policy", tiny_image_policy, "--paths", "eager", "--samplers", "ddpm,paraddpm",
                      "--obs", "2", "--repeats", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert "images" in res["observations"]
    rows = {r["sampler"]: r for r in res["rows"]}
    assert rows["ddpm"]["rounds"] == 10 and 1 <= rows["paraddpm"]["rounds"] <= 10   # tiny policy: 10 steps
    for r in rows.values():
        assert 0 < r["encoder_wall_ms_p50"] and 0 < r["denoise_wall_ms_p50"]
        assert r["encoder_wall_ms_p50"] + r["denoise_wall_ms_p50"] <= r["wall_ms_p50"] * 1.05

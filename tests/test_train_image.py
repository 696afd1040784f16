"""Image-policy training: a few steps on a tiny synthetic replay buffer with 96x96 images; resumable; the
saved directory loads as an image policy that acts on pixels."""

import json

import numpy as np
import torch

from parapolicy.checkpoint import load_checkpoint
from parapolicy.data import ReplayBuffer
from parapolicy.policy import load_policy
from parapolicy.train_image import IMAGE, STATE, ImageTrainConfig, train


def _store(path, n_episodes=3, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(12, 20, size=n_episodes)
    n = int(lengths.sum())
    data = {"img": rng.uniform(0, 255, (n, 96, 96, 3)).astype(np.float32),
            "state": rng.uniform(0, 512, (n, 5)).astype(np.float32),
            "action": rng.uniform(0, 512, (n, 2)).astype(np.float32)}
    ReplayBuffer(data, np.cumsum(lengths)).save(path)


def _cfg(tmp_path, store, **kw):
    base = dict(out=str(tmp_path / "run"), zarr=str(store), horizon=8, n_obs_steps=2, n_action_steps=4,
                width=16, blocks=(1, 1, 1, 1), crop=84, num_kp=8, down_dims=(8, 16),
                diffusion_step_embed_dim=16, kernel_size=3, n_groups=4, num_train_timesteps=10, batch_size=4,
                warmup_steps=2, max_steps=4, save_every=2, log_every=2, val_ratio=0.34)
    base.update(kw)
    return ImageTrainConfig(**base)


def test_tiny_image_training_resumes_and_loads(tmp_path):
    store = tmp_path / "d.zarr"
    _store(store)
    out = train(_cfg(tmp_path, store))
    assert load_checkpoint(out).config["training"]["steps"] == 4
    train(_cfg(tmp_path, store, max_steps=6))
    ck = load_checkpoint(out)
    assert ck.config["training"]["steps"] == 6
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6] and all(np.isfinite(r["loss"]) for r in log)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    # the saved policy holds the EMA encoder: identical tensors
    for k, v in state["ema"].items():
        if k.startswith("vision."):
            assert torch.equal(ck.encoder_state[k[len("vision."):]], v)
    policy = load_policy(out, fast="eager")
    obs = {IMAGE: torch.rand(2, 2, 3, 96, 96), STATE: torch.rand(2, 2, 2) * 512}
    a = policy.predict_action(obs, sampler="ddpm", generator=torch.Generator().manual_seed(0))["action"]
    assert a.shape == (2, 4, 2) and torch.isfinite(a).all()


def test_config_rejects_bad_sizes():
    import pytest

    for kw, match in [({"width": 8}, "multiple of 16"), ({"blocks": (1, 1, 1)}, "4 counts"),
                      ({"crop": 120}, "crop")]:
        with pytest.raises(ValueError, match=match):
            ImageTrainConfig(**kw)

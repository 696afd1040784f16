import json

import numpy as np
import torch

from parapolicy.checkpoint import load_checkpoint
from parapolicy.data import ReplayBuffer
from parapolicy.train import TrainConfig, ema_decay, lr_lambda, make_windows, train
from tests.conftest import make_tiny_store


def tiny_cfg(tmp_path, store, **kw):
    base = dict(out=str(tmp_path / "run"), zarr=str(store), horizon=8, n_obs_steps=2, n_action_steps=4,
                down_dims=(8, 16), diffusion_step_embed_dim=16, kernel_size=3, n_groups=4,
                num_train_timesteps=10, batch_size=8, warmup_steps=2, max_steps=6, save_every=3, log_every=2,
                val_ratio=0.25)
    base.update(kw)
    return TrainConfig(**base)


def test_windows_pad_with_edge_frames(tmp_path):
    buf = make_tiny_store(tmp_path / "d.zarr")
    cfg = tiny_cfg(tmp_path, tmp_path / "d.zarr")
    w = make_windows(buf, cfg, np.ones(buf.n_episodes, bool))
    # first window of episode 0 starts one step before it: the first frame repeated
    np.testing.assert_array_equal(w["action"][0, 0], buf.data["action"][0])
    np.testing.assert_array_equal(w["action"][0, 1], buf.data["action"][0])
    assert w["obs"].shape[1:] == (2, 20) and w["action"].shape[1:] == (8, 2)


def test_tiny_training_run_writes_a_loadable_policy_and_resumes(tmp_path):
    store = tmp_path / "d.zarr"
    make_tiny_store(store)
    out = train(tiny_cfg(tmp_path, store))
    ck = load_checkpoint(out)
    assert ck.config["training"]["steps"] == 6
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6] and all(np.isfinite(r["loss"]) for r in log)
    # resume: a longer budget continues from step 6 instead of starting over
    train(tiny_cfg(tmp_path, store, max_steps=8))
    assert load_checkpoint(out).config["training"]["steps"] == 8
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["step"] == 8


def test_schedules():
    f = lr_lambda(10, 110)
    assert f(0) == 0 and f(10) == 1.0 and abs(f(60) - 0.5) < 1e-9 and f(110) < 1e-9
    assert ema_decay(0, 0.75, 0.9999) == 0.0
    assert 0.99 < ema_decay(10_000, 0.75, 0.9999) < 0.9999
    assert ema_decay(10**9, 0.75, 0.9999) == 0.9999


def test_replay_buffer_rejects_inconsistent_data():
    import pytest
    with pytest.raises(ValueError, match="rows"):
        ReplayBuffer({"a": np.zeros((5, 1))}, np.array([3, 6]))

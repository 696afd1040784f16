"""parapolicy.train_utils: the helpers train, train_image, distill and consistency share."""

from __future__ import annotations

import copy

import torch

from parapolicy.train_utils import atomic_torch_save, ema_update


def test_ema_update_is_the_old_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = copy.deepcopy(model)
    old = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model[1].running_mean.add_(1.0)
    d = 0.7
    with torch.no_grad():  # the loop train.py, train_image.py and distill.py each carried
        for pe, pm in zip(old.parameters(), model.parameters()):
            pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        for be, bm in zip(old.buffers(), model.buffers()):
            be.copy_(bm)
    ema_update(ema, model, d)
    for a, b in zip(ema.state_dict().values(), old.state_dict().values()):
        assert torch.equal(a, b)
    assert not any(p.requires_grad and p.grad is not None for p in ema.parameters())


def test_atomic_torch_save_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.pt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    atomic_torch_save({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_train_clis_parse_tuples_and_keep_their_own_defaults():
    import pytest

    from parapolicy import train, train_image

    cfg = train.parse_args(["--down-dims", "8", "16", "--horizon", "6", "--no-wandb"])
    assert cfg.down_dims == (8, 16) and cfg.horizon == 6 and cfg.out == "runs/pusht" and cfg.batch_size == 256
    img = train_image.parse_args(["--blocks", "2", "2", "2", "2"])
    assert img.blocks == (2, 2, 2, 2) and img.down_dims == (64, 128, 256)
    assert (img.out, img.batch_size, img.max_steps, img.diffusion_step_embed_dim) == ("runs/pusht_image", 32, 20000, 128)
    for cls in (train.TrainConfig, train_image.ImageTrainConfig):   # the shared checks (RunConfig)
        with pytest.raises(ValueError, match="horizon"):
            cls(horizon=6)
        with pytest.raises(ValueError, match="n_obs_steps"):
            cls(n_obs_steps=0)

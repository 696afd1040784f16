"""The students' training data: the Push-T keypoint windows a teacher was trained on, normalised with the
teacher's normaliser (progressive distillation, `parapolicy.distill`; consistency, `parapolicy.consistency`)."""

from __future__ import annotations

import torch

from parapolicy.normalizer import LinearNormalizer


def load_windows(cfg, teacher_cfg: dict, normalizer: LinearNormalizer):
    """Push-T keypoint windows as the teacher was trained on, normalised with the teacher's normaliser:
    -> (obs (N, To*Do), action (N, H, Da)) for training and validation.

    cfg: any config with `zarr` (None: the buffer parapolicy.data finds) and `val_ratio` (DistillConfig,
    ConsistencyConfig); teacher_cfg: the teacher checkpoint's config."""
    from parapolicy.data import ReplayBuffer, find_pusht_zarr, validation_mask
    from parapolicy.train import TrainConfig, make_windows

    if list(teacher_cfg["obs_keys"]) != ["obs"] or not teacher_cfg.get("obs_as_global_cond", True):
        raise ValueError("the distillation data loader supports the Push-T keypoint policy (one obs key 'obs', "
                         f"global conditioning); the teacher has obs_keys {teacher_cfg['obs_keys']}")
    zpath = cfg.zarr or find_pusht_zarr()
    if zpath is None:
        raise FileNotFoundError("no Push-T replay buffer found; pass --zarr or set PARAPOLICY_PUSHT_ZARR")
    buffer = ReplayBuffer.load(zpath, keys=["state", "keypoint", "action"])
    tc = TrainConfig(horizon=teacher_cfg["horizon"], n_obs_steps=teacher_cfg["n_obs_steps"],
                     n_action_steps=teacher_cfg["n_action_steps"])
    val = validation_mask(buffer.n_episodes, cfg.val_ratio, tc.seed)
    out = []
    for mask in (~val, val):
        w = make_windows(buffer, tc, mask)
        obs = normalizer.normalize(torch.from_numpy(w["obs"]), "obs")
        out.append((obs.reshape(len(obs), -1), normalizer.normalize(torch.from_numpy(w["action"]), "action")))
    return out[0], out[1]

"""Loaders that map other projects' checkpoints onto parapolicy's `LoadedCheckpoint`.

    diffusion_policy.load_dp_ckpt(path)      real-stanford/diffusion_policy `.ckpt` (low-dim UNet policy),
                                             read through the restricted unpickler in `safe_unpickle`
    lerobot.load_lerobot_dir(path)           LeRobot pretrained DiffusionPolicy directory (state-based, UNet)

`parapolicy.checkpoint.load_checkpoint` picks the right one; see docs/checkpoints.md for the config each
produces. Importing this package imports nothing beyond torch.
"""

from __future__ import annotations


def load_dp_ckpt(path):
    """See `parapolicy.adapters.diffusion_policy.load_dp_ckpt`."""
    from parapolicy.adapters.diffusion_policy import load_dp_ckpt as _load

    return _load(path)


def load_lerobot_dir(path):
    """See `parapolicy.adapters.lerobot.load_lerobot_dir`."""
    from parapolicy.adapters.lerobot import load_lerobot_dir as _load

    return _load(path)


__all__ = ["load_dp_ckpt", "load_lerobot_dir"]

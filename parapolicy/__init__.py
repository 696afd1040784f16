"""parapolicy: parallel-in-time (Picard) sampling for Diffusion Policy.

Importing this package imports torch and numpy only; Hydra, wandb, gymnasium, pymunk and zarr are imported
by the functions that need them.
"""

__version__ = "0.1.0"


def load_policy(path, device="cpu", **kwargs):
    """Load a policy from our checkpoint directory, a real-stanford `.ckpt`, a LeRobot pretrained directory,
    or a built-in name such as "pusht_keypoints". See `parapolicy.policy.load_policy`."""
    from parapolicy.policy import load_policy as _load

    return _load(path, device=device, **kwargs)


__all__ = ["load_policy", "__version__"]

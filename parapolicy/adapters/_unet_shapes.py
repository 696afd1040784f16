"""Read ConditionalUnet1D constructor arguments back from a state dict (our parameter names).

Shapes pin down every argument except `n_groups` (GroupNorm stores no group count), so a config that
disagrees with its own weights is caught before the model is built.
"""

from __future__ import annotations

import torch


def unet_kwargs_from_state(state: dict[str, torch.Tensor], n_groups: int = 8, where: str = "") -> dict:
    """-> ConditionalUnet1D kwargs {input_dim, local_cond_dim, global_cond_dim, diffusion_step_embed_dim,
    down_dims, kernel_size, n_groups, cond_predict_scale}. ValueError naming the missing tensor otherwise."""

    def get(name: str) -> torch.Tensor:
        if name not in state:
            raise ValueError(f"{where}UNet state dict lacks '{name}'; not a ConditionalUnet1D")
        return state[name]

    down_dims = []
    while f"down_modules.{len(down_dims)}.0.blocks.0.block.0.weight" in state:
        down_dims.append(int(state[f"down_modules.{len(down_dims)}.0.blocks.0.block.0.weight"].shape[0]))
    if not down_dims:
        get("down_modules.0.0.blocks.0.block.0.weight")
    conv0 = get("down_modules.0.0.blocks.0.block.0.weight")  # (C0, input_dim, k)
    dsed = int(get("diffusion_step_encoder.3.weight").shape[0])
    cond_w = get("down_modules.0.0.cond_encoder.1.weight")  # (C0 or 2*C0, cond_dim)
    cond_dim = int(cond_w.shape[1])
    local = state.get("local_cond_encoder.0.blocks.0.block.0.weight")
    return {
        "input_dim": int(get("final_conv.1.weight").shape[0]),
        "local_cond_dim": None if local is None else int(local.shape[1]),
        "global_cond_dim": (cond_dim - dsed) or None,
        "diffusion_step_embed_dim": dsed,
        "down_dims": down_dims,
        "kernel_size": int(conv0.shape[2]),
        "n_groups": int(n_groups),
        "cond_predict_scale": int(cond_w.shape[0]) == 2 * down_dims[0],
    }


def check_loads(kwargs: dict, state: dict[str, torch.Tensor], where: str = "") -> None:
    """Build a ConditionalUnet1D from kwargs and load `state` strictly; ValueError naming the mismatch or a
    non-finite tensor."""
    from parapolicy.model import ConditionalUnet1D

    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{where}UNet weights hold NaN/inf in {bad[:5]}{' ...' if len(bad) > 5 else ''}")
    model = ConditionalUnet1D(**kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{where}UNet weights do not match ConditionalUnet1D({kwargs}): {e}") from e

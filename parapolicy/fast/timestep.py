"""The eager model's timestep rule, shared by the fast path (optimize.py) and CUDA graphs (cuda_graphs.py).

A leaf module, so that optimize.py (which builds CUDA-graph denoisers) and cuda_graphs.py do not import each other.
"""

from __future__ import annotations

import torch


def normalize_timestep(timestep, batch: int, device: torch.device) -> torch.Tensor:
    """int | float | 0-d tensor | (1,) | (B,) tensor -> (B,) tensor on `device` (the eager model's rule)."""
    if not torch.is_tensor(timestep):
        if isinstance(timestep, bool) or not isinstance(timestep, (int, float)):
            raise ValueError(f"timestep must be an int, a 0-d tensor or a (B,) tensor, got {type(timestep)}")
        timestep = torch.tensor([timestep], dtype=torch.long)
    if timestep.ndim == 0:
        timestep = timestep[None]
    if timestep.ndim != 1 or timestep.shape[0] not in (1, batch):
        raise ValueError(f"timestep must be scalar, (1,) or (B,)=({batch},); "
                         f"got shape {tuple(timestep.shape)}")
    return timestep.to(device).expand(batch)

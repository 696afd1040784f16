"""A trained UNet with its discrete DDPM schedule, stepped by DDIM between any two timesteps.

The teacher (and, wrapped the same way, the student) of progressive distillation (`parapolicy.distill`), and
the DDIM reference of consistency distillation's open-loop score (`parapolicy.consistency`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.checkpoint import LoadedCheckpoint
from parapolicy.distill_math import ddim_step
from parapolicy.model import ConditionalUnet1D
from parapolicy.schedule import alpha_sigma


@dataclass
class DDIMTeacher:
    """A UNet with how to read it and step it by DDIM: net(z (B,H,D), t (B,) long, global_cond=(B,C)) -> (B,H,D).
    (Not a `parapolicy.sampling.Denoiser`: this one carries its own discrete schedule and steps any t -> s.)"""

    net: torch.nn.Module
    prediction_type: str
    clip_range: float | None
    alphas_cumprod: torch.Tensor
    """(T,) float64"""

    @classmethod
    def from_checkpoint(cls, ckpt: LoadedCheckpoint, net: torch.nn.Module | None = None) -> DDIMTeacher:
        from diffusers import DDPMScheduler

        sk = ckpt.config["scheduler"]
        if sk.get("thresholding"):
            raise ValueError("teachers with dynamic thresholding are not supported")
        if net is None:
            net = ConditionalUnet1D(**ckpt.config["model"])
            net.load_state_dict(ckpt.model_state, strict=True)
        ac = DDPMScheduler(**sk).alphas_cumprod.to(torch.float64)
        clip = float(sk.get("clip_sample_range", 1.0)) if sk.get("clip_sample", True) else None
        return cls(net, sk.get("prediction_type", "epsilon"), clip, ac)

    def step(self, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """DDIM t -> s for each row: z (B,H,D), t, s (B,) long (s < 0: clean), cond (B,C) -> z_s (B,H,D)."""
        out = self.net(z, t, global_cond=cond)
        a_t, s_t = alpha_sigma(self.alphas_cumprod, t)
        a_s, s_s = alpha_sigma(self.alphas_cumprod, s)
        return ddim_step(out.to(torch.float64), z.to(torch.float64), a_t, s_t, a_s, s_s, self.prediction_type,
                         self.clip_range).to(z.dtype)

    @torch.no_grad()
    def sample(self, x_T: torch.Tensor, cond: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """DDIM along `grid` (descending, then the clean end) from x_T (B,H,D) -> x_0 (B,H,D)."""
        z, b = x_T, x_T.shape[0]
        for i, t in enumerate(grid):
            s = grid[i + 1] if i + 1 < len(grid) else -1
            z = self.step(z, torch.full((b,), t), torch.full((b,), s), cond)
        return z

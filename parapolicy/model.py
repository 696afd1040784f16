"""The Diffusion Policy denoiser: a 1-D conditional UNet over an action chunk.

`ConditionalUnet1D` is written for parapolicy and is state_dict- and call-compatible with
real-stanford/diffusion_policy's `ConditionalUnet1D` (same constructor arguments, parameter names and
shapes), so that project's checkpoints load into it unchanged.

Layout (channels-first inside, (B, T, D) at the boundary):

    sample (B,T,D) -> down: [ResBlock, ResBlock, Downsample] per level -> mid: 2 ResBlocks
                   -> up: [concat skip, ResBlock, ResBlock, Upsample] -> Conv1dBlock -> 1x1 conv -> (B,T,D)

Every residual block is FiLM-conditioned on [sinusoidal(timestep) -> MLP, global_cond].
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalPosEmb(nn.Module):
    """Transformer sinusoidal embedding of a (B,) timestep vector -> (B, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=x.device) * -(math.log(10000) / (half - 1)))
        arg = x[:, None].float() * freq[None, :]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish; parameters under `block.0` and `block.1` as in the original."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _ToColumn(nn.Module):
    """(B, C) -> (B, C, 1). Keeps the original's module index of the FiLM encoder's Linear at 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1)


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1dBlocks with FiLM conditioning after the first (Perez et al. 2018).

    x: (B, C_in, T), cond: (B, cond_dim) -> (B, C_out, T).
    With `cond_predict_scale` the condition predicts a per-channel scale and bias, else only a bias.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int = 3,
                 n_groups: int = 8, cond_predict_scale: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList([
            Conv1dBlock(in_channels, out_channels, kernel_size, n_groups=n_groups),
            Conv1dBlock(out_channels, out_channels, kernel_size, n_groups=n_groups),
        ])
        self.cond_predict_scale = cond_predict_scale
        self.out_channels = out_channels
        cond_channels = out_channels * 2 if cond_predict_scale else out_channels
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, cond_channels), _ToColumn())
        self.residual_conv = (nn.Conv1d(in_channels, out_channels, 1)
                              if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        embed = self.cond_encoder(cond)
        if self.cond_predict_scale:
            embed = embed.reshape(embed.shape[0], 2, self.out_channels, 1)
            out = embed[:, 0] * out + embed[:, 1]
        else:
            out = out + embed
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


def _res(dim_in, dim_out, cond_dim, kernel_size, n_groups, cond_predict_scale):
    return ConditionalResidualBlock1D(dim_in, dim_out, cond_dim=cond_dim, kernel_size=kernel_size,
                                      n_groups=n_groups, cond_predict_scale=cond_predict_scale)


class Downsample1d(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConditionalUnet1D(nn.Module):
    """1-D UNet denoiser of Diffusion Policy (Chi et al. 2023).

    Args mirror the original: `input_dim` action (or action+obs) width D; `local_cond_dim` per-step
    condition width or None; `global_cond_dim` width of the flattened observation condition or None;
    `down_dims` channels per level (the horizon must be divisible by 2**(len(down_dims)-1)).
    """

    def __init__(self, input_dim: int, local_cond_dim: int | None = None, global_cond_dim: int | None = None,
                 diffusion_step_embed_dim: int = 256, down_dims=(256, 512, 1024), kernel_size: int = 3,
                 n_groups: int = 8, cond_predict_scale: bool = False):
        super().__init__()
        all_dims = [input_dim] + list(down_dims)
        start_dim = down_dims[0]
        dsed = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed))
        cond_dim = dsed + (global_cond_dim or 0)
        in_out = list(zip(all_dims[:-1], all_dims[1:]))
        args = dict(cond_dim=cond_dim, kernel_size=kernel_size, n_groups=n_groups,
                    cond_predict_scale=cond_predict_scale)

        self.local_cond_encoder = None
        if local_cond_dim is not None:
            dim_out = in_out[0][1]
            self.local_cond_encoder = nn.ModuleList([
                _res(local_cond_dim, dim_out, **args),  # added after the first down block
                _res(local_cond_dim, dim_out, **args),  # unused, as in the original (see forward)
            ])

        mid_dim = all_dims[-1]
        self.mid_modules = nn.ModuleList([_res(mid_dim, mid_dim, **args), _res(mid_dim, mid_dim, **args)])

        self.down_modules = nn.ModuleList()
        for i, (dim_in, dim_out) in enumerate(in_out):
            last = i >= len(in_out) - 1
            self.down_modules.append(nn.ModuleList([
                _res(dim_in, dim_out, **args), _res(dim_out, dim_out, **args),
                nn.Identity() if last else Downsample1d(dim_out)]))

        self.up_modules = nn.ModuleList()
        for i, (dim_in, dim_out) in enumerate(reversed(in_out[1:])):
            last = i >= len(in_out) - 1
            self.up_modules.append(nn.ModuleList([
                _res(dim_out * 2, dim_in, **args), _res(dim_in, dim_in, **args),
                nn.Identity() if last else Upsample1d(dim_in)]))

        self.final_conv = nn.Sequential(
            Conv1dBlock(start_dim, start_dim, kernel_size=kernel_size),
            nn.Conv1d(start_dim, input_dim, 1))

    def forward(self, sample: torch.Tensor, timestep, local_cond: torch.Tensor | None = None,
                global_cond: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """sample: (B, T, D); timestep: int, 0-d or (B,) tensor; local_cond: (B, T, Lc);
        global_cond: (B, G) -> (B, T, D)."""
        x = sample.transpose(1, 2)
        t = timestep
        if not torch.is_tensor(t):
            t = torch.tensor([t], dtype=torch.long, device=sample.device)
        elif t.ndim == 0:
            t = t[None].to(sample.device)
        t = t.expand(sample.shape[0])
        feature = self.diffusion_step_encoder(t)
        if global_cond is not None:
            feature = torch.cat([feature, global_cond], dim=-1)

        h_local = []
        if local_cond is not None:
            lc = local_cond.transpose(1, 2)
            h_local = [self.local_cond_encoder[0](lc, feature)]

        skips = []
        for i, (res1, res2, down) in enumerate(self.down_modules):
            x = res1(x, feature)
            if i == 0 and h_local:
                x = x + h_local[0]
            x = res2(x, feature)
            skips.append(x)
            x = down(x)
        for mid in self.mid_modules:
            x = mid(x, feature)
        for res1, res2, up in self.up_modules:
            # The original adds h_local[1] under `idx == len(up_modules)`, which never holds, so the second
            # local encoder is unused in published checkpoints (and its output would not match this
            # resolution). We keep that behaviour for compatibility.
            x = res2(res1(torch.cat((x, skips.pop()), dim=1), feature), feature)
            x = up(x)
        return self.final_conv(x).transpose(1, 2)

"""`FastUnet1D`: an inference-only re-layout of `parapolicy.model.ConditionalUnet1D`.

Same function as the eager module (same weights, same call), computed differently:

    activations stay (B, T, C)          no transpose between layers
    Conv1d -> one im2col matmul         (B*T, k*C_in) x (k*C_in, C_out), weights packed once (layers.py);
                                        narrow residual-block convs (conv_impl="auto") instead run as oneDNN
                                        conv2d on the free channels-last (B, C, T, 1) view, no im2col copy
    first conv + 1x1 residual conv      one matmul with the two weights side by side (im2col layers)
    ConvTranspose1d(4, 2, 1)            one matmul over 3-tap windows, even/odd outputs as column halves
    GroupNorm + Mish                    torch's channels-last GroupNorm on a free view, then Mish
    every FiLM encoder Linear           one (B, cond_dim) x (cond_dim, sum of FiLM widths) matmul per call

Parameters are copied (and cast to `dtype`) at build time; later changes to the source model are not seen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from parapolicy.fast import layers as L


class _Res(nn.Module):
    """Packed ConditionalResidualBlock1D (buffers only).

    forward(x (B,T,C_in), film (B, F)) -> (B,T,C_out)."""

    def __init__(self, block: nn.Module, film_offset: int, dtype: torch.dtype, conv_impl: str = "auto"):
        super().__init__()
        conv0, gn0 = block.blocks[0].block[0], block.blocks[0].block[1]
        conv1, gn1 = block.blocks[1].block[0], block.blocks[1].block[1]
        self.k = conv0.kernel_size[0]
        self.c_out = conv0.out_channels
        self.has_res = isinstance(block.residual_conv, nn.Conv1d)
        # conv0 (+ the 1x1 residual, fused into one product on the im2col path) and conv1
        self.cl0 = L.use_channels_last_conv(conv0.in_channels, dtype, conv_impl)
        self.cl1 = L.use_channels_last_conv(conv1.in_channels, dtype, conv_impl)
        if self.cl0:
            self.conv0 = L.ChannelsLastConv(conv0, dtype)
            self.res = L.Packed(*L.pack_conv(block.residual_conv), dtype) if self.has_res else None
        else:
            w0, b0 = (L.pack_conv_with_residual(conv0, block.residual_conv) if self.has_res
                      else L.pack_conv(conv0))
            self.conv0 = L.Packed(w0, b0, dtype)
        self.conv1 = L.ChannelsLastConv(conv1, dtype) if self.cl1 else L.Packed(*L.pack_conv(conv1), dtype)
        for name, t in dict(g0w=gn0.weight, g0b=gn0.bias, g1w=gn1.weight, g1b=gn1.bias).items():
            self.register_buffer(name, t.detach().to(dtype).clone())
        self.groups0, self.eps0 = gn0.num_groups, gn0.eps
        self.groups1, self.eps1 = gn1.num_groups, gn1.eps
        self.scale = block.cond_predict_scale
        self.film_offset = film_offset  # where this block's [scale, shift] or [shift] starts in the FiLM row

    @property
    def film_width(self) -> int:
        return self.c_out * (2 if self.scale else 1)

    def forward(self, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        C, o = self.c_out, self.film_offset
        if self.cl0:
            y = self.conv0(x)
            res = L.conv(x, self.res, 1) if self.has_res else x
        else:
            y = L.conv(x, self.conv0, self.k)
            y, res = (y[..., :C], y[..., C:]) if self.has_res else (y, x)
        y = L.group_norm_mish(y, self.groups0, self.g0w, self.g0b, self.eps0)
        if self.scale:
            y = L.film(y, film[:, o:o + C], film[:, o + C:o + 2 * C])
        else:
            y = L.film(y, None, film[:, o:o + C])
        y = self.conv1(y) if self.cl1 else L.conv(y, self.conv1, self.k)
        y = L.group_norm_mish(y, self.groups1, self.g1w, self.g1b, self.eps1)
        return y + res


class FastUnet1D(nn.Module):
    """Inference re-layout of a ConditionalUnet1D; see the module docstring.

    forward(sample (B,T,D), t (B,) tensor, local_cond (B,T,Lc) | None, global_cond (B,G) | None) -> (B,T,D)
    in `dtype` throughout (inputs are cast; the output is returned in `dtype`). `conv_impl`: residual-block
    k-tap convs as "im2col" matmuls, as oneDNN "conv2d" on a channels-last view, or "auto" by width.
    `t` must already be a (B,) tensor: `parapolicy.fast.optimize_denoiser` wraps this module with the
    int / 0-d handling.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32, conv_impl: str = "auto"):
        super().__init__()
        for attr in ("diffusion_step_encoder", "down_modules", "mid_modules", "up_modules", "final_conv"):
            if not hasattr(model, attr):
                raise ValueError(f"FastUnet1D needs a ConditionalUnet1D-like module; {type(model).__name__} "
                                 f"has no `{attr}`")
        self.dtype = dtype
        enc = model.diffusion_step_encoder
        self.temb_dim = enc[0].dim
        # The time-embedding MLP is tiny: kept in float32 for accuracy.
        self.t_lin1 = _copy_linear(enc[1], torch.float32)
        self.t_lin2 = _copy_linear(enc[3], torch.float32)

        blocks: list[nn.Module] = []  # every residual block, in the order their FiLM columns are laid out
        offset = 0

        def res(block):
            nonlocal offset
            r = _Res(block, offset, dtype, conv_impl)
            offset += r.film_width
            blocks.append(block)
            return r

        self.local = (nn.ModuleList([res(b) for b in model.local_cond_encoder])
                      if getattr(model, "local_cond_encoder", None) is not None else None)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for res1, res2, down in model.down_modules:
            self.down.append(nn.ModuleList([res(res1), res(res2)]))
            self.downsample.append(_pack_down(down, dtype))
        self.mid = nn.ModuleList([res(m) for m in model.mid_modules])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for res1, res2, up in model.up_modules:
            self.up.append(nn.ModuleList([res(res1), res(res2)]))
            self.upsample.append(L.Packed(*L.pack_upsample(up.conv), dtype) if hasattr(up, "conv")
                                 else nn.Identity())

        # All FiLM encoders Mish -> Linear(cond_dim, width) read the same condition: one stacked Linear.
        lins = [b.cond_encoder[1] for b in blocks]
        self.film = L.Packed(torch.cat([lin.weight.detach() for lin in lins], 0).t(),
                             torch.cat([lin.bias.detach() for lin in lins]), dtype)

        fc_block, fc_out = model.final_conv[0], model.final_conv[1]
        conv, gn = fc_block.block[0], fc_block.block[1]
        self.final_k = conv.kernel_size[0]
        self.final = L.Packed(*L.pack_conv(conv), dtype)
        self.final_gn = (gn.num_groups, gn.eps)
        self.register_buffer("final_gw", gn.weight.detach().to(dtype).clone())
        self.register_buffer("final_gb", gn.bias.detach().to(dtype).clone())
        self.out = L.Packed(*L.pack_conv(fc_out), dtype)
        self.has_local_encoder = self.local is not None
        self.prepacked = False
        self.eval()
        self.requires_grad_(False)

    def prepack(self, batch_hint: int = 16) -> FastUnet1D:
        """Prepack every product's weight for oneDNN on this CPU (eager use only; not for torch.compile,
        whose freezing pass packs weights itself). Check `layers.prepack_works(dtype)` first."""
        for m in self.modules():
            if isinstance(m, L.Packed):
                m.prepack(batch_hint)
        self.prepacked = True
        return self

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """t: (B,) -> (B, dsed) float32: sinusoidal embedding (Vaswani et al. 2017), Linear, Mish, Linear."""
        half = self.temb_dim // 2
        freq = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        arg = t[:, None].float() * freq[None, :]
        emb = torch.cat((arg.sin(), arg.cos()), dim=-1)
        return self.t_lin2(F.mish(self.t_lin1(emb)))

    def forward(self, sample: torch.Tensor, t: torch.Tensor, local_cond: torch.Tensor | None = None,
                global_cond: torch.Tensor | None = None) -> torch.Tensor:
        feature = self.time_embedding(t)
        if global_cond is not None:
            feature = torch.cat([feature, global_cond.float()], dim=-1)
        film = self.film(F.mish(feature).to(self.dtype))  # (B, sum of FiLM widths)

        x = sample.to(self.dtype)
        h_local = []
        if local_cond is not None:
            if self.local is None:
                raise ValueError("local_cond given but the model was built without local_cond_dim")
            # Upstream diffusion_policy adds only the first local encoder's output (after the first down
            # block): its up-path condition `idx == len(up_modules)` never holds, and published checkpoints
            # depend on that. The second encoder is therefore not evaluated here.
            h_local = [self.local[0](local_cond.to(self.dtype), film)]

        skips = []
        for i, ((res1, res2), down) in enumerate(zip(self.down, self.downsample, strict=True)):
            x = res1(x, film)
            if i == 0 and h_local:
                x = x + h_local[0]
            x = res2(x, film)
            skips.append(x)
            if isinstance(down, L.Packed):
                x = L.conv(x, down, 3, stride=2)
        for mid in self.mid:
            x = mid(x, film)
        for (res1, res2), up in zip(self.up, self.upsample, strict=True):
            x = res1(torch.cat((x, skips.pop()), dim=-1), film)
            x = res2(x, film)
            if isinstance(up, L.Packed):
                x = L.upsample(x, up)
        x = L.conv(x, self.final, self.final_k)
        x = L.group_norm_mish(x, self.final_gn[0], self.final_gw, self.final_gb, self.final_gn[1])
        return L.conv(x, self.out, 1)


def _pack_down(down: nn.Module, dtype: torch.dtype) -> nn.Module:
    if not hasattr(down, "conv"):
        return nn.Identity()
    c = down.conv
    if c.kernel_size[0] != 3 or c.stride[0] != 2 or c.padding[0] != 1:
        raise ValueError(f"FastUnet1D expects Downsample1d convs of kernel 3, stride 2, padding 1; got {c}")
    return L.Packed(*L.pack_conv(c), dtype)


def _copy_linear(lin: nn.Linear, dtype: torch.dtype) -> nn.Linear:
    new = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None,
                    device=lin.weight.device, dtype=dtype)
    with torch.no_grad():
        new.weight.copy_(lin.weight)
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new.requires_grad_(False)

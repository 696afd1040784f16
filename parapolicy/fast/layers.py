"""Inference primitives of the fast UNet path, on activations kept as (B, T, C) ("channels last").

Every convolution is one matrix product on an im2col view,

    cols[b, t, c*k + j] = x_pad[b, t*stride + j, c]        (B*T_out, C_in*k)
    y = cols @ W_packed + bias                             W_packed[c*k + j, o] = conv.weight[o, c, j]

with the weights packed once at build time, so the product's output is already (B, T, C_out) and no
transpose ever runs between layers. `pack_*` build the packed (W, b); `Packed` holds them and computes
the product, optionally through a oneDNN weight prepacked for this CPU (`Packed.prepack`, the same
mechanism Inductor's freezing uses), which saves the per-call weight reorder of a plain addmm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pack_conv(conv: nn.Conv1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv1d weight (C_out, C_in, k), bias (C_out,) -> W (C_in*k, C_out), b (C_out,). Row index c*k + j."""
    w = conv.weight.detach()
    c_out = w.shape[0]
    bias = conv.bias.detach() if conv.bias is not None else w.new_zeros(c_out)
    return w.reshape(c_out, -1).t().contiguous(), bias.clone()


def pack_conv_with_residual(conv: nn.Conv1d, residual: nn.Conv1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse a k-tap conv and a 1x1 residual conv of the same input into one product.

    -> W (C_in*k, 2*C_out), b (2*C_out,): columns [:C_out] are `conv`, [C_out:] are `residual`, whose
    weight sits on the centre tap rows c*k + k//2 (the 1x1 conv sees x[t], the centre of the window).
    """
    w_main, b_main = pack_conv(conv)
    c_in, k = conv.in_channels, conv.kernel_size[0]
    r = residual.weight.detach()[:, :, 0]  # (C_out, C_in)
    w_res = w_main.new_zeros(c_in, k, r.shape[0])
    w_res[:, k // 2, :] = r.t()
    b_res = residual.bias.detach() if residual.bias is not None else b_main.new_zeros(r.shape[0])
    return torch.cat([w_main, w_res.reshape(c_in * k, -1)], dim=1), torch.cat([b_main, b_res])


def pack_upsample(convt: nn.ConvTranspose1d) -> tuple[torch.Tensor, torch.Tensor]:
    """ConvTranspose1d(C, C', kernel 4, stride 2, padding 1) as one product over 3-tap windows.

    Output position o = 2*i - 1 + k receives x[i] * W[:, :, k] (weight (C_in, C_out, 4)), so with
    m the window centre:  y[2m] = x[m] W1 + x[m-1] W3,   y[2m+1] = x[m] W2 + x[m+1] W0.
    -> W (C_in*3, 2*C_out) over windows [x[m-1], x[m], x[m+1]] (row c*3 + j), b (2*C_out,);
    the product's (B*T, 2, C_out) output is (B, 2T, C_out) after a free reshape.
    """
    if convt.kernel_size[0] != 4 or convt.stride[0] != 2 or convt.padding[0] != 1:
        raise ValueError(f"pack_upsample expects kernel 4, stride 2, padding 1; got {convt}")
    w = convt.weight.detach()  # (C_in, C_out, 4)
    c_in, c_out = w.shape[0], w.shape[1]
    packed = w.new_zeros(c_in, 3, 2, c_out)
    packed[:, 0, 0] = w[:, :, 3]
    packed[:, 1, 0] = w[:, :, 1]
    packed[:, 1, 1] = w[:, :, 2]
    packed[:, 2, 1] = w[:, :, 0]
    bias = convt.bias.detach() if convt.bias is not None else w.new_zeros(c_out)
    return packed.reshape(c_in * 3, 2 * c_out).contiguous(), torch.cat([bias, bias])


class Packed(nn.Module):
    """One packed product: forward(cols (M, K)) -> cols @ w + b, (M, N). Buffers w (K, N), b (N,)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("w", w.to(dtype).contiguous())
        self.register_buffer("b", b.to(dtype).contiguous())
        self.n_out = w.shape[1]
        self.packed: torch.Tensor | None = None

    def prepack(self, batch_hint: int = 16) -> None:
        """Reorder the weight once into oneDNN's blocked layout for this CPU (CPU only)."""
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.w.t().contiguous(), batch_hint)

    def forward(self, cols: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(cols.contiguous(), self.packed, self.b, "none", [], "")
        return torch.addmm(self.b, cols, self.w)


class ChannelsLastConv(nn.Module):
    """Conv1d (stride 1, padding k//2) run by oneDNN as a (k, 1) conv2d on the channels-last (B, C, T, 1)
    view of x: (B, T, C_in) -> (B, T, C_out), no im2col copy. Faster than im2col + matmul for narrow
    layers (measured: C_in <= 256 float32, <= 128 bf16); see `use_channels_last_conv`."""

    def __init__(self, conv: nn.Conv1d, dtype: torch.dtype):
        super().__init__()
        w = conv.weight.detach()[..., None].to(dtype)  # (C_out, C_in, k, 1)
        self.register_buffer("w", w.contiguous(memory_format=torch.channels_last))
        bias = conv.bias.detach() if conv.bias is not None else w.new_zeros(w.shape[0])
        self.register_buffer("b", bias.to(dtype).clone())
        self.k = conv.kernel_size[0]
        self.n_out = w.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        x4 = x.contiguous().view(B, T, 1, C).permute(0, 3, 1, 2)
        y = F.conv2d(x4, self.w, self.b, padding=(self.k // 2, 0))
        return y.permute(0, 2, 3, 1).reshape(B, T, self.n_out)


def use_channels_last_conv(c_in: int, dtype: torch.dtype, impl: str) -> bool:
    """impl "im2col" | "conv2d" | "auto" (conv2d for C_in <= 256 in float32, <= 128 in bf16)."""
    if impl not in ("auto", "im2col", "conv2d"):
        raise ValueError(f'conv_impl must be "auto", "im2col" or "conv2d", got {impl!r}')
    if impl != "auto":
        return impl == "conv2d"
    return c_in <= (256 if dtype == torch.float32 else 128)


def prepack_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN weight prepacking is available here and agrees with addmm on a small product."""
    try:
        g = torch.Generator().manual_seed(0)
        p = Packed(torch.randn(24, 8, generator=g), torch.randn(8, generator=g), dtype)
        x = torch.randn(5, 24, generator=g).to(dtype)
        ref = p(x).float()
        p.prepack()
        out = p(x).float()
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    return bool(((out - ref).abs().max() <= tol * ref.abs().max()).item())


def im2col(x: torch.Tensor, k: int, stride: int = 1) -> torch.Tensor:
    """x: (B, T, C) -> (B*T_out, C*k) windows of k steps, zero padded by k//2 each side; row index c*k + j."""
    p = k // 2
    xp = F.pad(x, (0, 0, p, p))
    cols = xp.unfold(1, k, stride)  # (B, T_out, C, k), a strided view
    return cols.reshape(-1, cols.shape[2] * k)


def conv(x: torch.Tensor, mm: Packed, k: int, stride: int = 1) -> torch.Tensor:
    """Packed Conv1d (padding k//2). x: (B, T, C_in) -> (B, T_out, mm.n_out)."""
    B = x.shape[0]
    cols = x.reshape(-1, x.shape[-1]) if k == 1 else im2col(x, k, stride)
    return mm(cols).view(B, -1, mm.n_out)


def upsample(x: torch.Tensor, mm: Packed) -> torch.Tensor:
    """Packed ConvTranspose1d(k=4, s=2, p=1) (mm from `pack_upsample`). x: (B, T, C) -> (B, 2T, C_out)."""
    B, T = x.shape[0], x.shape[1]
    y = mm(im2col(x, 3))  # (B*T, 2*C_out), columns [even | odd]
    return y.view(B, 2 * T, mm.n_out // 2)


def group_norm_mish(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                    eps: float) -> torch.Tensor:
    """Mish(GroupNorm(x)) over the channels of x: (B, T, C) -> (B, T, C).

    The (B, T, C) tensor is handed to torch's GroupNorm as a channels-last (B, C, T, 1) view, so the norm
    runs without a transpose copy (statistics in float32 also for bfloat16 inputs).
    """
    B, T, C = x.shape
    x4 = x.contiguous().view(B, T, 1, C).permute(0, 3, 1, 2)  # (B, C, T, 1), channels_last strides
    y = F.group_norm(x4, groups, weight, bias, eps)
    return F.mish(y).permute(0, 2, 3, 1).reshape(B, T, C)


def film(x: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor) -> torch.Tensor:
    """FiLM (Perez et al. 2018): scale * x + shift per (batch, channel).

    x: (B, T, C); scale, shift: (B, C) -> (B, T, C)."""
    if scale is None:
        return x + shift[:, None, :]
    return torch.addcmul(shift[:, None, :], x, scale[:, None, :])

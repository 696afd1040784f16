"""`optimize_denoiser`: build the fast inference path of a ConditionalUnet1D in one call.

    fast = optimize_denoiser(model, dtype=torch.float32, compile=False)
    eps = fast(sample, timestep, local_cond=None, global_cond=None)     # same call as model(...)

Options, each checked and reported:
    dtype     float32 (matches eager to ~1e-6 relative) or bfloat16, used only where the device has fast
              bf16 matrix units (CPU: AVX512-BF16 / AMX through oneDNN; CUDA: compute capability >= 8);
              elsewhere a warning is emitted and float32 is used.
    compile   torch.compile (Inductor) with weight freezing. Optional; compile time is measured per input
              shape and kept in `fast.compile_seconds`; if compiling fails, a warning is emitted and the
              uncompiled fast path is used from then on. Built modules are cached per (model, options) in
              this process, so a second `optimize_denoiser` call on an unchanged model returns the same
              (already compiled) object.
    prepack   (CPU, not compiled) reorder every weight once into oneDNN's blocked layout for this CPU;
              default on where `layers.prepack_works` confirms the private oneDNN ops exist and agree.
    cuda_graphs  on CUDA, replay one captured graph per fixed input shape (see cuda_graphs.py);
              default on when the model lives on a GPU.
"""

from __future__ import annotations

import time
import warnings
import weakref

import torch
from torch import nn

from parapolicy.fast.layers import prepack_works
from parapolicy.fast.timestep import normalize_timestep  # noqa: F401  (re-exported)
from parapolicy.fast.unet import FastUnet1D

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DTYPES = {"float32": torch.float32, "fp32": torch.float32,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def weights_stamp(model: nn.Module) -> tuple:
    """Identity and in-place version of every parameter and buffer: changes whenever the weights do
    (optimizer steps, load_state_dict, .data edits), so a fast copy of them can tell it is stale."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


def has_fast_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bfloat16 matrix products run on dedicated hardware on `device`.

    CPU: oneDNN bf16 support plus AVX512-BF16 or AMX-BF16 tiles (torch.cpu capability probes).
    CUDA: compute capability 8.0 or newer (Ampere tensor cores and later).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    names = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    probes = [getattr(torch.cpu, name, None) for name in names]
    return any(p is not None and bool(p()) for p in probes)


class FastDenoiser(nn.Module):
    """The fast path's callable: `forward(sample (B,T,D), timestep, local_cond=None, global_cond=None)
    -> (B,T,D)` in sample's dtype. Inference only: runs under no_grad; the core is in eval mode."""

    def __init__(self, core: FastUnet1D, compiled: bool = False, dynamic: bool | None = None):
        super().__init__()
        self.core = core
        self.dtype = core.dtype
        self.compiled = compiled
        self.compile_seconds: dict[tuple, float] = {}  # input signature -> seconds of its first call
        self._run = torch.compile(core, dynamic=dynamic, options={"freezing": True}) if compiled else core

    def forward(self, sample: torch.Tensor, timestep, local_cond: torch.Tensor | None = None,
                global_cond: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if sample.ndim != 3:
            raise ValueError(f"sample must be (B, T, D), got shape {tuple(sample.shape)}")
        B = sample.shape[0]
        t = normalize_timestep(timestep, B, sample.device)
        with torch.no_grad():
            if not self.compiled:
                return self._run(sample, t, local_cond, global_cond).to(sample.dtype)
            key = (tuple(sample.shape), local_cond is not None, global_cond is not None)
            if key in self.compile_seconds:
                return self._run(sample, t, local_cond, global_cond).to(sample.dtype)
            t0 = time.perf_counter()
            try:
                out = self._run(sample, t, local_cond, global_cond).to(sample.dtype)
            except Exception as err:  # a failed compile (toolchain, cache race) must not stop a controller
                warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                              f"falling back to the uncompiled fast path", RuntimeWarning, stacklevel=2)
                self._run, self.compiled = self.core, False
                return self._run(sample, t, local_cond, global_cond).to(sample.dtype)
            self.compile_seconds[key] = time.perf_counter() - t0
            return out


def optimize_denoiser(model: nn.Module, dtype: torch.dtype | str = torch.float32, compile: bool = False,
                      dynamic: bool | None = None, prepack: bool | None = None,
                      cuda_graphs: bool | None = None, conv_impl: str = "auto",
                      cache: bool = True) -> nn.Module:
    """Fast inference path of a ConditionalUnet1D (ours, or one loaded from real-stanford / LeRobot weights).

    model: the trained UNet (any device). dtype: torch.float32 or torch.bfloat16, or one of the strings
    "float32", "fp32", "bfloat16", "bf16" (config files) (bf16 falls back to float32
    with a warning where `has_fast_bf16` is false). compile: wrap in torch.compile with freezing (first
    call per shape compiles; see `.compile_seconds`). dynamic: passed to torch.compile (None: recompile
    once with symbolic batch size after a second shape). prepack: oneDNN-prepacked weights (CPU, eager
    only; None: on where it works). cuda_graphs: CUDA only, default True on CUDA. conv_impl: "auto"
    (narrow layers as channels-last oneDNN conv2d, wide ones as im2col matmuls), "im2col" or "conv2d".
    -> module with the eager call signature `f(sample (B,T,D), timestep, local_cond, global_cond) -> (B,T,D)`.
    Weights are copied: later in-place changes to `model` are picked up only by calling this again.
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch dtype, got {dtype!r}")
        dtype = _DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"optimize_denoiser needs a ConditionalUnet1D module, got {type(model).__name__}")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    if dtype == torch.bfloat16 and not has_fast_bf16(device):
        warnings.warn(f"bfloat16 requested but {device} has no fast bf16 matrix units; using float32",
                      RuntimeWarning, stacklevel=2)
        dtype = torch.float32
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda"
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs the model on a CUDA device, it is on {device}")

    if prepack and (compile or device.type != "cpu"):
        raise ValueError("prepack=True is for the eager CPU path (compile=False, model on CPU)")
    if prepack is None:
        prepack = device.type == "cpu" and not compile and prepack_works(dtype)
    elif prepack and not prepack_works(dtype):
        warnings.warn("oneDNN weight prepacking is unavailable here; using plain addmm", RuntimeWarning,
                      stacklevel=2)
        prepack = False

    key = (dtype, bool(compile), dynamic, bool(prepack), bool(cuda_graphs), conv_impl, str(device))
    stamp = weights_stamp(model)
    if cache:
        hit = _CACHE.get(model, {}).get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]

    core = FastUnet1D(model, dtype, conv_impl=conv_impl).to(device)
    if prepack:
        core.prepack()
    fast: nn.Module = FastDenoiser(core, compiled=bool(compile), dynamic=dynamic)
    if cuda_graphs:
        from parapolicy.fast.cuda_graphs import CUDAGraphDenoiser

        fast = CUDAGraphDenoiser(fast)
    if cache:
        _CACHE.setdefault(model, {})[key] = (stamp, fast)
    return fast

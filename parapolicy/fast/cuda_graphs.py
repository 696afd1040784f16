"""CUDA graphs for fixed window shapes: one Picard round (a batch of p denoiser calls) = one graph launch.

`CUDAGraphDenoiser(denoiser)` wraps any CUDA denoiser `f(sample (B,T,D), timestep, local_cond, global_cond)`.
The first call with a new input signature (shapes, dtypes, which conditions are given) warms the denoiser
up on a side stream and captures one `torch.cuda.CUDAGraph` into static input / output buffers; every
later call with that signature copies its inputs into the static buffers, replays the graph and returns a
copy of the static output. A sampler with a fixed window size p therefore captures one graph per window
size it uses (the last, shorter windows of a chunk add a few more). Each graph keeps its own memory pool.

Requirements: the denoiser must be capturable (no host synchronisation, no data-dependent shapes, no CPU
tensors created per call) -- `FastDenoiser` and the eager ConditionalUnet1D both are.
"""

from __future__ import annotations

import torch
from torch import nn

from parapolicy.fast.timestep import normalize_timestep


class CUDAGraphDenoiser(nn.Module):
    """Replays one captured CUDA graph per input signature; see the module docstring.

    forward(sample (B,T,D) cuda, timestep int | 0-d | (B,), local_cond (B,T,Lc) | None,
    global_cond (B,G) | None) -> (B,T,D), a fresh tensor (not the graph's static buffer).
    """

    def __init__(self, denoiser: nn.Module, warmup: int = 3):
        super().__init__()
        if not torch.cuda.is_available():
            raise ValueError("CUDAGraphDenoiser needs CUDA (torch.cuda.is_available() is False)")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (capture needs warmed-up kernels), got {warmup}")
        self.denoiser = denoiser
        self.warmup = warmup
        self.graphs: dict[tuple, tuple[dict, torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def forward(self, sample: torch.Tensor, timestep, local_cond: torch.Tensor | None = None,
                global_cond: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if sample.device.type != "cuda":
            raise ValueError(f"CUDAGraphDenoiser needs CUDA inputs, sample is on {sample.device}")
        t = normalize_timestep(timestep, sample.shape[0], sample.device).contiguous()
        inputs = {"sample": sample, "timestep": t, "local_cond": local_cond, "global_cond": global_cond}
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in inputs.items() if v is not None)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(inputs)
        static_in, graph, static_out = entry
        for k, v in static_in.items():
            v.copy_(inputs[k])
        graph.replay()
        return static_out.clone()

    def _capture(self, inputs: dict) -> tuple[dict, torch.cuda.CUDAGraph, torch.Tensor]:
        static = {k: v.clone() for k, v in inputs.items() if v is not None}

        def call():
            return self.denoiser(static["sample"], static["timestep"], local_cond=static.get("local_cond"),
                                 global_cond=static.get("global_cond"))

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(self.warmup):
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            out = call()
        return static, graph, out

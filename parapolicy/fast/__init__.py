"""Fast inference path for the Diffusion Policy UNet (issue 8).

    from parapolicy.fast import optimize_denoiser, measure_latency_curve
    fast = optimize_denoiser(model, dtype=torch.float32, compile=False)   # same call as model(...)
    cost_model = measure_latency_curve(fast, horizon=16, action_dim=2, global_cond_dim=40)  # {B: seconds}

Modules: `layers` (packed im2col primitives), `unet` (FastUnet1D re-layout), `timestep` (the timestep rule),
`optimize` (options, bf16 detection, compile, cache), `cuda_graphs` (CUDAGraphDenoiser), `latency` (batch-latency
curves).
"""

from parapolicy.fast.latency import compare_latency, measure_latency_curve
from parapolicy.fast.optimize import (
                                      FastDenoiser,
                                      has_fast_bf16,
                                      normalize_timestep,
                                      optimize_denoiser,
                                      weights_stamp,
)
from parapolicy.fast.unet import FastUnet1D

__all__ = ["optimize_denoiser", "has_fast_bf16", "normalize_timestep", "FastDenoiser", "FastUnet1D",
           "measure_latency_curve", "compare_latency", "weights_stamp"]

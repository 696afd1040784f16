"""Samplers for Diffusion Policy denoisers: pure functions sharing one signature.

    x0 = sample_sequential(denoiser, scheduler, x_T, noise=None, cond=None, num_inference_steps=None)
    x0, stats = sample_picard(denoiser, scheduler, x_T, noise=None, cond=None, num_inference_steps=None,
                              window=16, tol=0.1, max_iters=None, init=None, accel=None, deadline=None)

`denoiser(x (N,H,D), t (N,) long, cond (N,C) | None) -> (N,H,D)`; `scheduler` a configured diffusers
DDPMScheduler / DDIMScheduler (eta=0) / DPMSolverMultistepScheduler (dpmsolver++), never mutated.
See docs/samplers.md.
"""

from parapolicy.sampling.common import Denoiser
from parapolicy.sampling.picard import sample_picard
from parapolicy.sampling.sequential import sample_sequential
from parapolicy.sampling.stats import PicardStats
from parapolicy.sampling.warm import shift_trajectory

__all__ = ["Denoiser", "PicardStats", "sample_picard", "sample_sequential", "shift_trajectory"]

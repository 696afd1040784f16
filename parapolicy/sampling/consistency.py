"""Multistep consistency sampling (Song et al. 2023, Algorithm 1) for students of `parapolicy.consistency`.

    x0 = sample_consistency(denoiser, scheduler, x_T, noise=None, cond=None, num_inference_steps=None)

For levels n_0 = T > n_1 > ... > n_{S-1} (`consistency_math.sampling_levels`, LCM's schedule: T = 100, skip 10
gives [100], [100, 50], [100, 70, 40], [100, 80, 60, 40] for 1-4 steps):

    x0_k = clip(f(x_{n_k}, n_k))                                  (one denoiser call)
    x_{n_{k+1}} = alpha_{n_{k+1}} x0_k + sigma_{n_{k+1}} noise[k]   (re-noise; not after the last step)

noise (S, B, H, D) like every sampler's step noise: noise[k] re-noises after step k, noise[S-1] is unused (so the
eval harness's per-chunk noise of length S fits). The result is x0_{S-1}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from parapolicy.consistency_math import consistency_from_eps, levels, sampling_levels
from parapolicy.sampling.common import Denoiser, call_denoiser, check_inputs, resolve_noise
from parapolicy.schedule import per_row


@dataclass
class ConsistencyScheduler:
    """What sample_consistency needs; built by `consistency_scheduler(policy_config, steps)`. Never mutated."""

    alphas_cumprod: torch.Tensor
    """(T,) float64, the teacher's"""
    skip: int = 10
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    alpha_min: float = 1 / 80
    clip: float | None = 1.0
    prediction_type: str = "epsilon"
    num_inference_steps: int = 2
    levels: list[int] = field(init=False)
    """noise levels n of the steps (descending)"""

    def __post_init__(self):
        if self.prediction_type != "epsilon":
            raise ValueError(f"consistency students are epsilon networks, got prediction_type "
                             f"{self.prediction_type!r}")
        self.levels = sampling_levels(int(self.alphas_cumprod.shape[0]), int(self.skip),
                                      int(self.num_inference_steps))

    @property
    def timesteps(self) -> torch.Tensor:
        """(S,) long model timesteps n - 1 of the steps, like a diffusers scheduler's (e.g. [99, 49])."""
        return torch.tensor(self.levels, dtype=torch.long) - 1

    def with_steps(self, num_inference_steps: int) -> ConsistencyScheduler:
        return ConsistencyScheduler(self.alphas_cumprod, self.skip, self.sigma_data, self.timestep_scaling,
                                    self.alpha_min, self.clip, self.prediction_type, int(num_inference_steps))


def consistency_scheduler(config: dict, num_inference_steps: int | None = None) -> ConsistencyScheduler:
    """The scheduler of a consistency student's policy config (its `consistency` entry, written by
    parapolicy.consistency); num_inference_steps None = the config's own. ValueError for other policies."""
    from diffusers import DDPMScheduler

    c = config.get("consistency")
    if not isinstance(c, dict):
        raise ValueError("the 'consistency' sampler needs a consistency student (a policy written by "
                         "python -m parapolicy.consistency); this policy's config has no 'consistency' entry")
    sk = config["scheduler"]
    ac = DDPMScheduler(**sk).alphas_cumprod.to(torch.float64)
    clip = float(sk.get("clip_sample_range", 1.0)) if sk.get("clip_sample", True) else None
    steps = num_inference_steps or int(config["num_inference_steps"])
    return ConsistencyScheduler(ac, int(c["skip"]), float(c["sigma_data"]), float(c["timestep_scaling"]),
                                float(c["alpha_min"]), clip, sk.get("prediction_type", "epsilon"), int(steps))


def sample_consistency(denoiser: Denoiser, scheduler: ConsistencyScheduler, x_T: torch.Tensor,
                       noise: torch.Tensor | None = None, cond: torch.Tensor | None = None,
                       num_inference_steps: int | None = None, generator: torch.Generator | None = None,
                       return_trajectory: bool = False):
    """Multistep consistency sampling (module docstring).

    x_T: (B, H, D) initial noise; noise: (S, B, H, D) re-noising noise (noise[k] after step k), None -> drawn from
    `generator`; cond: (B, C) or None. Returns x_0 (B, H, D), or (x_0, the S states x_{n_k} stacked with x_0,
    (S+1, B, H, D)) with return_trajectory=True."""
    if not isinstance(scheduler, ConsistencyScheduler):
        raise ValueError(f"sample_consistency needs a ConsistencyScheduler (policy.scheduler('consistency') of a "
                         f"consistency student), got {type(scheduler).__name__}")
    sch = scheduler if num_inference_steps is None else scheduler.with_steps(num_inference_steps)
    S = len(sch.levels)
    B, H, D = check_inputs(x_T, cond, noise, S)
    n_all = torch.tensor(sch.levels, dtype=torch.long)
    _, sig_next = levels(sch.alphas_cumprod, torch.cat([n_all[1:], torch.zeros(1, dtype=torch.long)]))
    z = resolve_noise(noise, sig_next, x_T, generator)             # None when S = 1 (nothing is re-noised)
    x = x_T
    traj = [x]
    with torch.no_grad():
        for k in range(S):
            n = torch.full((B,), int(n_all[k]), dtype=torch.long)
            eps = call_denoiser(denoiser, x, (n - 1).to(x_T.device), cond)
            x0 = consistency_from_eps(x, eps, n, sch.alphas_cumprod, sch.sigma_data, sch.timestep_scaling,
                                      sch.alpha_min, sch.clip)
            if k + 1 < S:
                a, s = levels(sch.alphas_cumprod, torch.full((B,), int(n_all[k + 1]), dtype=torch.long))
                x = per_row(a, x0) * x0 + per_row(s, x0) * z[k]
                traj.append(x)
            else:
                x = x0
        traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x

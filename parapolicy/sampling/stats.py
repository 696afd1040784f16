"""What a Picard solve reports: plain data, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PicardStats:
    """Statistics of one `sample_picard` call (B samples, S steps).

    iterations: parallel rounds = sequential denoiser calls (the latency-relevant count).
    nfe: denoiser evaluations per sample (mean over the batch; one row of a batched call counts one).
    nfe_per_sample: (B,) evaluations spent on each sample (a converged sample stops costing evaluations).
    capped: True when max_iters or the deadline stopped the solve before every sample converged.
    converged_steps: (B,) length of the accepted prefix: trajectory points x_0..x_{converged_steps} passed
        the tolerance test (== S for a converged sample). After a cap the points past it are the frozen-x0
        rollout from there (see `sample_picard`), so x_S is the newest data prediction.
    converged: (B,) converged_steps == S.
    windows: per round, a list of (sample, begin, end) step windows [begin, end) evaluated that round.
    residuals: per round, a list (one per active sample) of (end - begin,) tensors with the per-step error
        ratio sqrt(||x_new - x_old||^2 / (H*D*tol_var)) of the points x_{begin+1..end} -- compare with tol.
    trajectory: (S+1, B, H, D) the final trajectory (x_T first, the sample last); pass it (shifted, see
        `shift_trajectory`) as `init=` of the next control step.
    window: the window used (after "auto" resolution); num_steps: S; accel: acceleration used.
    predicted_latency_s: the cost model's prediction for this call when window="auto", else None.
    guess: how unaccepted points were re-guessed ("frontier", "window", "none"; "sequential" for
        `sample_sequential`); atol: the absolute floor of the tolerance rule (the number used, also for atol="auto").
    """

    iterations: int
    nfe: float
    nfe_per_sample: list[int]
    capped: bool
    converged_steps: list[int]
    converged: list[bool]
    windows: list[list[tuple[int, int, int]]] = field(default_factory=list, repr=False)
    residuals: list[list[torch.Tensor]] = field(default_factory=list, repr=False)
    trajectory: torch.Tensor | None = field(default=None, repr=False)
    window: int = 0
    num_steps: int = 0
    accel: str = "none"
    predicted_latency_s: float | None = None
    guess: str = "none"
    atol: float = 0.0

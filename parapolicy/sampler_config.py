"""`SamplerConfig`: how to sample an action chunk. The one home of every sampler knob, read by
`DiffusionPolicy.predict_action`, the runtime `Runner` and the eval harness (a leaf module: no torch)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

SAMPLERS = ("ddpm", "paraddpm", "ddim", "paraddim", "dpmsolver", "paradpmsolver", "consistency")
GUESSES = ("auto", "hybrid", "frontier", "window", "none")
ACCELS = ("anderson", "taa")
UPDATES = ("picard", "parareal", "secant")
STARTS = ("predict", "zero")


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample an action chunk."""

    name: str = "paraddpm"
    """one of ddpm, paraddpm, ddim, paraddim, dpmsolver, paradpmsolver, consistency (consistency students only:
    multistep consistency sampling, 1-4 steps, docs/consistency.md)"""
    num_inference_steps: int | None = None
    """reverse steps; None = the checkpoint's (100 for Diffusion Policy's DDPM)"""
    window: int | str = 16
    """Picard window (steps solved per parallel round), or "auto" (cost model); parallel samplers only"""
    tol: float = 0.1
    """Picard tolerance (ParaDiGMS rule, see docs/samplers.md); 0 iterates until exact"""
    atol: float | str = 0.0
    """absolute floor of the per-step tolerance, RMS in normalised action units (0 = the ParaDiGMS rule), or
    "auto" (opt-in): tol times the smallest noise std the schedule injects, which only loosens the last,
    noise-free step's ~0 tolerance (docs/samplers.md)"""
    guess: str = "auto"
    """Picard re-guess of unaccepted points: auto, hybrid, frontier, window, none (docs/samplers.md)"""
    max_iters: int | None = None
    """cap on rounds (Picard) or steps (sequential samplers); None = no cap. The result after a cap is the
    network's newest data prediction (anytime contract, docs/samplers.md)"""
    time_budget: float | None = None
    """seconds from the start of `predict_action` after which the sampler stops between rounds/steps (on
    the clock `predict_action` is given); the first round/step always runs. None = no budget"""
    accel: str | None = None
    """fixed-point acceleration for Picard: None, "anderson" or "taa" (needs guess window or none)"""
    warm_start: bool = False
    """start each chunk's Picard iteration from the previous chunk's trajectory shifted in time (act())"""
    update: str = "picard"
    """window update: "picard" (ParaDiGMS's cumulative drift), "parareal" (opt-in: the correction carried
    through each step's frozen-x0 gain) or "secant" (opt-in: parareal plus a per-step secant correction);
    fewer rounds, larger distance from sequential within the same tolerance; docs/samplers.md"""
    start: str = "predict"
    """Picard's first guess without a warm start: "predict" (first round = x_T alone, then the rollout from
    its data prediction) or "zero" (opt-in: the rollout from a zero data prediction, first round a full
    window); with warm_start it applies to an episode's first chunk; docs/samplers.md"""
    first_window: int | None = None
    """Picard's first-round window (opt-in), later rounds use `window`; None = the start's own (1 with start
    "predict", `window` with "zero" or a warm start). A zero start's first round accepts 2-7 steps whatever
    its size, so a smaller one saves NFE (docs/rounds.md)"""

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if self.num_inference_steps is not None and not _pos_int(self.num_inference_steps):
            raise ValueError(f"num_inference_steps must be an int >= 1 or None, got {self.num_inference_steps!r}")
        if self.window != "auto" and not _pos_int(self.window):
            raise ValueError(f"window must be an int >= 1 or 'auto', got {self.window!r}")
        if self.first_window is not None and not _pos_int(self.first_window):
            raise ValueError(f"first_window must be None or an int >= 1, got {self.first_window!r}")
        for key in ("tol", "atol"):
            v = getattr(self, key)
            if key == "atol" and v == "auto":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                extra = " or 'auto'" if key == "atol" else ""
                raise ValueError(f"{key} must be a finite number >= 0{extra}, got {v!r}")
        if self.guess not in GUESSES:
            raise ValueError(f"guess must be one of {', '.join(GUESSES)}, got {self.guess!r}")
        if self.max_iters is not None and not _pos_int(self.max_iters):
            raise ValueError(f"max_iters must be an int >= 1 or None, got {self.max_iters!r}")
        b = self.time_budget
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not (b >= 0 and
                                                                                            math.isfinite(b))):
            raise ValueError(f"time_budget must be seconds >= 0 or None, got {b!r}")
        if self.accel is not None and self.accel not in ACCELS:
            raise ValueError(f"accel must be None or one of {', '.join(ACCELS)}, got {self.accel!r}")
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {self.update!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.start != "predict" and self.guess == "none":
            raise ValueError(f"start={self.start!r} sets a first guess, which guess 'none' never uses")
        if self.accel is not None and self.guess in ("hybrid", "frontier"):
            raise ValueError(f"accel={self.accel!r} needs guess 'window', 'none' or 'auto', got {self.guess!r}")

    @property
    def parallel(self) -> bool:
        return self.name.startswith("para")

    @property
    def family(self) -> str:
        return self.name.removeprefix("para")

    def replace(self, **changes) -> SamplerConfig:
        return dataclasses.replace(self, **changes)


def _pos_int(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= 1


SAMPLER_KNOBS = tuple(f.name for f in dataclasses.fields(SamplerConfig) if f.name != "name")
"""every SamplerConfig field but the name: the keys of the eval config's `sampler` group"""


def as_sampler_config(sampler) -> SamplerConfig:
    """A name, a dict of SamplerConfig fields or a SamplerConfig -> SamplerConfig (ValueError otherwise)."""
    if isinstance(sampler, SamplerConfig):
        return sampler
    if isinstance(sampler, str):
        return SamplerConfig(name=sampler)
    if isinstance(sampler, dict):
        unknown = sorted(set(sampler) - {f.name for f in dataclasses.fields(SamplerConfig)})
        if unknown:
            raise ValueError(f"unknown sampler knob {unknown[0]!r}; SamplerConfig fields are name, "
                             f"{', '.join(SAMPLER_KNOBS)}")
        return SamplerConfig(**sampler)
    raise ValueError(f"sampler must be a name, a dict or a SamplerConfig, got {type(sampler).__name__}")

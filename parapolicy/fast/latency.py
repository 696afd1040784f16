"""Batch-latency curves of any denoiser, in the `{batch: seconds}` form the sampler's cost model reads.

A denoiser here is any callable, called with one of two contracts:
    contract="unet"     f(sample (B,T,D), timestep (B,) long, local_cond=..., global_cond=...) -> (B,T,D)
                        (ConditionalUnet1D, `optimize_denoiser`'s module, CUDAGraphDenoiser)
    contract="sampler"  f(x (B,T,D), t (B,) long, cond (B,G) | None) -> (B,T,D)
                        (parapolicy.sampling's Denoiser protocol)
The curve is measured as the sampler's cost model measures it (`parapolicy.sampling.cost.time_denoisers`,
the one definition): after untimed warm-up repetitions, batch sizes and denoisers are called interleaved (one
call of each in turn, per repetition), with a CUDA synchronize around each call when the inputs live on a GPU;
the figure per batch size is the fastest call (background load only ever adds time), made non-decreasing in
the batch size.

`compare_latency` times several denoisers that way, so that background load on a shared machine falls on all
of them alike and their ratios stay meaningful even when absolute times are noisy. It records two clocks per
call: wall time (what a controller waits for; the default) and this process's CPU time (`time.process_time`,
all its threads). With one torch thread on a machine shared with other jobs, the CPU-time figure estimates
the wall time the call would take alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

from parapolicy.sampling.cost import time_denoisers

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


def make_inputs(batch: int, horizon: int, action_dim: int, global_cond_dim: int | None = None,
                local_cond_dim: int | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, seed: int = 0, num_timesteps: int = 100) -> dict:
    """Random denoiser inputs: {"sample": (B,T,D), "timestep": (B,) long, "local_cond", "global_cond"}."""
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "sample": torch.randn(batch, horizon, action_dim, generator=g, dtype=dtype),
        "timestep": torch.randint(0, num_timesteps, (batch,), generator=g),
        "local_cond": (torch.randn(batch, horizon, local_cond_dim, generator=g, dtype=dtype)
                       if local_cond_dim else None),
        "global_cond": (torch.randn(batch, global_cond_dim, generator=g, dtype=dtype)
                        if global_cond_dim else None),
    }
    return {k: (v.to(device) if v is not None else None) for k, v in inputs.items()}


def compare_latency(denoisers: Mapping[str, Callable], *, horizon: int, action_dim: int,
                    batch_sizes: Iterable[int] = DEFAULT_BATCHES, global_cond_dim: int | None = None,
                    local_cond_dim: int | None = None, warmup: int = 2, repeats: int = 7,
                    device: str | torch.device = "cpu", min_seconds: float = 0.0,
                    samples: dict | None = None, clock: str = "wall",
                    contract: str = "unet") -> dict[str, dict[int, float]]:
    """Seconds per call of each denoiser at each batch size, timed interleaved (module docstring).

    -> {name: {batch: seconds}}. `warmup` untimed repetitions first; then at least `repeats` timed repetitions
    (each calls every denoiser once at every batch size), continuing until `min_seconds` have passed.
    clock: "wall" (perf_counter) or "process" (process CPU time) for the returned curves. If `samples` is
    a dict, every raw timing is stored in it: samples[name][batch] = {"wall": [s, ...], "process": [s, ...]}.
    """
    if contract not in ("unet", "sampler"):
        raise ValueError(f'contract must be "unet" or "sampler", got {contract!r}')
    if contract == "sampler" and local_cond_dim:
        raise ValueError('the "sampler" contract has no local_cond; use contract="unet"')
    if clock not in ("wall", "process"):
        raise ValueError(f'clock must be "wall" or "process", got {clock!r}')
    batch_sizes = [int(b) for b in batch_sizes]
    if not denoisers:
        raise ValueError("compare_latency needs at least one denoiser")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be positive integers, got {batch_sizes}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    calls = {}
    for b in batch_sizes:
        inp = make_inputs(b, horizon, action_dim, global_cond_dim, local_cond_dim, device=device)
        if contract == "unet":
            calls[b] = ((inp["sample"], inp["timestep"]),
                        {k: inp[k] for k in ("local_cond", "global_cond") if inp[k] is not None})
        else:
            calls[b] = ((inp["sample"], inp["timestep"], inp["global_cond"]), {})
    return time_denoisers(denoisers, calls, repeats=repeats, warmup=warmup,
                          cuda=torch.device(device).type == "cuda", clock=clock, min_seconds=min_seconds,
                          samples=samples)


def measure_latency_curve(denoiser: Callable, *, horizon: int, action_dim: int,
                          batch_sizes: Iterable[int] = DEFAULT_BATCHES, global_cond_dim: int | None = None,
                          local_cond_dim: int | None = None, warmup: int = 2, repeats: int = 7,
                          device: str | torch.device = "cpu", clock: str = "wall",
                          contract: str = "unet") -> dict[int, float]:
    """{batch: seconds per call} of one denoiser: the `cost_model` of the sampler's window="auto".

    Example:
        >>> curve = measure_latency_curve(fast, horizon=16, action_dim=2, global_cond_dim=40)
        >>> curve[16] / curve[1]          # how much a batch of 16 costs relative to one call
        >>> measure_latency_curve(lambda x, t, c: fast(x, t, global_cond=c), horizon=16, action_dim=2,
        ...                       global_cond_dim=40, contract="sampler")
    """
    return compare_latency({"d": denoiser}, horizon=horizon, action_dim=action_dim, batch_sizes=batch_sizes,
                           global_cond_dim=global_cond_dim, local_cond_dim=local_cond_dim, warmup=warmup,
                           repeats=repeats, device=device, clock=clock, contract=contract)["d"]

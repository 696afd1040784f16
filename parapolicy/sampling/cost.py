"""Cost model for Picard sampling and the automatic window (`window="auto"`).

Latency of one Picard solve = sum over rounds r of t(N_r), where t(N) is the denoiser's wall-clock time for a
batch of N rows and N_r = B * (steps in round r's window). A larger window needs fewer rounds but each
round costs more; on a GPU t(N) is flat up to large N (big window wins), on a small CPU it grows almost
linearly (small window wins).

Rounds are predicted from the window's mean advance a(p) (steps accepted per round): measured values can be
given (`CostModel.advance`, e.g. from `stats` of earlier solves: num_steps / iterations; `CostModel.measured`
also refits the default curve to them, and `DiffusionPolicy` does this with its own solves, per sampler,
step count and start, cold or warm), else the default
saturating model a(p) = 1 + (A - 1)(1 - exp(-(p - 1) / (A - 1))), A = `max_advance` = 7: convergence, not
the window, limits the advance of a large window. A = 7 fits the Push-T policy (100-step DDPM, tol 0.1,
rollout start: measured a = 1.92, 3.45, 5.56, 6.25 for p = 2, 4, 8, 16; model 1.92, 3.36, 5.12, 6.51).
The round sequence is then simulated: window n_r = min(p, S - begin), begin += max(1, min(a(p), n_r)).

The measured curve is cached per (denoiser, device, dtype, H, D, C), so it is measured once per process;
`DiffusionPolicy` keys it by the UNet path it calls (fast path included) and passes it as `cost_model`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

_LATENCY_CACHE: dict = {}
_CACHE_SIZE = 8
DEFAULT_MAX_ADVANCE = 7.0


@dataclass
class CostModel:
    """latency: {batch rows: seconds per denoiser call}, measured or supplied (e.g. by a faster denoiser);
    advance: optional measured {window: mean steps accepted per round}; max_advance: the default advance
    model's saturation A (module docstring)."""

    latency: dict[int, float]
    advance: dict[int, float] = field(default_factory=dict)
    max_advance: float = DEFAULT_MAX_ADVANCE

    def __post_init__(self):
        if not self.latency:
            raise ValueError("CostModel.latency must hold at least one {batch: seconds} entry")
        for n, s in self.latency.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"CostModel.latency keys must be batch sizes >= 1, got {n!r}")
            if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
                raise ValueError(f"CostModel.latency[{n}] must be seconds > 0, got {s!r}")
        for p, a in self.advance.items():
            if not (isinstance(a, (int, float)) and a >= 1):
                raise ValueError(f"CostModel.advance[{p}] must be >= 1 step per round, got {a!r}")
        if not (isinstance(self.max_advance, (int, float)) and self.max_advance > 1):
            raise ValueError(f"CostModel.max_advance must be > 1, got {self.max_advance!r}")
        self.latency = dict(sorted(self.latency.items()))

    def t(self, n: int) -> float:
        """Predicted seconds for a batch of n rows: piecewise-linear in n through the measured points,
        extrapolated with the last segment's slope (or proportionally from a single point)."""
        xs, ys = list(self.latency), list(self.latency.values())
        if len(xs) == 1:
            return ys[0] * max(1.0, n / xs[0]) if n > xs[0] else ys[0]
        if n <= xs[0]:
            return ys[0]
        for i in range(1, len(xs)):
            if n <= xs[i]:
                return ys[i - 1] + (ys[i] - ys[i - 1]) * (n - xs[i - 1]) / (xs[i] - xs[i - 1])
        slope = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
        return ys[-1] + slope * (n - xs[-1])

    def adv(self, p: int) -> float:
        if p in self.advance:
            return float(self.advance[p])
        return default_advance(p, self.max_advance)

    @classmethod
    def measured(cls, latency: dict[int, float], advance: dict[int, float]) -> CostModel:
        """A cost model that knows how far a round advances: measured windows keep their own advance, every
        other window follows the default curve refitted to the measurements (`fit_max_advance`)."""
        return cls(latency, dict(advance), max_advance=fit_max_advance(advance) if advance else DEFAULT_MAX_ADVANCE)


def default_advance(p: int, max_advance: float) -> float:
    """The saturating advance model a(p) = 1 + (A - 1)(1 - exp(-(p - 1) / (A - 1))) (module docstring)."""
    A = float(max_advance)
    return 1.0 + (A - 1.0) * (1.0 - math.exp(-(p - 1) / (A - 1.0)))


def fit_max_advance(advance: dict[int, float], lo: float = 1.0 + 1e-6, hi: float = 1e4) -> float:
    """The saturation A of the default advance model that best fits measured {window: steps per round}
    (least squares, by bisection on the mean residual; a(p) grows with A). Windows of 1 carry no information."""
    pts = [(p, a) for p, a in advance.items() if p > 1]
    if not pts:
        return DEFAULT_MAX_ADVANCE

    def resid(A):
        return sum(default_advance(p, A) - min(a, p) for p, a in pts)

    if resid(hi) < 0:
        return hi
    if resid(lo) > 0:
        return lo
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if resid(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def predict(cost: CostModel, num_steps: int, window: int, batch: int = 1) -> tuple[float, int]:
    """(predicted seconds, predicted rounds) of a Picard solve of `num_steps` steps, `batch` samples."""
    begin, secs, rounds = 0.0, 0.0, 0
    while begin < num_steps - 1e-9:
        n = min(window, math.ceil(num_steps - begin))
        secs += cost.t(batch * n)
        rounds += 1
        begin += max(1.0, min(cost.adv(window), n))
    return secs, rounds


def measure_latency(denoiser, x: torch.Tensor, cond: torch.Tensor | None, batches, repeats: int = 5,
                    warmup: int = 1) -> dict[int, float]:
    """Wall-clock seconds of `denoiser` per batch size (rows), inputs shaped like x[0] / cond[0].

    Robust to a shared machine: the batch sizes are timed interleaved (one call of each per repetition),
    each size keeps its fastest call (background load only ever adds time), and the curve is made
    non-decreasing in the batch size (a bigger batch is never cheaper; a noisy dip would otherwise pull
    window="auto" to a huge window). x: (B, H, D) example input; cond: (B, C) or None. Synchronises CUDA.
    The measuring itself is `time_denoisers`, shared with `parapolicy.fast.latency`."""
    H, D = x.shape[1:]
    sizes = sorted(set(int(b) for b in batches))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be positive integers, got {list(batches)}")
    inputs = {}
    for n in sizes:
        xs = x[:1].expand(n, H, D).contiguous()
        cs = None if cond is None else cond[:1].expand(n, cond.shape[1]).contiguous()
        inputs[n] = ((xs, torch.full((n,), 10, dtype=torch.long, device=x.device), cs), {})
    return time_denoisers({"d": denoiser}, inputs, repeats=repeats, warmup=warmup, cuda=x.is_cuda)["d"]


def time_denoisers(denoisers: Mapping[str, Callable], inputs: Mapping[int, tuple[tuple, dict]], *,
                   repeats: int = 5, warmup: int = 1, cuda: bool = False, clock: str = "wall",
                   min_seconds: float = 0.0, samples: dict | None = None) -> dict[str, dict[int, float]]:
    """The one definition of how a latency curve is measured: {name: {batch: seconds per call}}.

    inputs: {batch: (args, kwargs)}, each denoiser is called as f(*args, **kwargs). Every repetition calls each
    batch size, and at each size each denoiser, once in turn (interleaved, so background load falls on all of
    them alike); the first `warmup` repetitions are untimed; at least `repeats` timed repetitions follow,
    continuing until `min_seconds` of timed repetitions have passed. Per denoiser and size the fastest call
    is kept (`fastest_curve`: load only ever adds time) and the curve is made non-decreasing in the batch.
    clock: "wall" (time.perf_counter) or "process" (this process's CPU time, all threads) for the curve;
    both are recorded per call, and if `samples` is a dict every raw timing is stored in it:
    samples[name][batch] = {"wall": [s, ...], "process": [s, ...]}. cuda: synchronise around each call."""
    if clock not in ("wall", "process"):
        raise ValueError(f'clock must be "wall" or "process", got {clock!r}')
    if not denoisers:
        raise ValueError("time_denoisers needs at least one denoiser")
    sizes = sorted(int(b) for b in inputs)
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be positive integers, got {sizes}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = {name: {n: {"wall": [], "process": []} for n in sizes} for name in denoisers}
    with torch.no_grad():
        i, start = 0, None
        while True:
            if i == warmup:
                start = time.perf_counter()
            for n in sizes:
                args, kwargs = inputs[n]
                for name, f in denoisers.items():
                    sync()
                    t0, c0 = time.perf_counter(), time.process_time()
                    f(*args, **kwargs)
                    sync()
                    if i >= warmup:
                        times[name][n]["wall"].append(time.perf_counter() - t0)
                        times[name][n]["process"].append(time.process_time() - c0)
            i += 1
            if i - warmup >= repeats and time.perf_counter() - start >= min_seconds:
                break
    if samples is not None:
        for name, per_size in times.items():
            samples.setdefault(name, {}).update(per_size)
    return {name: fastest_curve({n: ts[clock] for n, ts in per_size.items()}) for name, per_size in times.items()}


def fastest_curve(times: Mapping[int, list[float]]) -> dict[int, float]:
    """{batch: [seconds of each call]} -> {batch: seconds}: the fastest call per batch size, made non-decreasing
    in the batch size (a bigger batch is never cheaper)."""
    out, floor = {}, 0.0
    for n in sorted(times):
        floor = max(floor, min(times[n]))
        out[n] = floor
    return out


def latency_batches(max_rows: int) -> list[int]:
    """Batch sizes 1, 2, 4, ... below max_rows, then max_rows: the points of a measured curve."""
    batches, n = [], 1
    while n < max_rows:
        batches.append(n)
        n *= 2
    return batches + [max_rows]


def cached_latency(denoiser, x: torch.Tensor, cond: torch.Tensor | None, max_rows: int,
                   key=None, measure: bool = True) -> dict[int, float] | None:
    """`measure_latency` over `latency_batches(max_rows)`, measured once per process and key.

    key: what identifies the denoiser in the cache (default: the denoiser object itself, never its id, which a
    garbage-collected callable can hand on to another). A caller whose denoiser is rebuilt per call (a bound
    method such as `policy.denoiser`) passes the stable object behind it, as `DiffusionPolicy.cost_model`.
    measure=False: return None instead of measuring when the curve is not cached (calls under a deadline)."""
    key = (denoiser if key is None else key, str(x.device), x.dtype, tuple(x.shape[1:]),
           None if cond is None else cond.shape[1])
    hit = _LATENCY_CACHE.get(key)
    if hit is not None and max(hit) >= max_rows:
        return hit
    if not measure:
        return None
    curve = measure_latency(denoiser, x, cond, latency_batches(max_rows))
    _LATENCY_CACHE[key] = curve
    while len(_LATENCY_CACHE) > _CACHE_SIZE:  # holds denoisers alive: keep only the newest few
        _LATENCY_CACHE.pop(next(iter(_LATENCY_CACHE)))
    return curve


def choose_window(denoiser, x_T: torch.Tensor, cond: torch.Tensor | None, num_steps: int,
                  cost_model=None) -> tuple[int, float]:
    """Window in 1..num_steps minimising the predicted latency; returns (window, predicted seconds).

    cost_model: None (measure this denoiser now, cached), a {batch: seconds} dict, or a `CostModel`."""
    B = x_T.shape[0]
    if cost_model is None:
        cost = CostModel(cached_latency(denoiser, x_T, cond, B * num_steps))
    elif isinstance(cost_model, CostModel):
        cost = cost_model
    elif isinstance(cost_model, dict):
        cost = CostModel(dict(cost_model))
    else:
        raise ValueError(f"cost_model must be None, a {{batch: seconds}} dict or a CostModel, got "
                         f"{type(cost_model).__name__}")
    best = min(range(1, num_steps + 1), key=lambda p: (predict(cost, num_steps, p, B)[0], p))
    return best, predict(cost, num_steps, best, B)[0]

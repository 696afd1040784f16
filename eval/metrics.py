"""Statistics for the evaluation: means with Student-t 95% confidence intervals, paired per-episode differences,
percentile summaries, and the per-sampler metric block of `results.json`.

Pure functions on plain lists and dicts (no torch, no numpy needed by callers).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence


def _t_pdf(x: float, df: float) -> float:
    """Student-t density: Gamma((v+1)/2) / (sqrt(v pi) Gamma(v/2)) (1 + x^2/v)^(-(v+1)/2)."""
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(logc - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf(x: float, df: float, n: int = 4000) -> float:
    """P(T <= x) for x >= 0: 1/2 + integral_0^x pdf, Simpson's rule on n (even) intervals."""
    h = x / n
    s = _t_pdf(0.0, df) + _t_pdf(x, df)
    s += 4 * sum(_t_pdf((2 * i - 1) * h, df) for i in range(1, n // 2 + 1))
    s += 2 * sum(_t_pdf(2 * i * h, df) for i in range(1, n // 2))
    return 0.5 + s * h / 3


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t with `df` degrees of freedom, for p in (0.5, 1); e.g. t_quantile(0.975, 4) = 2.776.
    Bisection on the numerically integrated CDF (no scipy needed); df = inf gives the normal quantile."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p}")
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isinf(df) or df > 1e6:
        return math.sqrt(2) * _erfinv(2 * p - 1)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-7:
            break
    return (lo + hi) / 2


def _erfinv(y: float) -> float:
    """Inverse error function by Newton's method on math.erf."""
    x = 0.0
    for _ in range(100):
        step = (math.erf(x) - y) / (2 / math.sqrt(math.pi) * math.exp(-x * x))
        x -= step
        if abs(step) < 1e-12:
            break
    return x


def mean_ci(values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """Mean and the Student-t confidence interval  mean +- t_{(1+level)/2, n-1} * s / sqrt(n).

    -> {"mean", "lo", "hi", "half_width", "std", "n"}; lo/hi are None for n < 2 (no spread to estimate),
    all None for n = 0. bounds: the range the mean can take (e.g. (0, 1) for a reward); lo/hi are clipped to
    it (half_width is not)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "half_width": None, "std": None, "n": 0}
    m = sum(xs) / n
    if n < 2:
        return {"mean": m, "lo": None, "hi": None, "half_width": None, "std": None, "n": 1}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    hw = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    lo, hi = m - hw, m + hw
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": m, "lo": lo, "hi": hi, "half_width": hw, "std": sd, "n": n}


def percentile(values: Sequence[float], q: float) -> float | None:
    """q-th percentile (0..100), linear interpolation between order statistics (numpy's default)."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    i = int(math.floor(pos))
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (xs[j] - xs[i]) * (pos - i)


def summary(values: Iterable[float]) -> dict:
    """{"mean", "p50", "p95", "max", "n"} of a list (None entries when empty)."""
    xs = [float(v) for v in values]
    if not xs:
        return {"mean": None, "p50": None, "p95": None, "max": None, "n": 0}
    return {"mean": sum(xs) / len(xs), "p50": percentile(xs, 50), "p95": percentile(xs, 95), "max": max(xs),
            "n": len(xs)}


def paired_difference(a: dict, b: dict, level: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """Per-episode differences b[k] - a[k] over the keys (episode seeds) both have, with a t-interval.

    a, b: {seed: value}. -> mean_ci of the differences plus "seeds" (the paired keys, sorted)."""
    keys = sorted(set(a) & set(b))
    out = mean_ci([float(b[k]) - float(a[k]) for k in keys], level, bounds)
    out["seeds"] = keys
    return out


def sampler_metrics(episodes: Sequence[dict], latency_ms: Sequence[float], latency_source: str,
                    rounds: Sequence[float], nfe: Sequence[float], wall_s: float,
                    action_error: float | None) -> dict:
    """The metric block of one sampler.

    episodes: finished episode records (status "ok") with max_reward and success.
    latency_ms: batch-1 per-call latencies, warm-up excluded. rounds / nfe: per call (one robot's chunk).
    wall_s: wall-clock seconds spent running these episodes (for episodes/minute).
    mean_score (Diffusion Policy) = avg_max_reward (LeRobot) = mean over episodes of the max reward;
    pc_success = 100 * fraction of episodes that reached the success threshold."""
    scores = [float(e["max_reward"]) for e in episodes]
    succ = [100.0 if e["success"] else 0.0 for e in episodes]
    score_ci, succ_ci = mean_ci(scores, bounds=(0.0, 1.0)), mean_ci(succ, bounds=(0.0, 100.0))
    return {
        "n_episodes": len(episodes),
        "mean_score": score_ci["mean"],
        "mean_score_ci95": [score_ci["lo"], score_ci["hi"]],
        "avg_max_reward": score_ci["mean"],
        "pc_success": succ_ci["mean"],
        "pc_success_ci95": [succ_ci["lo"], succ_ci["hi"]],
        "latency_ms": summary(latency_ms),
        "latency_source": latency_source,
        "rounds_per_call": summary(rounds),
        "nfe_per_call": summary(nfe),
        "max_action_error": action_error,
        "episodes_per_min": (60.0 * len(episodes) / wall_s) if wall_s > 0 and episodes else None,
        "wall_s": wall_s,
    }

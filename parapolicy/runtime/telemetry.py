"""Runtime telemetry as plain dataclass records (`dataclasses.asdict` gives dicts for wandb or JSON).

One `ChunkRecord` per inference request, one `TickRecord` per control tick; `summarize` reduces them to a flat
dict of numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class ChunkRecord:
    """One inference request and what became of its chunk. Times in seconds on the runner's clock."""

    chunk_id: int
    t_obs: float  # time of the latest observation it was computed from
    t_submit: float
    queue_depth_at_submit: int  # queued actions (this tick's included) when inference was triggered
    t_arrive: float | None = None  # tick time at which the runner merged it (None: never arrived)
    inference_s: float | None = None  # duration of predict_action (scaled in simulated-latency mode)
    iterations: int | None = None  # sampler rounds (None for samplers without stats)
    nfe: int | None = None
    capped: bool = False  # the sampler stopped early (deadline or max_iters), stats.capped
    budget_s: float | None = None  # latency budget, if any
    deadline_in_s: float | None = None  # deadline given to the sampler, s after submit (budget - margin)
    deadline_hit: bool = False  # a budget was set and the sampler stopped at it
    deadline_missed: bool = False  # inference_s > budget_s: the chunk came later than budgeted
    budget_infeasible: bool = False  # the budget margin was >= the budget: the sampler got one round
    warm_started: bool = False
    warm_shift: int = 0  # ticks the previous trajectory was shifted by for the warm start
    n_actions: int = 0
    dropped_stale: int = 0  # actions of this chunk whose time had passed when it arrived
    replaced: int = 0  # queued actions of older chunks this chunk replaced
    blended: int = 0
    inpainted: int = 0  # overlap "inpaint": queued actions passed as the chunk's fixed prefix (d)
    clipped: int = 0  # action entries clipped to the bounds
    rejected: str | None = None  # why the chunk was refused (non-finite actions, wrong shape)
    error: str | None = None  # exception raised by predict_action


@dataclass
class TickRecord:
    """One control tick. `source`: "queue" (an action of a chunk), "hold" (last safe action repeated),
    "none" (nothing safe to send yet). `reason` says why a tick held."""

    t: float
    source: str
    chunk_id: int | None = None
    index: int | None = None
    reason: str = ""
    queue_depth: int = 0  # actions left after this tick
    dropped_stale: int = 0  # queued actions dropped at this tick because their time had passed
    bad_obs: bool = False
    inflight: bool = False


@dataclass
class Telemetry:
    chunks: list[ChunkRecord] = field(default_factory=list)
    ticks: list[TickRecord] = field(default_factory=list)

    def clear(self) -> None:
        self.chunks.clear()
        self.ticks.clear()

    def as_dicts(self) -> dict[str, list[dict]]:
        return {"chunks": [asdict(c) for c in self.chunks], "ticks": [asdict(t) for t in self.ticks]}

    def summary(self) -> dict[str, float]:
        return summarize(self.chunks, self.ticks)


def _pct(x: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(x, dtype=np.float64), q)) if x else float("nan")


def summarize(chunks: list[ChunkRecord], ticks: list[TickRecord]) -> dict[str, float]:
    """Flat dict of counts and latency percentiles (ms) over the records."""
    done = [c for c in chunks if c.inference_s is not None and c.error is None]
    lat_ms = [1e3 * c.inference_s for c in done]
    iters = [c.iterations for c in done if c.iterations is not None]
    nfe = [c.nfe for c in done if c.nfe is not None]
    depth = [t.queue_depth for t in ticks]
    n_ticks = len(ticks)
    n_hold = sum(t.source != "queue" for t in ticks)
    return {
        "ticks": n_ticks,
        "holds": n_hold,
        "hold_fraction": n_hold / n_ticks if n_ticks else float("nan"),
        "bad_obs": sum(t.bad_obs for t in ticks),
        "chunks": len(chunks),
        "chunk_errors": sum(c.error is not None for c in chunks),
        "chunks_rejected": sum(c.rejected is not None for c in chunks),
        "dropped_on_arrival": sum(c.dropped_stale for c in chunks),
        "dropped_at_tick": sum(t.dropped_stale for t in ticks),
        "replaced": sum(c.replaced for c in chunks),
        "blended": sum(c.blended for c in chunks),
        "clipped": sum(c.clipped for c in chunks),
        "capped": sum(c.capped for c in chunks),
        "deadline_hits": sum(c.deadline_hit for c in chunks),
        "deadline_misses": sum(c.deadline_missed for c in chunks),
        "inference_ms_p50": _pct(lat_ms, 50),
        "inference_ms_p95": _pct(lat_ms, 95),
        "inference_ms_max": max(lat_ms) if lat_ms else float("nan"),
        "iterations_mean": float(np.mean(iters)) if iters else float("nan"),
        "nfe_mean": float(np.mean(nfe)) if nfe else float("nan"),
        "queue_depth_mean": float(np.mean(depth)) if depth else float("nan"),
        "queue_depth_min": float(min(depth)) if depth else float("nan"),
    }

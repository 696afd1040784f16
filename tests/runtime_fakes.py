"""Fake policies and robots for the runtime tests (deterministic; time only moves on a FakeClock)."""

from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import torch


class FakePolicy:
    """A ChunkPolicy whose chunk c, action i is (100 * c + i, sum of the latest observation).

    Computing takes `latency` seconds (a float or one per call) of the FakeClock `clock`; as a Picard sampler
    it needs `rounds` rounds of `latency / rounds` seconds each, starts no round at or after `deadline`
    and none after `max_iters` rounds (stats.capped). `honour_deadline=False`: like a sequential sampler.
    `fail_on` / `nan_on`: call indices that raise / return NaN actions.
    """

    n_obs_steps, n_action_steps, horizon, action_dim, obs_keys = 2, 8, 16, 2, ("obs",)

    def __init__(self, clock=None, latency=0.0, rounds=4, honour_deadline=True, fail_on=(), nan_on=(),
                 scale=1.0, gate: threading.Event | None = None):
        self.clock, self.latency, self.rounds, self.honour_deadline = clock, latency, rounds, honour_deadline
        self.fail_on, self.nan_on, self.scale, self.gate = set(fail_on), set(nan_on), scale, gate
        self.calls: list[dict] = []

    def predict_action(self, obs_dict, sampler="paraddpm", generator=None, init_noise=None, step_noise=None,
                       init=None, clock=None, prefix_actions=None):
        from parapolicy.sampler_config import as_sampler_config

        sc = as_sampler_config(sampler)
        c = len(self.calls)
        read = clock or self.clock
        now = read() if read is not None else None
        max_iters = sc.max_iters
        deadline = None if sc.time_budget is None else (time.monotonic() if now is None else now) + sc.time_budget
        self.calls.append(dict(obs={k: v.clone() for k, v in obs_dict.items()}, sampler=sampler, init=init,
                               max_iters=max_iters, deadline=deadline, t_start=now,
                               thread=threading.current_thread().name, prefix=prefix_actions,
                               noise=None if generator is None else torch.randn(3, generator=generator)))
        if self.gate is not None:
            self.gate.wait(timeout=10)
        lat = self.latency[c] if isinstance(self.latency, (list, tuple)) else self.latency
        per_round = lat / self.rounds
        done = self.rounds
        if max_iters is not None:
            done = min(done, max_iters)
        if deadline is not None and self.honour_deadline and per_round > 0:
            # like the Picard sampler: a round starts while now < deadline, so the last one may overrun it
            done = min(done, max(1, math.ceil((deadline - now) / per_round - 1e-9)))
        if self.clock is not None:
            self.clock.advance(done * per_round)
        if c in self.fail_on:
            raise RuntimeError(f"injected failure in call {c}")
        last = obs_dict["obs"][0, -1].double().sum().item()
        a = np.stack([np.array([100.0 * c + i, last]) for i in range(self.n_action_steps)]) * self.scale
        if prefix_actions is not None:  # like an inpainting policy: the chunk starts with the given prefix
            a[:prefix_actions.shape[1]] = prefix_actions[0].numpy()
        if c in self.nan_on:
            a[3, 1] = np.nan
        return {"action": torch.as_tensor(a)[None], "action_pred": None,
                "stats": SimpleNamespace(iterations=done, nfe=done * 4, capped=done < self.rounds),
                "trajectory": torch.full((1,), float(c))}


def obs_at(k: int, dim: int = 20) -> dict[str, np.ndarray]:
    """Observation of tick k: every entry equals k (so its sum, 20k, tells which tick it came from)."""
    return {"obs": np.full(dim, float(k))}


def decode(a) -> tuple[int, int]:
    """(chunk, index) of a FakePolicy action."""
    return int(a[0]) // 100, int(a[0]) % 100

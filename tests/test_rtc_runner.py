"""The Runner's overlap "inpaint" (real-time chunking): the prefix it passes, d from the latency estimate or
configured, and under injected delays, NaN chunks and time budgets it never sends a stale or non-finite action."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parapolicy.runtime import FakeClock, Runner, RunnerConfig, SimulatedExecutor
from parapolicy.sampler_config import SamplerConfig
from tests.runtime_fakes import FakePolicy, decode, obs_at

DT = 0.1


def drive(runner, clock, n):
    out = []
    for k in range(n):
        clock.set(k * DT)
        out.append(runner.step(obs_at(k), k * DT))
    return out


def assert_timely(runner, acts):
    """Every action sent from the queue is the one its chunk planned for this very tick (never stale, never
    early), came from a chunk that had arrived, and is finite."""
    chunks = {c.chunk_id: c for c in runner.telemetry.chunks}
    n_queue = 0
    for tick, a in zip(runner.telemetry.ticks, acts, strict=True):
        assert a is None or np.isfinite(a).all()
        if tick.source != "queue":
            continue
        n_queue += 1
        rec = chunks[tick.chunk_id]
        assert rec.t_arrive is not None and rec.t_arrive <= tick.t + 1e-9 and rec.rejected is None
        planned = rec.t_obs + (tick.index + runner.config.action_offset) * DT
        late = rec.n_actions - 1 == tick.index and rec.dropped_stale == rec.n_actions - 1  # keep_last rule
        assert late or abs(planned - tick.t) <= DT / 2 + 1e-9, (tick, rec)
    assert n_queue > 0


def make(latency, **cfg):
    clock = FakeClock(0.0)
    policy = FakePolicy(clock, latency=latency)
    runner = Runner(policy, RunnerConfig(dt=DT, **cfg), executor=SimulatedExecutor(clock), clock=clock)
    runner.reset(initial_action=[0.0, 0.0])
    return runner, policy, clock


def test_inpaint_passes_the_actions_that_execute_during_inference():
    runner, policy, clock = make(0.25, refill_at=4, overlap="inpaint")
    acts = drive(runner, clock, 30)
    assert policy.calls[0]["prefix"] is None  # queue empty: nothing to continue
    # chunk 0 arrives at tick 3 (actions for 3..7 left); chunk 1 is requested at tick 4 (4 left), latency
    # 0.25 s -> d = ceil(2.5) = 3: the actions for ticks 4, 5, 6, which run while it is computed
    call = policy.calls[1]
    assert call["prefix"].shape == (1, 3, 2)
    assert [decode(a) for a in call["prefix"][0].numpy()] == [(0, 4), (0, 5), (0, 6)]
    rec = runner.telemetry.chunks[1]
    assert rec.inpainted == 3 and np.isclose(rec.t_obs, 0.4)
    # what runs: chunk 0 up to tick 6, then chunk 1 (arrived at tick 7) from its index 3 (its prefix, stale,
    # was dropped)
    assert decode(acts[6]) == (0, 6) and decode(acts[7])[0] == 1 and runner.telemetry.ticks[7].index == 3
    assert_timely(runner, acts)


def test_inpaint_steps_configured_and_capped():
    runner, policy, clock = make(0.05, refill_at=6, overlap="inpaint", inpaint_steps=20)
    drive(runner, clock, 20)
    d = [c.inpainted for c in runner.telemetry.chunks[1:]]
    assert d and all(x == 6 for x in d)  # capped by the 6 queued actions (and n_action_steps - 1 = 7)
    runner, policy, clock = make(0.05, refill_at=7, overlap="inpaint", inpaint_steps=0)
    drive(runner, clock, 20)
    assert all(c["prefix"] is None for c in policy.calls)  # d = 0 is overlap "replace"


def test_inpaint_with_zero_prefix_equals_replace():
    lat = list(np.random.default_rng(0).uniform(0.0, 0.9, 30))
    got = {}
    for overlap, d in (("replace", None), ("inpaint", 0)):
        runner, policy, clock = make(list(lat), refill_at=4, overlap=overlap, inpaint_steps=d)
        got[overlap] = [None if a is None else tuple(a) for a in drive(runner, clock, 50)]
    assert got["replace"] == got["inpaint"]


@pytest.mark.parametrize("refill_at,keep_last", [(0, True), (2, True), (5, True), (2, False)])
@pytest.mark.parametrize("overlap", ["replace", "inpaint"])
def test_random_delays_never_send_stale_or_nonfinite_actions(refill_at, keep_last, overlap):
    """Ported from the test that kept the schedule copies in agreement: random latencies up to 1.5 chunks
    (some chunks arrive all stale), NaN chunks injected; every sent action is timely and finite."""
    rng = np.random.default_rng(refill_at)
    lat = list(rng.uniform(0.0, 1.2, size=40))
    clock = FakeClock(0.0)
    policy = FakePolicy(clock, latency=lat, nan_on={1, 3})
    cfg = RunnerConfig(dt=DT, refill_at=refill_at, keep_last_if_stale=keep_last, overlap=overlap)
    runner = Runner(policy, cfg, executor=SimulatedExecutor(clock), clock=clock)
    runner.reset(initial_action=[-1.0, -1.0])
    acts = drive(runner, clock, 60)
    assert_timely(runner, acts)
    recs = runner.telemetry.chunks
    assert any(c.dropped_stale >= 7 for c in recs)  # the all-stale case is exercised
    arrived = [c for c in recs if c.t_arrive is not None]
    assert [c.chunk_id for c in arrived if c.rejected] == [c for c in (1, 3) if c < len(arrived)] != []
    chunk_ids = [t.chunk_id for t in runner.telemetry.ticks if t.source == "queue"]
    assert chunk_ids == sorted(chunk_ids)  # chunks run in order, never interleaved
    if overlap == "inpaint" and refill_at > 0:  # (refill_at 0: the queue is empty at submit, nothing to fix)
        assert any(c.inpainted > 0 for c in recs)


def test_inpaint_with_a_real_policy_and_an_anytime_budget(tiny_policy_dir):
    """A real tiny policy whose denoiser calls cost virtual time; the budget caps most chunks. The new chunk's
    first d actions are the queued ones exactly, every sent action is timely and finite."""
    from parapolicy.policy import load_policy

    p = load_policy(tiny_policy_dir, fast="eager")
    clock = FakeClock(0.0)
    net = p._denoise_fn or p.model

    def timed(*args, **kw):
        clock.advance(0.02)
        return net(*args, **kw)

    p.use_denoiser(timed, name="eager")
    sampler = SamplerConfig(name="paraddpm", window=4, time_budget=0.15)
    cfg = RunnerConfig(dt=DT, refill_at=3, overlap="inpaint", sampler=sampler, seed=0)
    runner = Runner(p, cfg, executor=SimulatedExecutor(clock), clock=clock)
    runner.reset(initial_action=[256.0, 256.0])
    seen = []
    orig = p.predict_action

    def spy(obs, **kw):
        out = orig(obs, **kw)
        seen.append((kw.get("prefix_actions"), out["action"]))
        return out

    p.predict_action = spy
    acts = []
    for k in range(30):
        clock.set(k * DT)
        acts.append(runner.step({"obs": np.full(20, 10.0 * k)}, k * DT))
    assert_timely(runner, acts)
    with_prefix = [(a, out) for a, out in seen if a is not None]
    assert with_prefix and any(c.capped for c in runner.telemetry.chunks)
    for a, out in with_prefix:
        assert torch.equal(out[:, :a.shape[1]], a)

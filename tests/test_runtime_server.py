"""Policy server over ZeroMQ: the same runner semantics with the policy in another process (or thread)."""

import time

import numpy as np
import pytest
import torch

zmq = pytest.importorskip("zmq")

from parapolicy.runtime import InlineExecutor, Runner, RunnerConfig  # noqa: E402
from parapolicy.runtime.server import PolicyServer, RemotePolicy, RemoteTrajectory  # noqa: E402
from tests.runtime_fakes import FakePolicy, decode, obs_at  # noqa: E402

DT = 0.1


@pytest.fixture
def served():
    servers = []

    def start(policy, **kw):
        srv = PolicyServer(policy, "tcp://127.0.0.1:*", **kw).start()
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.stop()


def run_ticks(policy, n, **cfg):
    runner = Runner(policy, RunnerConfig(dt=DT, **cfg), executor=InlineExecutor())
    acts = [runner.step(obs_at(k), k * DT) for k in range(n)]
    return acts, runner


def test_remote_policy_matches_local(served):
    srv = served(FakePolicy())
    remote = RemotePolicy(srv.endpoint, timeout_s=5)
    spec = (remote.n_obs_steps, remote.n_action_steps, remote.horizon, remote.action_dim, remote.obs_keys)
    assert spec == (2, 8, 16, 2, ("obs",))
    got, runner = run_ticks(remote, 20, refill_at=2)
    want, _ = run_ticks(FakePolicy(), 20, refill_at=2)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert runner.telemetry.chunks[0].iterations == 4
    remote.close()


def test_server_error_is_a_runner_failure_and_server_keeps_serving(served):
    srv = served(FakePolicy(fail_on={1}))
    remote = RemotePolicy(srv.endpoint)
    acts, runner = run_ticks(remote, 12, refill_at=0)
    errs = [c.error for c in runner.telemetry.chunks]
    assert errs[0] is None and "injected failure" in errs[1] and errs[2] is None
    assert decode(acts[9]) == (2, 0)  # retried at the next tick, served by the same server


def test_nan_from_server_is_refused_on_the_robot_side(served):
    srv = served(FakePolicy(nan_on={0}))
    acts, runner = run_ticks(RemotePolicy(srv.endpoint), 3, refill_at=0)
    assert runner.telemetry.chunks[0].rejected == "non-finite actions" and all(a is None for a in acts[:1])


def test_warm_start_by_reference_and_seed(served):
    server_policy = FakePolicy()
    srv = served(server_policy, shift_init=lambda tr, n: tr + 1000 * n)
    acts, runner = run_ticks(RemotePolicy(srv.endpoint), 17, refill_at=0, warm_start=True, seed=5)
    c0, c1, c2 = server_policy.calls
    assert c0["init"] is None and float(c1["init"]) == 8000.0 and float(c2["init"]) == 8001.0
    assert torch.equal(c0["noise"], c1["noise"])  # same seed each chunk
    assert [r.warm_shift for r in runner.telemetry.chunks] == [0, 8, 8]


def test_deadline_is_sent_as_remaining_budget(served):
    server_policy = FakePolicy()
    srv = served(server_policy)
    run_ticks(RemotePolicy(srv.endpoint), 1, refill_at=0, sampler={"name": "paraddpm", "time_budget": 0.5},
              budget_margin=0.0)
    d = server_policy.calls[0]["deadline"]
    assert d is not None and d - time.monotonic() < 0.5


def test_timeout_and_bad_requests(served):
    ctx = zmq.Context.instance()
    mute = ctx.socket(zmq.REP)  # bound but never answers
    port = mute.bind_to_random_port("tcp://127.0.0.1")
    with pytest.raises(TimeoutError, match="did not answer"):
        RemotePolicy(f"tcp://127.0.0.1:{port}", timeout_s=0.2)
    mute.close(linger=0)
    srv = served(FakePolicy())
    head = b'{"op": "predict", "obs": [{"key": "obs", "dtype": "float32", "shape": [1, 2, 20]}]}'
    reply = srv.handle([head, b"\x00" * 12])
    assert b'"ok": false' in reply[0] and b"bytes do not make" in reply[0]
    assert b"unknown op" in srv.handle([b'{"op": "shutdown"}'])[0]
    assert b"not numeric" in srv.handle([b'{"op": "predict", "obs": [{"key": "o", "dtype": "object", '
                                         b'"shape": [1]}]}', b"x"])[0]
    remote = RemotePolicy(srv.endpoint)
    with pytest.raises(ValueError, match="RemoteTrajectory"):
        remote.predict_action({"obs": torch.zeros(1, 2, 20)}, init=torch.zeros(3))
    assert remote.shift_trajectory(RemoteTrajectory(3, 2), 4) == RemoteTrajectory(3, 6)

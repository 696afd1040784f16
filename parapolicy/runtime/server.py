"""A policy server for a separate robot process, over ZeroMQ (pyzmq; `pip install pyzmq`).

    # on the GPU / inference machine
    PolicyServer(parapolicy.load_policy("pusht_keypoints"), "tcp://0.0.0.0:5555").serve_forever()
    # on the robot: the same Runner, with a RemotePolicy in place of the policy
    runner = Runner(RemotePolicy("tcp://inference-host:5555"), RunnerConfig(...))

`RemotePolicy` implements the runner's `ChunkPolicy` protocol, so queueing, stale dropping, overlap, latency
budget, warm start and all safety checks run on the robot side exactly as with a local policy; an unreachable
server is a `TimeoutError` in the inference thread, which the runner treats like any inference failure.

Wire format (REQ/REP, multipart; no pickle, so neither side runs code the other sent):
    request   [JSON header, raw array bytes...]
        {"op": "spec"}
        {"op": "predict", "obs": [{"key", "dtype", "shape"}...], "sampler": SamplerConfig fields (or a
         name), "budget_s": seconds the sampler may take|null, "seed": int|null,
         "init": {"id": int, "shift": int}|null}
    reply     [JSON header, raw array bytes...]
        {"ok": true, "n_obs_steps", "n_action_steps", "horizon", "action_dim", "obs_keys"}
        {"ok": true, "action": {"dtype", "shape"}, "stats": {"iterations", "nfe", "capped"}|null,
         "trajectory_id": int|null, "warm": bool, "server_s": float} + the action bytes (float64)
        {"ok": false, "error": str}
Warm start: the server keeps the last few trajectories and hands out ids; `RemotePolicy.shift_trajectory`
adds the runner's tick shift to the reference and the server applies its own `shift_init` to the stored one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("parapolicy.runtime.server")


def _zmq():
    try:
        import zmq
    except ImportError as e:
        raise ImportError("the policy server needs pyzmq: pip install pyzmq") from e
    return zmq


def _pack(header: dict, arrays: list[np.ndarray] = ()) -> list[bytes]:
    return [json.dumps(header).encode()] + [np.ascontiguousarray(a).tobytes() for a in arrays]


def _unpack_array(meta: dict, buf: bytes) -> np.ndarray:
    dtype = np.dtype(meta["dtype"])
    if dtype.kind not in "fiu":
        raise ValueError(f"array dtype {dtype} is not numeric")
    shape = tuple(int(s) for s in meta["shape"])
    if int(np.prod(shape)) * dtype.itemsize != len(buf):
        raise ValueError(f"array {meta.get('key', '')!r}: {len(buf)} bytes do not make {shape} {dtype}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape).copy()


def _stats_dict(stats: Any) -> dict | None:
    if stats is None:
        return None
    get = stats.get if isinstance(stats, dict) else (lambda k: getattr(stats, k, None))
    out = {}
    for k, cast in (("iterations", int), ("nfe", float), ("capped", bool)):
        v = get(k)
        out[k] = None if v is None else cast(v)
    return out


class PolicyServer:
    """Answers `spec` and `predict` requests for one policy, one at a time (REP socket).

    address: a ZeroMQ endpoint to bind ("tcp://*:5555"; "tcp://127.0.0.1:*" picks a free port, see
    `endpoint`). shift_init(trajectory, n) -> init: how a stored trajectory is shifted for a warm start
    (default: the policy's `shift_trajectory` method if any, else unshifted). keep: trajectories kept.
    """

    def __init__(self, policy, address: str = "tcp://127.0.0.1:5555",
                 shift_init: Callable[[Any, int], Any] | None = None, keep: int = 4):
        zmq = _zmq()
        self.policy = policy
        self.shift_init = shift_init if shift_init is not None else getattr(policy, "shift_trajectory", None)
        self.keep = keep
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(address)
        self.endpoint: str = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._trajectories: OrderedDict[int, Any] = OrderedDict()
        self._next_id = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- handling
    def handle(self, frames: list[bytes]) -> list[bytes]:
        """One request -> one reply (never raises: errors become {"ok": false})."""
        try:
            header = json.loads(frames[0].decode())
            op = header.get("op")
            if op == "spec":
                p = self.policy
                return _pack({"ok": True, "n_obs_steps": int(p.n_obs_steps),
                              "n_action_steps": int(p.n_action_steps), "horizon": int(p.horizon),
                              "action_dim": int(p.action_dim), "obs_keys": list(p.obs_keys)})
            if op == "predict":
                return self._predict(header, frames[1:])
            raise ValueError(f"unknown op {op!r}")
        except Exception as e:  # noqa: BLE001 - reported to the client, the server keeps serving
            logger.warning("policy server: request failed: %s: %s", type(e).__name__, e)
            return _pack({"ok": False, "error": f"{type(e).__name__}: {e}"})

    def _predict(self, header: dict, bufs: list[bytes]) -> list[bytes]:
        t0 = time.monotonic()
        metas = header.get("obs", [])
        if len(metas) != len(bufs):
            raise ValueError(f"{len(metas)} observation headers but {len(bufs)} buffers")
        obs = {m["key"]: torch.as_tensor(_unpack_array(m, b), dtype=torch.float32)
               for m, b in zip(metas, bufs, strict=True)}
        gen = None if header.get("seed") is None else torch.Generator().manual_seed(int(header["seed"]))
        init, warm = None, False
        ref = header.get("init")
        if ref is not None and int(ref["id"]) in self._trajectories:
            init, warm = self._trajectories[int(ref["id"])], True
            if self.shift_init is not None:
                init = self.shift_init(init, int(ref.get("shift", 0)))
        from parapolicy.sampler_config import as_sampler_config

        sampler = as_sampler_config(header.get("sampler", "paraddpm"))
        budget = header.get("budget_s")
        if budget is not None:  # what is left of the client's budget when the request arrived
            sampler = sampler.replace(time_budget=max(0.0, float(budget) - (time.monotonic() - t0)))
        out = self.policy.predict_action(obs, sampler=sampler, generator=gen, init=init)
        a = out["action"]
        a = np.asarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
        tid = None
        if out.get("trajectory") is not None:
            tid, self._next_id = self._next_id, self._next_id + 1
            self._trajectories[tid] = out["trajectory"]
            while len(self._trajectories) > self.keep:
                self._trajectories.popitem(last=False)
        reply = {"ok": True, "action": {"dtype": "float64", "shape": list(a.shape)},
                 "stats": _stats_dict(out.get("stats")), "trajectory_id": tid, "warm": warm,
                 "server_s": time.monotonic() - t0}
        return _pack(reply, [a])

    # ---------------------------------------------------------------- loop
    def serve_forever(self, poll_ms: int = 100) -> None:
        """Serve until `stop()` (checked every poll_ms)."""
        zmq = _zmq()
        while not self._stop.is_set():
            if self._sock.poll(poll_ms, zmq.POLLIN):
                self._sock.send_multipart(self.handle(self._sock.recv_multipart()))

    def start(self) -> PolicyServer:
        """serve_forever in a daemon thread (tests, single-process demos)."""
        self._thread = threading.Thread(target=self.serve_forever, name="parapolicy-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sock.close(linger=0)


@dataclass(frozen=True)
class RemoteTrajectory:
    """Reference to a trajectory kept by the server, plus the ticks to shift it by."""

    id: int
    shift: int = 0


class RemotePolicy:
    """The client side: a `ChunkPolicy` whose predict_action asks a `PolicyServer`.

    timeout_s: how long one request may take before `TimeoutError` (the socket is then rebuilt, so a late
    reply cannot be mistaken for the next one); first_timeout_s: the same for the first prediction, which pays
    the server's cold start (lazy imports of diffusers take tens of seconds on a loaded CPU): warm up with
    `Runner.warmup` before the control loop. The generator is sent as its `initial_seed()` (a fresh
    generator, as the runner makes with `seed`); init_noise / step_noise cannot be sent.
    """

    def __init__(self, address: str, timeout_s: float = 10.0, first_timeout_s: float = 300.0):
        self.address, self.timeout_s, self.first_timeout_s = address, timeout_s, first_timeout_s
        self._warm = False
        self._zmq = _zmq()
        self._ctx = self._zmq.Context.instance()
        self._sock = None
        spec = self._request({"op": "spec"})[0]
        self._sock.close(linger=0)  # the inference thread opens its own socket
        self._sock = None
        self.n_obs_steps, self.n_action_steps = spec["n_obs_steps"], spec["n_action_steps"]
        self.horizon, self.action_dim = spec["horizon"], spec["action_dim"]
        self.obs_keys = tuple(spec["obs_keys"])

    def _request(self, header: dict, arrays: list[np.ndarray] = (), timeout_s: float | None = None
                 ) -> tuple[dict, list[bytes]]:
        zmq = self._zmq
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if self._sock is None:
            self._sock = self._ctx.socket(zmq.REQ)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(self.address)
        self._sock.send_multipart(_pack(header, arrays))
        if not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            self._sock.close(linger=0)
            self._sock = None
            raise TimeoutError(f"policy server at {self.address} did not answer within {timeout_s} s")
        frames = self._sock.recv_multipart()
        reply = json.loads(frames[0].decode())
        if not reply.get("ok"):
            raise RuntimeError(f"policy server: {reply.get('error')}")
        return reply, frames[1:]

    def shift_trajectory(self, ref: RemoteTrajectory, n: int) -> RemoteTrajectory:
        return RemoteTrajectory(ref.id, ref.shift + int(n))

    def predict_action(self, obs_dict, sampler="paraddpm", generator=None, init_noise=None, step_noise=None,
                       init=None, clock=None) -> dict:
        """The sampler (a SamplerConfig, a name or a dict) is sent as its fields; its time_budget is sent as
        the seconds left and the server stops its sampler that much after the request arrived (network time
        is the client's to leave room for). `clock` is not needed: budgets travel as durations."""
        import dataclasses

        from parapolicy.sampler_config import as_sampler_config

        if init_noise is not None or step_noise is not None:
            raise ValueError("RemotePolicy: init_noise / step_noise cannot be sent; use a seed")
        sc = as_sampler_config(sampler)
        budget = sc.time_budget
        fields = {k: v for k, v in dataclasses.asdict(sc).items() if k != "time_budget"}
        if init is not None and not isinstance(init, RemoteTrajectory):
            raise ValueError("RemotePolicy: init must be a RemoteTrajectory returned by this client")
        metas, arrays = [], []
        for k, v in obs_dict.items():
            a = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float32)
            metas.append({"key": k, "dtype": "float32", "shape": list(a.shape)})
            arrays.append(a)
        header = {"op": "predict", "obs": metas, "sampler": fields, "budget_s": budget,
                  "seed": None if generator is None else int(generator.initial_seed()),
                  "init": None if init is None else {"id": init.id, "shift": init.shift}}
        reply, bufs = self._request(header, arrays, None if self._warm else self.first_timeout_s)
        self._warm = True
        if len(bufs) != 1:
            raise RuntimeError(f"policy server: expected 1 action buffer, got {len(bufs)}")
        action = torch.as_tensor(_unpack_array(reply["action"], bufs[0]))
        stats = None if reply["stats"] is None else dict(reply["stats"], server_s=reply["server_s"])
        tid = reply.get("trajectory_id")
        return {"action": action, "action_pred": None, "stats": stats,
                "trajectory": None if tid is None else RemoteTrajectory(int(tid))}

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

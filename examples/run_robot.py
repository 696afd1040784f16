"""Plug a robot into parapolicy's runtime.

    python examples/run_robot.py --pusht --seconds 5          # Push-T env driven in real time at 10 Hz
    python examples/run_robot.py --pusht --budget 0.3         # ... with a 300 ms latency budget per chunk
    python examples/run_robot.py --serve tcp://*:5555         # policy server (pyzmq) on the inference machine
    python examples/run_robot.py --pusht --remote tcp://HOST:5555   # robot process using that server

For your own robot, write a class with get_observation / send_action / now (see `MyRobot`) and pass it to
`run_control_loop` instead of the Push-T adapter. It prints the loop's timing and the runner's telemetry.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import parapolicy
from parapolicy.runtime import Runner, RunnerConfig, run_control_loop


class MyRobot:
    """Template: replace the bodies with your driver calls."""

    def get_observation(self) -> dict:
        return {"obs": np.zeros(20)}  # same keys, shapes and units as the policy's training data

    def send_action(self, action: np.ndarray) -> None:
        pass  # e.g. send the target position to your controller

    def now(self) -> float:
        return time.monotonic()  # the runner's clock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="pusht_keypoints", help="checkpoint path or built-in name")
    ap.add_argument("--pusht", action="store_true", help="drive the Push-T env instead of MyRobot")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=100000)
    ap.add_argument("--sampler", default="paraddpm")
    ap.add_argument("--budget", type=float, default=None, help="latency budget per chunk, seconds")
    ap.add_argument("--refill-at", type=int, default=None)
    ap.add_argument("--warm-start", action="store_true")
    ap.add_argument("--serve", metavar="ADDRESS", help="serve the policy over ZeroMQ at ADDRESS")
    ap.add_argument("--remote", metavar="ADDRESS", help="use the policy served at ADDRESS")
    args = ap.parse_args()

    if args.serve:
        from parapolicy.runtime.server import PolicyServer

        server = PolicyServer(parapolicy.load_policy(args.policy), args.serve)
        print(f"serving {args.policy} at {server.endpoint}")
        server.serve_forever()
        return
    if args.remote:
        from parapolicy.runtime.server import RemotePolicy

        policy = RemotePolicy(args.remote)
    else:
        policy = parapolicy.load_policy(args.policy)
    config = RunnerConfig(dt=0.1, sampler={"name": args.sampler, "time_budget": args.budget}, refill_at=args.refill_at,
                          warm_start=args.warm_start, seed=0 if args.warm_start else None,
                          action_low=0.0, action_high=512.0)
    if args.pusht:
        from parapolicy.runtime.pusht import run_pusht_realtime

        res = run_pusht_realtime(policy, seconds=args.seconds, seed=args.seed, config=config)
        print(f"loop: {res.loop}")
        print(f"max reward {res.max_reward:.3f} over {res.steps} steps")
        print(json.dumps(res.telemetry, indent=1))
        return
    robot = MyRobot()
    with Runner(policy, config) as runner:  # inference in a background thread
        runner.warmup(robot.get_observation())  # first call pays imports and allocations: not in the loop
        runner.reset(initial_action=np.array([256.0, 256.0]))  # what to hold until the first chunk lands
        loop = run_control_loop(robot, runner, duration_s=args.seconds)
    print(f"loop: {loop}")
    print(json.dumps(runner.telemetry.summary(), indent=1))


if __name__ == "__main__":
    main()

"""Push-T env throughput: `python -m envs.bench [--steps N] [--obs-types state keypoints pixels]`.

For each observation type: one env, seeded resets every 300 steps (or on success), actions a seeded random
walk of PD targets near the agent (like a policy's: small moves that keep pushing the block) plus uniform
random targets on every 10th step. Prints env steps per second of wall-clock time as measured, including
the resets, and steps per second of this process's CPU time (less sensitive to other jobs on a busy
machine). Single process, single thread.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from envs.pusht import PushTEnv


def measure(obs_type: str, n_steps: int, seed: int = 0) -> dict:
    """Run `n_steps` env steps; returns {"obs_type", "steps", "seconds", "cpu_seconds", "steps_per_s",
    "steps_per_cpu_s", "resets"}."""
    env = PushTEnv(obs_type=obs_type)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    target = env.agent_pos.copy()
    resets, t_in_episode = 1, 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n_steps):
        if i % 10 == 9:
            target = rng.uniform(0.0, 512.0, size=2)
        else:
            target = np.clip(target + rng.normal(0.0, 8.0, size=2), 0.0, 512.0)
        _, _, terminated, _, _ = env.step(target)
        t_in_episode += 1
        if terminated or t_in_episode == 300:
            env.reset(seed=seed + resets)
            target = env.agent_pos.copy()
            resets, t_in_episode = resets + 1, 0
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    env.close()
    return {"obs_type": obs_type, "steps": n_steps, "seconds": seconds, "cpu_seconds": cpu,
            "steps_per_s": n_steps / seconds, "steps_per_cpu_s": n_steps / cpu, "resets": resets}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="env steps per observation type")
    parser.add_argument("--obs-types", nargs="+", default=list(PushTEnv.OBS_TYPES),
                        choices=PushTEnv.OBS_TYPES)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Push-T env throughput, {args.steps} steps per obs_type, 1 env, python {platform.python_version()}"
          f" on {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}")
    results = []
    for obs_type in args.obs_types:
        r = measure(obs_type, args.steps)
        results.append(r)
        print(f"  {obs_type:>9}: {r['steps_per_s']:8.1f} steps/s wall, {r['steps_per_cpu_s']:8.1f} "
              f"steps/s CPU  ({r['steps']} steps in {r['seconds']:.2f} s wall, {r['cpu_seconds']:.2f} s CPU,"
              f" {r['resets']} resets)")
    return results


if __name__ == "__main__":
    main()

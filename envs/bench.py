"""Push-T env throughput: `python -m envs.bench [--steps N] [--obs-types state keypoints pixels]`.

For each observation type: one env, seeded resets every 300 steps (or on success), actions a seeded random
walk of PD targets near the agent (like a policy's: small moves that keep pushing the block) plus uniform
random targets on every 10th step. Prints env steps per second of wall-clock time as measured, including
the resets. Single process, single thread.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from envs.pusht import PushTEnv


def measure(obs_type: str, n_steps: int, seed: int = 0) -> dict:
    """Run `n_steps` env steps; returns {"obs_type", "steps", "seconds", "steps_per_s", "resets"}."""
    env = PushTEnv(obs_type=obs_type)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    target = env.agent_pos.copy()
    resets, t_in_episode = 1, 0
    t0 = time.perf_counter()
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
    seconds = time.perf_counter() - t0
    env.close()
    return {"obs_type": obs_type, "steps": n_steps, "seconds": seconds, "steps_per_s": n_steps / seconds,
            "resets": resets}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="env steps per observation type")
    parser.add_argument("--obs-types", nargs="+", default=list(PushTEnv.OBS_TYPES),
                        choices=PushTEnv.OBS_TYPES)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    print(f"Push-T env throughput, {args.steps} steps per obs_type, 1 env, python {platform.python_version()}"
          f" on {platform.machine()}")
    results = []
    for obs_type in args.obs_types:
        r = measure(obs_type, args.steps)
        results.append(r)
        print(f"  {obs_type:>9}: {r['steps_per_s']:8.1f} steps/s  ({r['steps']} steps in"
              f" {r['seconds']:.2f} s, {r['resets']} resets)")
    return results


if __name__ == "__main__":
    main()

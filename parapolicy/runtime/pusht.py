"""Push-T adapters for the runtime: the gym env as a `Robot` driven in real time. (The eval harness's
latency-aware episodes, the same Runner on a simulated clock, are `eval.realtime`.)

The env (`import envs` registers "parapolicy/PushT-v0") gives keypoint observations (20,) = 9 block keypoints
xy then the agent xy, takes absolute target positions (2,) in [0, 512]^2 and runs at 10 Hz. gymnasium and envs
are imported inside the functions that need them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from parapolicy.runtime.robot import LoopStats, run_control_loop
from parapolicy.runtime.runner import Runner, RunnerConfig

PUSHT_DT = 0.1
PUSHT_LOW, PUSHT_HIGH = 0.0, 512.0


def make_pusht_env(obs_type: str = "keypoints", **kwargs):
    """gymnasium.make("parapolicy/PushT-v0", obs_type=...) (needs the `env` extra and the `envs` package)."""
    try:
        import gymnasium

        import envs  # noqa: F401  (registers parapolicy/PushT-v0)
    except ImportError as e:
        raise ImportError(f"the Push-T adapter needs gymnasium and the repo's `envs` package "
                          f"(pip install 'parapolicy[env]'): {e}") from e
    return gymnasium.make("parapolicy/PushT-v0", obs_type=obs_type, **kwargs)


def pusht_config(**overrides) -> RunnerConfig:
    """RunnerConfig for Push-T: dt 0.1 s, actions clipped to [0, 512]^2."""
    return RunnerConfig(**{"dt": PUSHT_DT, "action_low": PUSHT_LOW, "action_high": PUSHT_HIGH, **overrides})


def agent_position(obs: np.ndarray) -> np.ndarray:
    """The agent xy of a keypoint observation (20,): the safe action to hold (stay where you are)."""
    return np.asarray(obs, dtype=np.float64)[-2:].copy()


class PushTRobot:
    """A Push-T env behind the `Robot` protocol. Each `send_action` steps the env by one 10 Hz control step.

    `obs_key` is the key the policy reads ("obs" for Diffusion Policy low-dim checkpoints). Rewards, coverage
    and success are kept in `rewards`, `max_coverage`, `success`; `done` turns True at the episode end.
    """

    def __init__(self, env, seed: int | None = None, obs_key: str = "obs", clock=time.monotonic):
        self.env, self.obs_key, self.clock = env, obs_key, clock
        self.obs, _ = env.reset(seed=seed)
        self.rewards: list[float] = []
        self.max_coverage = 0.0
        self.success = False
        self.done = False

    def now(self) -> float:
        return self.clock()

    def get_observation(self) -> dict[str, np.ndarray]:
        return {self.obs_key: np.asarray(self.obs, dtype=np.float64).copy()}

    def send_action(self, action: np.ndarray) -> None:
        if self.done:
            return
        self.obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, dtype=np.float32))
        self.rewards.append(float(reward))
        self.max_coverage = max(self.max_coverage, float(info.get("coverage", reward)))
        self.success = self.success or bool(info.get("is_success", False))
        self.done = bool(terminated or truncated)


@dataclass
class EpisodeResult:
    rewards: list[float]
    max_reward: float
    success: bool
    steps: int
    loop: LoopStats | None = None
    telemetry: dict = field(default_factory=dict)


def run_pusht_realtime(policy, seconds: float = 5.0, seed: int = 100000, config: RunnerConfig | None = None,
                       executor=None, env=None, warmup: int = 1) -> EpisodeResult:
    """Drive Push-T at 10 Hz on the wall clock with a background-thread `Runner` for `seconds` (after
    `warmup` synchronous predictions).

    `LoopStats.missed_ticks` / `late_ticks` say whether the loop kept its rate; the runner telemetry says
    whether inference kept the queue fed (holds, deadline misses)."""
    env = make_pusht_env() if env is None else env
    robot = PushTRobot(env, seed=seed, obs_key=tuple(policy.obs_keys)[0])
    runner = Runner(policy, config or pusht_config(), executor=executor)
    try:
        if warmup:
            runner.warmup(robot.get_observation(), n=warmup)
        runner.reset(agent_position(robot.obs))
        loop = run_control_loop(robot, runner, rate_hz=1.0 / runner.config.dt, duration_s=seconds,
                                should_stop=lambda: robot.done)
    finally:
        runner.close()
        env.close()
    return EpisodeResult(robot.rewards, max(robot.rewards, default=0.0), robot.success, len(robot.rewards),
                         loop, runner.telemetry.summary())

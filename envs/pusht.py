"""Push-T on pymunk 7, faithful to the Diffusion Policy task (Chi et al., RSS 2023).

Pure helpers (`block_keypoints`, `block_outline`, `coverage`, `legacy_reset_state`) are usable without an
env; `PushTEnv` wires them to a pymunk space. This module never imports `parapolicy`.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pymunk
import shapely
from gymnasium import spaces

from envs.geometry import (  # noqa: F401  (re-exported; the geometry lives in a leaf module)
    AGENT_RADIUS,
    BAR_VERTICES,
    GOAL_POSE,
    STEM_VERTICES,
    WALL_RADIUS,
    WALLS,
    WORKSPACE,
    pose_to_world,
)
from envs.render import Renderer

# ---------------------------------------------------------------- constants (see docs/env.md) ----------

SUCCESS_THRESHOLD = 0.95
"""Coverage above which an episode terminates (and reward saturates at 1)."""
SIM_HZ = 100
CONTROL_HZ = 10
N_SUBSTEPS = SIM_HZ // CONTROL_HZ
DT = 1.0 / SIM_HZ
K_P, K_V = 100.0, 20.0
"""PD gains of the agent controller: acc = K_P (target - pos) + K_V (0 - vel)."""
AGENT_START = (256.0, 400.0)
BLOCK_START = (256.0, 300.0)
T_OUTLINE = np.array([(-60.0, 0.0), (60.0, 0.0), (60.0, 30.0), (15.0, 30.0), (15.0, 120.0),
                      (-15.0, 120.0), (-15.0, 30.0), (-60.0, 30.0)])
"""The T as one 8-vertex polygon in body coordinates, (8, 2)."""
BLOCK_AREA = 6300.0
BLOCK_KEYPOINTS_LOCAL = np.array([
    (9.270, 90.041), (-60.983, -1.187), (60.913, -1.393), (-0.271, 25.544), (-14.065, 122.816),
    (39.003, 32.857), (-39.966, 32.730), (-16.824, 62.863), (23.541, -1.700)])
"""The low-dim policy's 9 block keypoints in body coordinates, (9, 2)."""
RESET_STATE_LOW = (50, 50, 100, 100)
RESET_STATE_HIGH = (450, 450, 400, 400)


# ---------------------------------------------------------------- pure functions ------------------------
def block_keypoints(pose) -> np.ndarray:
    """The 9 keypoints of a block at `pose` (x, y, angle): (9, 2) world pixels."""
    return pose_to_world(pose, BLOCK_KEYPOINTS_LOCAL)


def block_outline(pose) -> np.ndarray:
    """The T's 8-vertex outline at `pose` (x, y, angle): (8, 2) world pixels."""
    return pose_to_world(pose, T_OUTLINE)


_GOAL_POLYGON = shapely.Polygon(block_outline(GOAL_POSE))
shapely.prepare(_GOAL_POLYGON)


def coverage(pose) -> float:
    """Fraction of the goal T covered by a block at `pose` (x, y, angle):
    area(block polygon intersect goal polygon) / 6300, in [0, 1]."""
    block = shapely.Polygon(block_outline(pose))
    return float(shapely.intersection(block, _GOAL_POLYGON).area) / BLOCK_AREA


def reward_from_coverage(cov: float) -> float:
    """reward = clip(coverage / 0.95, 0, 1)."""
    return min(max(cov / SUCCESS_THRESHOLD, 0.0), 1.0)


def legacy_reset_state(seed: int) -> np.ndarray:
    """Diffusion Policy's seeded initial state: (5,) [agent x, y, block x, y, angle].

    `rs = RandomState(seed)`; agent x, y ~ randint(50, 450); block x, y ~ randint(100, 400);
    angle = randn() * 2 pi - pi, drawn in that order.
    """
    rs = np.random.RandomState(seed=seed)
    return np.array([rs.randint(50, 450), rs.randint(50, 450), rs.randint(100, 400), rs.randint(100, 400),
                     rs.randn() * 2 * np.pi - np.pi], dtype=np.float64)


def state_from_generator(rng: np.random.Generator) -> np.ndarray:
    """An initial state with the legacy distributions, drawn from a numpy Generator: (5,)."""
    xy = rng.integers(RESET_STATE_LOW, RESET_STATE_HIGH).astype(np.float64)
    return np.concatenate([xy, [rng.standard_normal() * 2 * np.pi - np.pi]])


def validate_action(action) -> tuple[float, float]:
    """A PD target as two floats clipped to [0, 512]; ValueError for a wrong shape or a non-finite value."""
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"action must be 2 numbers (x, y) in pixels, got {action!r}") from e
    if a.shape != (2,):
        raise ValueError(f"action must have shape (2,), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"action must be finite, got {a.tolist()}")
    x = min(max(float(a[0]), 0.0), WORKSPACE)
    y = min(max(float(a[1]), 0.0), WORKSPACE)
    return x, y


# ---------------------------------------------------------------- environment ---------------------------
class PushTEnv(gym.Env):
    """Push a T-shaped block onto a fixed T-shaped goal with a circular agent.

    ## Description
    Diffusion Policy's Push-T task (Chi et al., RSS 2023) on pymunk 7. The planar 512 x 512 pixel workspace
    (y down) is closed by 4 wall segments. A kinematic disc of radius 15 (the agent) follows a PD controller
    towards the commanded target and pushes a T block (mass 1, bar 120 x 30, stem 30 x 90). The space has
    no gravity and `damping = 0`, so every dynamic body's velocity is zeroed at each substep: the T moves
    only while pushed (quasi-static pushing). Physics runs at 100 Hz, control at 10 Hz (10 substeps a step).
    Legacy quirks of the original are kept because the demonstrations were recorded with them: the block's
    moment of inertia is 3000 (twice the bar's moment about the body origin) and its centre of gravity is
    (0, 45), the plain mean of the two rectangles' centroids (the area-weighted centroid is (0, 48.6)).

    ## Action Space
    `Box([0, 0], [512, 512], (2,), float64)`: the absolute target position of the agent in pixels. At each
    substep `acc = 100 (target - pos) + 20 (0 - vel)`, `vel += acc dt`, then one pymunk step of dt = 0.01.
    Finite out-of-range targets are clipped to [0, 512]; a wrong shape, a non-numeric value, NaN or inf
    raises ValueError (the simulation is left untouched).

    ## Observation Space
    - `obs_type="state"`: (5,) float64 [agent x, agent y, block x, block y, block angle mod 2 pi].
    - `obs_type="keypoints"` (the low-dim policy's input): (20,) float64, the 9 block keypoints
      (`BLOCK_KEYPOINTS_LOCAL` moved by the block pose) as x0, y0, ..., x8, y8, then agent x, y.
      The original env also emits a 20-value visibility mask; the policy never sees it, so it is left out.
    - `obs_type="pixels"`: Dict with `"pixels"` (96, 96, 3) uint8 RGB and `"agent_pos"` (2,) float64.
    Positions are pixels, nominally within [0, 512]; the agent is kinematic (walls do not stop it) and its
    PD controller can overshoot, so position bounds are left open.

    ## Rewards
    `coverage` = area(block T intersect goal T) / 6300 (shapely polygon intersection); reward =
    clip(coverage / 0.95, 0, 1). Goal pose (256, 256, pi/4). An episode's score is its maximum reward.

    ## Starting State
    `reset(seed=s)` reproduces Diffusion Policy's legacy seeded reset exactly: `RandomState(s)` draws agent
    x, y ~ randint(50, 450), block x, y ~ randint(100, 400), angle = randn() 2 pi - pi; the block position
    is set before its angle (so the rotation about the centre of gravity moves the body origin), then one
    physics substep runs. Seed e gives demo episode e's first state; test seeds 100000..100049 give the
    published evaluation's initial states. `reset()` without a seed draws the same distributions from
    `self.np_random`. `options={"reset_to_state": [ax, ay, bx, by, angle]}` places exactly that state
    (angle set first, so the body origin lands on (bx, by)), then one substep runs.

    ## Episode End
    Terminated when coverage > 0.95. Truncated at 300 steps by the `TimeLimit` added by `gymnasium.make`
    (`max_episode_steps=300` in the registration).

    `info` (reset and step): `coverage`, `is_success` (coverage > 0.95), `block_pose` (x, y, angle; angle
    not wrapped), `agent_pos` (x, y), `n_contacts` (ceil of the contact points counted in pymunk's
    post-solve callbacks during the step / 10), `goal_pose`.

    ## Arguments
    - `obs_type`: "state", "keypoints" or "pixels" (default "keypoints").
    - `render_mode`: None or "rgb_array" (headless PIL drawing, no window).
    - `observation_size`: side of the "pixels" observation (default 96).
    - `render_size`: side of the frames `render()` returns (default 512).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}
    OBS_TYPES = ("state", "keypoints", "pixels")

    def __init__(self, obs_type: str = "keypoints", render_mode: str | None = None,
                 observation_size: int = 96, render_size: int = 512):
        if obs_type not in self.OBS_TYPES:
            raise ValueError(f"obs_type must be one of {self.OBS_TYPES}, got {obs_type!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        for name, size in (("observation_size", observation_size), ("render_size", render_size)):
            if not isinstance(size, (int, np.integer)) or size < 8:
                raise ValueError(f"{name} must be an int >= 8, got {size!r}")
        self.obs_type = obs_type
        self.render_mode = render_mode
        self.observation_size = int(observation_size)
        self.render_size = int(render_size)

        self.action_space = spaces.Box(low=0.0, high=WORKSPACE, shape=(2,), dtype=np.float64)
        inf = np.inf
        if obs_type == "state":
            self.observation_space = spaces.Box(low=np.array([-inf, -inf, -inf, -inf, 0.0]),
                                                high=np.array([inf, inf, inf, inf, 2 * np.pi]),
                                                dtype=np.float64)
        elif obs_type == "keypoints":
            self.observation_space = spaces.Box(low=-inf, high=inf, shape=(20,), dtype=np.float64)
        else:
            s = self.observation_size
            self.observation_space = spaces.Dict({
                "pixels": spaces.Box(low=0, high=255, shape=(s, s, 3), dtype=np.uint8),
                "agent_pos": spaces.Box(low=-inf, high=inf, shape=(2,), dtype=np.float64),
            })
        self._renderer = None
        self._space: pymunk.Space | None = None
        self._n_contact_points = 0
        self.latest_action: tuple[float, float] | None = None

    # -------------------------------------------------------------- simulation set-up
    def _build_space(self) -> None:
        """A fresh space, bodies added in the original's order (the order fixes the solver's order)."""
        space = pymunk.Space()
        space.gravity = (0, 0)
        space.damping = 0
        space.add(*[pymunk.Segment(space.static_body, a, b, WALL_RADIUS) for a, b in WALLS])

        agent = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        agent.position = AGENT_START
        space.add(agent, pymunk.Circle(agent, AGENT_RADIUS))

        # Legacy moment: twice the bar's moment about the body origin = 2 * 1500 = 3000.
        moment = 2 * pymunk.moment_for_poly(1.0, BAR_VERTICES)
        block = pymunk.Body(1.0, moment)
        bar, stem = pymunk.Poly(block, BAR_VERTICES), pymunk.Poly(block, STEM_VERTICES)
        # Legacy centre of gravity: plain mean of the two centroids, (0, 45).
        block.center_of_gravity = (bar.center_of_gravity + stem.center_of_gravity) / 2
        block.position = BLOCK_START
        block.angle = 0.0
        space.add(block, bar, stem)

        space.on_collision(0, 0, post_solve=self._count_contacts)
        self._space, self._agent, self._block = space, agent, block
        self._n_contact_points = 0

    def _count_contacts(self, arbiter: pymunk.Arbiter, space: pymunk.Space, data: Any) -> None:
        self._n_contact_points += len(arbiter.contact_point_set.points)

    def _place(self, state: np.ndarray, legacy: bool) -> None:
        ax, ay, bx, by, angle = (float(v) for v in state)
        self._agent.position = (ax, ay)
        if legacy:  # position first: the rotation about the CoG then moves the body origin
            self._block.position = (bx, by)
            self._block.angle = angle
        else:
            self._block.angle = angle
            self._block.position = (bx, by)
        self._space.step(DT)

    # -------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"reset_to_state"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; the only option is 'reset_to_state'")
        if options.get("reset_to_state") is not None:
            state = np.asarray(options["reset_to_state"], dtype=np.float64)
            if state.shape != (5,) or not np.isfinite(state).all():
                raise ValueError("reset_to_state must be 5 finite numbers [agent x, agent y, block x, "
                                 f"block y, angle], got {options['reset_to_state']!r}")
            legacy = False
        elif seed is not None:
            state, legacy = legacy_reset_state(seed), True
        else:
            state, legacy = state_from_generator(self.np_random), True
        self._build_space()
        self.latest_action = None
        self._place(state, legacy)
        obs, _, info = self._observe()
        return obs, info

    def step(self, action):
        if self._space is None:
            raise RuntimeError("call reset() before step()")
        tx, ty = validate_action(action)
        self.latest_action = (tx, ty)
        self._n_contact_points = 0
        agent, space = self._agent, self._space
        for _ in range(N_SUBSTEPS):
            px, py = agent.position
            vx, vy = agent.velocity
            # PD control towards the target; same float operations as the original, so bit-identical.
            ax = K_P * (tx - px) + K_V * (0.0 - vx)
            ay = K_P * (ty - py) + K_V * (0.0 - vy)
            agent.velocity = (vx + ax * DT, vy + ay * DT)
            space.step(DT)
        obs, cov, info = self._observe()
        return obs, reward_from_coverage(cov), cov > SUCCESS_THRESHOLD, False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._space is None:
            raise RuntimeError("call reset() before render()")
        return self._render_frame(self.render_size)

    def close(self):
        self._space = None
        self._renderer = None

    # -------------------------------------------------------------- state access
    @property
    def agent_pos(self) -> np.ndarray:
        """(2,) float64 agent position in pixels."""
        p = self._agent.position
        return np.array([p.x, p.y])

    @property
    def block_pose(self) -> np.ndarray:
        """(3,) float64 block pose (x, y, angle), angle not wrapped."""
        p = self._block.position
        return np.array([p.x, p.y, self._block.angle])

    def get_state(self) -> np.ndarray:
        """(5,) float64 [agent x, agent y, block x, block y, angle mod 2 pi] (the "state" observation)."""
        a, b = self._agent.position, self._block.position
        return np.array([a.x, a.y, b.x, b.y, self._block.angle % (2 * np.pi)])

    def _observe(self) -> tuple[Any, float, dict]:
        """(observation, coverage, info) of the current state; the poses are read from pymunk once."""
        b, a = self._block.position, self._agent.position
        pose = np.array([b.x, b.y, self._block.angle])
        agent = np.array([a.x, a.y])
        cov = coverage(pose)
        if self.obs_type == "state":
            obs = np.array([a.x, a.y, b.x, b.y, pose[2] % (2 * np.pi)])
        elif self.obs_type == "keypoints":
            obs = np.empty(20)
            obs[:18] = block_keypoints(pose).ravel()
            obs[18:] = agent
        else:
            pixels = self._render_frame(self.observation_size, pose, agent)
            obs = {"pixels": pixels, "agent_pos": agent.copy()}
        info = {
            "coverage": cov,
            "is_success": bool(cov > SUCCESS_THRESHOLD),
            "block_pose": pose,
            "agent_pos": agent,
            "n_contacts": int(math.ceil(self._n_contact_points / N_SUBSTEPS)),
            "goal_pose": GOAL_POSE.copy(),
        }
        return obs, cov, info

    def _render_frame(self, size: int, pose: np.ndarray | None = None, agent: np.ndarray | None = None):
        if self._renderer is None:
            self._renderer = Renderer()
        pose = self.block_pose if pose is None else pose
        agent = self.agent_pos if agent is None else agent
        return self._renderer.draw(pose, agent, size, self._contact_segments())

    def _contact_segments(self) -> list:
        """The collision-point markers pymunk's debug draw adds (its `cpSpaceDebugDraw`): per contact point of
        the last substep, the segment from point_a - 2 n to point_b + 2 n (n the arbiter's normal). Every
        contact involves the block (the kinematic agent does not collide with the static walls)."""
        segments = []

        def collect(arbiter: pymunk.Arbiter) -> None:
            cps = arbiter.contact_point_set
            n = cps.normal
            for p in cps.points:
                a, b = p.point_a - 2.0 * n, p.point_b + 2.0 * n
                segments.append(((a.x, a.y), (b.x, b.y)))

        self._block.each_arbiter(collect)
        return segments

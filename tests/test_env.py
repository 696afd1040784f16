"""Push-T env: API contract, legacy seeding, geometry, reward, errors, rendering. No real data needed."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers parapolicy/PushT-v0)
from envs.geometry import BLOCK_FILL
from envs.pusht import (
    BLOCK_AREA,
    BLOCK_KEYPOINTS_LOCAL,
    GOAL_POSE,
    PushTEnv,
    block_keypoints,
    block_outline,
    coverage,
    legacy_reset_state,
    pose_to_world,
)
from envs.render import Renderer, resize_linear

OBS_TYPES = ["state", "keypoints", "pixels"]


def make(obs_type="keypoints", **kw):
    return gym.make("parapolicy/PushT-v0", obs_type=obs_type, **kw)


# ------------------------------------------------------------------ registration and gymnasium checks
def test_registered_with_time_limit():
    spec = gym.spec("parapolicy/PushT-v0")
    assert spec.max_episode_steps == 300 and spec.entry_point == "envs.pusht:PushTEnv"
    env = make("state")
    env.reset(seed=0)
    steps, truncated, terminated = 0, False, False
    while not (truncated or terminated):
        _, _, terminated, truncated, _ = env.step(np.array([20.0, 20.0]))  # parks in a corner: no success
        steps += 1
    assert truncated and not terminated and steps == 300


@pytest.mark.parametrize("obs_type", OBS_TYPES)
def test_check_env(obs_type):
    env = make(obs_type, render_mode="rgb_array").unwrapped  # made by gymnasium.make: has its spec
    with warnings.catch_warnings():
        # gymnasium's advice to normalise the action Box and to bound positions does not apply here
        warnings.filterwarnings("ignore", message=".*(symmetric and normalized|infinity).*")
        check_env(env)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    frame = env.render()
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8


def test_observation_shapes():
    def pixels_ok(o):
        img = o["pixels"]
        return img.shape == (96, 96, 3) and img.dtype == np.uint8 and o["agent_pos"].shape == (2,)

    for obs_type, check in [("state", lambda o: o.shape == (5,) and o.dtype == np.float64),
                            ("keypoints", lambda o: o.shape == (20,) and o.dtype == np.float64),
                            ("pixels", pixels_ok)]:
        env = make(obs_type)
        obs, info = env.reset(seed=3)
        assert check(obs), obs_type
        obs, *_ = env.step(env.action_space.sample())
        assert check(obs), obs_type


def test_async_vector_env_of_4():
    vec = gym.vector.AsyncVectorEnv([lambda: make("keypoints") for _ in range(4)])
    try:
        obs, info = vec.reset(seed=[100000, 100001, 100002, 100003])
        assert obs.shape == (4, 20)
        for i in range(4):  # each sub-env got the legacy reset of its own seed
            np.testing.assert_allclose(obs[i, 18:], legacy_reset_state(100000 + i)[:2])
        for _ in range(5):
            obs, reward, terminated, truncated, info = vec.step(np.full((4, 2), 256.0))
        assert obs.shape == (4, 20) and reward.shape == (4,) and np.all((reward >= 0) & (reward <= 1))
        assert info["coverage"].shape == (4,)
    finally:
        vec.close()


def test_envs_never_imports_parapolicy():
    code = "import sys, envs, envs.pusht, envs.render, envs.bench; print(any(m.startswith('parapolicy') " \
           "for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ seeding and reset
def test_legacy_reset_draws():
    """The seeded state is numpy RandomState(seed)'s draws in order, computed here independently."""
    for seed in (0, 1, 100000, 100049):
        rs = np.random.RandomState(seed)
        expect = [rs.randint(50, 450), rs.randint(50, 450), rs.randint(100, 400), rs.randint(100, 400)]
        expect.append(rs.randn() * 2 * np.pi - np.pi)
        np.testing.assert_array_equal(legacy_reset_state(seed), expect)


@pytest.mark.parametrize("seed", [0, 7, 100000, 100049])
def test_seeded_reset_is_legacy_placement(seed):
    """Block position set before the angle: the body rotates about its centre of gravity (0, 45), so the
    origin ends at cog_world - R(angle) (0, 45) with cog_world = (bx, by) + (0, 45)."""
    ax, ay, bx, by, angle = legacy_reset_state(seed)
    env = PushTEnv(obs_type="state")
    obs, info = env.reset(seed=seed)
    cog = np.array([bx, by + 45.0])
    origin = cog - np.array([-math.sin(angle) * 45.0, math.cos(angle) * 45.0])
    np.testing.assert_allclose(obs[:2], [ax, ay], atol=1e-9)
    np.testing.assert_allclose(obs[2:4], origin, atol=1e-6)
    np.testing.assert_allclose(obs[4], angle % (2 * np.pi), atol=1e-9)
    np.testing.assert_allclose(info["block_pose"][2], angle, atol=1e-9)


def test_seeded_resets_are_deterministic():
    a, b = make("keypoints"), make("keypoints")
    oa, _ = a.reset(seed=123)
    a.reset(seed=5)
    ob, _ = b.reset(seed=123)
    np.testing.assert_array_equal(oa, ob)
    np.testing.assert_array_equal(a.reset(seed=123)[0], oa)
    actions = np.random.default_rng(0).uniform(0, 512, size=(30, 2))
    ra = [a.step(x)[0] for x in actions]
    rb = [b.step(x)[0] for x in actions]
    np.testing.assert_array_equal(np.array(ra), np.array(rb))
    # unseeded resets continue from the generator seeded by the last seeded reset
    a.reset(seed=9), b.reset(seed=9)
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])
    assert not np.array_equal(a.reset()[0], make().reset(seed=9)[0])


def test_reset_to_state_places_exact_state():
    env = PushTEnv(obs_type="state")
    for state in ([100.0, 120.0, 300.0, 250.0, 1.0], [400.0, 60.0, 200.0, 200.0, -2.5]):
        obs, info = env.reset(options={"reset_to_state": state})
        expect = np.array(state)
        expect[4] %= 2 * np.pi
        np.testing.assert_allclose(obs, expect, atol=1e-9)
    with pytest.raises(ValueError, match="reset_to_state"):
        env.reset(options={"reset_to_state": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"reset_state": [1.0] * 5})


# ------------------------------------------------------------------ actions
@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((1, 2)), [1.0], [np.nan, 1.0], [1.0, np.inf],
                                 ["a", "b"], None])
def test_bad_actions_raise_and_leave_state(bad):
    env = PushTEnv(obs_type="state")
    env.reset(seed=0)
    before = env.get_state()
    with pytest.raises(ValueError, match="action"):
        env.step(bad)
    np.testing.assert_array_equal(env.get_state(), before)


def test_out_of_range_actions_are_clipped():
    a, b = PushTEnv(obs_type="state"), PushTEnv(obs_type="state")
    a.reset(seed=0), b.reset(seed=0)
    np.testing.assert_array_equal(a.step([-100.0, 900.0])[0], b.step([0.0, 512.0])[0])


def test_step_before_reset():
    with pytest.raises(RuntimeError, match="reset"):
        PushTEnv().step([1.0, 1.0])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="obs_type"):
        PushTEnv(obs_type="image")
    with pytest.raises(ValueError, match="render_mode"):
        PushTEnv(render_mode="human")


def test_agent_follows_pd_target():
    env = PushTEnv(obs_type="state")
    env.reset(options={"reset_to_state": [100.0, 100.0, 350.0, 350.0, 0.0]})
    for _ in range(20):
        obs, *_ = env.step([150.0, 120.0])
    np.testing.assert_allclose(obs[:2], [150.0, 120.0], atol=0.5)
    np.testing.assert_allclose(obs[2:], [350.0, 350.0, 0.0], atol=1e-9)  # untouched block does not move


def test_pushing_moves_block():
    env = PushTEnv(obs_type="state")
    env.reset(options={"reset_to_state": [256.0, 380.0, 256.0, 300.0, 0.0]})  # agent below the bar
    for _ in range(10):
        obs, _, _, _, info = env.step([256.0, 200.0])  # push up (y down in the image)
    assert obs[3] < 290.0 and info["n_contacts"] > 0             # it moved because the agent touched it
    far = PushTEnv(obs_type="state")
    far.reset(options={"reset_to_state": [60.0, 60.0, 256.0, 300.0, 0.0]})
    _, _, _, _, info = far.step([70.0, 60.0])                    # nowhere near the block
    assert info["n_contacts"] == 0


# ------------------------------------------------------------------ geometry and reward
def test_keypoints_function():
    pose = np.array([100.0, 200.0, 0.3])
    c, s = math.cos(0.3), math.sin(0.3)
    expect = [(100 + c * x - s * y, 200 + s * x + c * y) for x, y in BLOCK_KEYPOINTS_LOCAL]
    np.testing.assert_allclose(block_keypoints(pose), expect, atol=1e-12)
    env = PushTEnv(obs_type="keypoints")
    obs, info = env.reset(seed=11)
    np.testing.assert_allclose(obs[:18], block_keypoints(info["block_pose"]).ravel())
    np.testing.assert_allclose(obs[18:], info["agent_pos"])


def test_outline_area_and_coverage():
    x, y = block_outline([0.0, 0.0, 0.0]).T
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))  # shoelace
    assert area == pytest.approx(BLOCK_AREA)
    assert coverage(GOAL_POSE) == pytest.approx(1.0)
    assert coverage([60.0, 60.0, 0.0]) == 0.0
    # shifted along the goal's bar direction by d: the overlap loses a d-wide strip of bar and of stem
    d = 10.0
    shifted = GOAL_POSE + np.array([d * math.cos(GOAL_POSE[2]), d * math.sin(GOAL_POSE[2]), 0.0])
    assert coverage(shifted) == pytest.approx((BLOCK_AREA - d * 30 - d * 90) / BLOCK_AREA)


def test_reward_and_termination_at_goal():
    env = PushTEnv(obs_type="state")
    env.reset(options={"reset_to_state": [30.0, 30.0, *GOAL_POSE]})
    _, reward, terminated, _, info = env.step([30.0, 30.0])
    assert reward == 1.0 and terminated and info["is_success"] and info["coverage"] > 0.95
    env.reset(options={"reset_to_state": [30.0, 30.0, 256.0, 256.0, GOAL_POSE[2] + 0.3]})
    _, reward, terminated, _, info = env.step([30.0, 30.0])
    assert reward == pytest.approx(min(info["coverage"] / 0.95, 1.0)) and 0 < reward < 1 and not terminated
    assert set(info) >= {"coverage", "is_success", "block_pose", "agent_pos", "n_contacts"}


# ------------------------------------------------------------------ rendering
def test_render_headless_and_resize():
    env = PushTEnv(obs_type="pixels", render_mode="rgb_array", render_size=128)
    obs, info = env.reset(options={"reset_to_state": [100.0, 100.0, *GOAL_POSE]})
    frame = env.render()
    assert frame.shape == (128, 128, 3)
    r = Renderer()
    canvas = r.canvas(info["block_pose"], info["agent_pos"])
    assert tuple(canvas[100, 100]) == (65, 105, 225) or tuple(canvas[100, 100]) == (78, 126, 255)  # agent
    (sx, sy), = np.rint(pose_to_world(GOAL_POSE, np.array([[0.0, 60.0]]))).astype(int)  # inside the stem
    assert tuple(canvas[sy, sx]) == BLOCK_FILL  # block fill drawn over the goal
    assert tuple(canvas[480, 40]) == (255, 255, 255)
    # the incremental sampler gives the full-frame resize exactly (same integer arithmetic)
    np.testing.assert_array_equal(obs["pixels"], resize_linear(canvas, 96))
    assert PushTEnv(obs_type="state").render() is None


def test_incremental_rendering_matches_fresh_frames():
    """The renderer restores and resamples only what changed; after many frames it must equal a fresh one."""
    persistent = Renderer()
    rng = np.random.default_rng(0)
    for _ in range(40):
        pose = np.r_[rng.uniform(-40, 550, 2), rng.uniform(0, 2 * np.pi)]
        agent = rng.uniform(-20, 530, 2)
        small = persistent.draw(pose, agent, 96)
        fresh = Renderer().canvas(pose, agent)
        np.testing.assert_array_equal(persistent.canvas(pose, agent), fresh)
        np.testing.assert_array_equal(small, resize_linear(fresh, 96))


def test_legacy_physics_quirks():
    """Kept because the demonstrations were recorded with them: moment 3000, centre of gravity (0, 45)."""
    env = PushTEnv()
    env.reset(seed=0)
    block = env._block
    assert block.mass == 1.0 and block.moment == pytest.approx(3000.0)
    assert tuple(block.center_of_gravity) == pytest.approx((0.0, 45.0))
    assert env._space.damping == 0.0 and tuple(env._space.gravity) == (0.0, 0.0)
    assert all(s.friction == 0.0 and s.elasticity == 0.0 for s in env._space.shapes)

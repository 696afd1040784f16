"""Push-T env against the 206 real demonstrations (`pusht_cchi_v7_replay.zarr`, see parapolicy.data for where
it is looked for; every test here is skipped, naming the paths, when it is absent).

Data convention, established from the store (and checked below): row i holds the state observed *before*
action i is applied, so `state[i + 1]` is the env state after `step(action[i])` from `state[i]`, and the
first row of episode e is the legacy seeded reset with seed e. Figures are printed (run with `-s`, or see
the "fidelity" lines printed through capsys.disabled) and attached as junit properties.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.pusht import PushTEnv, block_keypoints
from parapolicy.data import ReplayBuffer, find_pusht_zarr, pusht_zarr_candidates

pytestmark = pytest.mark.realdata

POS_TOL_PX = 1.0
ANGLE_TOL_RAD = 0.01
RESET_TOL = 1e-3
KEYPOINT_TOL_PX = 1.0
PIXEL_MEAN_TOL = 0.005  # mean abs per frame, 0..255 levels (0.0008 measured)
N_FAST_SEEDED = 20  # episodes replayed from the seeded reset in the default suite (all 206 under -m slow)


@pytest.fixture(scope="module")
def demos() -> ReplayBuffer:
    path = find_pusht_zarr()
    if path is None:
        pytest.skip("Push-T demonstrations not found; looked for "
                    + ", ".join(str(p) for p in pusht_zarr_candidates())
                    + " (set PARAPOLICY_PUSHT_ZARR to its path)")
    return ReplayBuffer.load(path, keys=["state", "action", "keypoint", "n_contacts"])


def report(capsys, record_property, name: str, text: str, **values) -> None:
    """Show a fidelity figure in the test output even without -s, and attach it to the junit report."""
    with capsys.disabled():
        print(f"\n[fidelity] {name}: {text}")
    for k, v in values.items():
        record_property(f"{name}.{k}", v)


def wrap(a: np.ndarray) -> np.ndarray:
    """Angle difference wrapped to [-pi, pi)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def state_errors(sim: np.ndarray, rec: np.ndarray) -> tuple[float, float]:
    """(max abs position error px, max abs wrapped angle error rad) between (T, 5) state arrays."""
    return float(np.abs(sim[:, :4] - rec[:, :4]).max()), float(np.abs(wrap(sim[:, 4] - rec[:, 4])).max())


def replay(env: PushTEnv, actions: np.ndarray, start: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-loop replay: reset with `start` (reset kwargs), then step each action.

    Returns states (T, 5) and keypoint observations (T, 9, 2) observed before each action (the data's
    convention), and n_contacts (T,) reported by each step.
    """
    obs, _ = env.reset(**start)
    states, kps, contacts = [], [], []
    for a in actions:
        states.append(env.get_state())
        kps.append(obs[:18].reshape(9, 2))
        obs, _, _, _, info = env.step(a)
        contacts.append(info["n_contacts"])
    return np.array(states), np.array(kps), np.array(contacts)


def test_seeded_reset_matches_recorded_initial_states(demos, capsys, record_property):
    env = PushTEnv(obs_type="state")
    errs = []
    for e in range(demos.n_episodes):
        obs, _ = env.reset(seed=e)
        rec = demos.episode(e)["state"][0].astype(np.float64)
        errs.append(max(np.abs(obs[:4] - rec[:4]).max(), abs(wrap(obs[4] - rec[4]))))
    worst = int(np.argmax(errs))
    report(capsys, record_property, "seeded reset",
           f"max abs error {max(errs):.2e} over {len(errs)} episodes (worst episode {worst}; the store holds "
           "float32)", max_abs_error=max(errs))
    assert demos.n_episodes == 206
    assert max(errs) < RESET_TOL


@pytest.fixture(scope="module")
def recorded_start_replay(demos):
    """Every episode replayed open-loop from its recorded (float32) first state, placed exactly."""
    env = PushTEnv(obs_type="keypoints")
    out = []
    for e in range(demos.n_episodes):
        ep = demos.episode(e)
        start = {"options": {"reset_to_state": ep["state"][0].astype(np.float64)}}
        out.append(replay(env, ep["action"].astype(np.float64), start))
    return out


def test_replay_from_recorded_initial_states(demos, recorded_start_replay, capsys, record_property):
    pos, ang, n_steps, worst = 0.0, 0.0, 0, None
    for e, (states, _, _) in enumerate(recorded_start_replay):
        p, a = state_errors(states, demos.episode(e)["state"].astype(np.float64))
        if p > pos:
            pos, worst = p, e
        ang, n_steps = max(ang, a), n_steps + len(states)
    report(capsys, record_property, "open-loop replay from recorded first states",
           f"max abs position error {pos:.4f} px (episode {worst}), max abs angle error {ang:.5f} rad "
           f"over {n_steps} steps of {len(recorded_start_replay)} episodes",
           max_pos_px=pos, max_angle_rad=ang)
    assert n_steps == demos.n_steps
    assert pos < POS_TOL_PX and ang < ANGLE_TOL_RAD


def test_keypoint_observations_match_recorded_keypoints(demos, recorded_start_replay, capsys,
                                                        record_property):
    """The env's keypoint observation along the replay against the recorded `keypoint` array.

    Known exception, established from the data: in 16 episodes whose first state has the agent or a wall
    overlapping the block, the recorded keypoints of the first one or two frames belong to a rigid T at a
    pose up to 0.9 px / 0.014 rad away from the recorded state itself (the keypoint-from-recorded-state
    error is the same size with no env involved), and that offset halves every step, the rate at which
    pymunk's collision bias resolves overlap. Those frames are reported, and bounded separately.
    """
    errs_late, errs_start, n_start_over = [], [], 0
    direct = []
    for e, (_, kps, _) in enumerate(recorded_start_replay):
        ep = demos.episode(e)
        rec = ep["keypoint"].astype(np.float64)
        err = np.abs(kps - rec).max(axis=(1, 2))
        errs_late.append(err[2:].max() if len(err) > 2 else 0.0)
        errs_start.append(err[:2].max())
        n_start_over += int((err[:2] >= KEYPOINT_TOL_PX).sum())
        # the same frames computed straight from the recorded states, no simulation involved
        direct.append(max(np.abs(block_keypoints(s[2:]) - k).max() for s, k in zip(ep["state"][:2].astype(
            np.float64), rec[:2], strict=True)))
    late, start = max(errs_late), max(errs_start)
    report(capsys, record_property, "keypoint observation",
           f"max abs error {late:.4f} px on all frames after each episode's first two; first two frames: max "
           f"{start:.3f} px, {n_start_over} frames >= {KEYPOINT_TOL_PX} px (recorded keypoints vs recorded "
           f"state there: {max(direct):.3f} px)", max_px_after_start=late, max_px_first_two=start,
           frames_over_tol=n_start_over)
    assert late < KEYPOINT_TOL_PX
    # the start-frame excess is in the data itself: the env is at most 0.5 px further off than the record is
    # from its own states
    assert start < max(direct) + 0.5


def test_n_contacts_agreement(demos, recorded_start_replay, capsys, record_property):
    """Fraction of steps whose `info["n_contacts"]` equals the recorded n_contacts (reported; the recorded
    count's exact timing is not reproduced, so only a loose floor is asserted)."""
    same = total = 0
    for e, (_, _, contacts) in enumerate(recorded_start_replay):
        rec = demos.episode(e)["n_contacts"][:, 0]
        same += int((contacts == rec).sum())
        total += len(rec)
    report(capsys, record_property, "n_contacts", f"{same / total:.4f} of {total} steps equal the record",
           agreement=same / total)
    assert same / total > 0.9


def _seeded_replay_check(demos, episodes, capsys, record_property, label):
    env = PushTEnv(obs_type="keypoints")
    pos = ang = 0.0
    for e in episodes:
        ep = demos.episode(e)
        states, _, _ = replay(env, ep["action"].astype(np.float64), {"seed": e})
        p, a = state_errors(states, ep["state"].astype(np.float64))
        pos, ang = max(pos, p), max(ang, a)
    report(capsys, record_property, label, f"max abs position error {pos:.2e} px, angle {ang:.2e} rad over "
           f"{len(episodes)} episodes", max_pos_px=pos, max_angle_rad=ang)
    assert pos < POS_TOL_PX and ang < ANGLE_TOL_RAD
    return pos, ang


def test_replay_from_seeded_reset_subset(demos, capsys, record_property):
    """From the legacy seeded reset the replay is exact up to the store's float32 rounding."""
    pos, _ = _seeded_replay_check(demos, range(N_FAST_SEEDED), capsys, record_property,
                                  f"open-loop replay from seeded resets, first {N_FAST_SEEDED} episodes")
    assert pos < 1e-3


@pytest.mark.slow
def test_replay_from_seeded_reset_all(demos, capsys, record_property):
    pos, _ = _seeded_replay_check(demos, range(demos.n_episodes), capsys, record_property,
                                  "open-loop replay from seeded resets, all episodes")
    assert pos < 1e-3


def test_pixels_observation_close_to_recorded_images(demos, capsys, record_property):
    """The env's 96x96 observation, stepping episodes 0 and 1 open loop from their seeded resets, against
    the recorded `img` frames (collision-point markers included: the replay's contacts are the original's)."""
    import zarr

    n = int(demos.episode_ends[1])
    imgs = zarr.open_group(str(find_pusht_zarr()), mode="r")["data"]["img"][:n]  # (n, 96, 96, 3) float32
    env = PushTEnv(obs_type="pixels")
    diffs = []
    for e in (0, 1):
        sl = demos.episode_slice(e)
        obs, _ = env.reset(seed=e)
        for a, img in zip(demos.data["action"][sl].astype(np.float64), imgs[sl], strict=True):
            diffs.append(np.abs(obs["pixels"].astype(np.float64) - img).mean())
            obs, *_ = env.step(a)
    report(capsys, record_property, "pixels", f"mean abs difference {np.mean(diffs):.4f} / 255 (worst frame "
           f"{np.max(diffs):.4f}) over {len(diffs)} frames", mean_abs=float(np.mean(diffs)))
    assert np.mean(diffs) < 1e-3 and np.max(diffs) < 0.01


def test_pixel_replay_reproduces_recorded_images(capsys, record_property):
    """Every 40th episode replayed in the pixel env from its seeded reset: the recorded frames, exactly
    (measured on all 206 episodes with python -m eval.render_check --mode replay: see docs/env.md)."""
    from eval.render_check import replay_store

    path = find_pusht_zarr()
    if path is None:
        pytest.skip("Push-T demonstrations not found; looked for "
                    + ", ".join(str(p) for p in pusht_zarr_candidates()))
    _, diffs = replay_store(path, stride=40)
    exact = float((diffs[:, 1] == 0).mean())
    report(capsys, record_property, "pixel replay", f"{len(diffs)} frames: {100 * exact:.2f}% identical, "
           f"mean abs {diffs[:, 0].mean():.5f} / 255, max abs {diffs[:, 1].max():.0f}",
           exact_fraction=exact, max_abs=float(diffs[:, 1].max()))
    assert exact > 0.98
    assert diffs[:, 1].max() <= 10 and diffs[:, 0].mean() < 1e-3


def test_rendered_states_match_recorded_images(capsys, record_property):
    """Every 50th recorded state (513 frames) drawn by envs.render against its recorded image.

    Measured on all 25,650 frames (python -m eval.render_check): mean abs 0.0008 / 255 per frame, 79% of
    frames identical, the rest differing only at the collision-point markers (a recorded state carries no
    contacts); bounds leave a margin."""
    from eval.render_check import compare_store

    path = find_pusht_zarr()
    if path is None:
        pytest.skip("Push-T demonstrations not found; looked for "
                    + ", ".join(str(p) for p in pusht_zarr_candidates()))
    _, diffs = compare_store(path, stride=50)
    mean_abs, max_abs = diffs[:, 0], diffs[:, 1]
    exact = float((max_abs == 0).mean())
    report(capsys, record_property, "render", f"{len(diffs)} frames: mean abs {mean_abs.mean():.4f} / 255, "
           f"worst frame mean {mean_abs.max():.4f}, {100 * exact:.0f}% identical, max abs p50 "
           f"{np.percentile(max_abs, 50):.0f} max {max_abs.max():.0f}",
           mean_abs=float(mean_abs.mean()), exact_fraction=exact)
    assert mean_abs.mean() < PIXEL_MEAN_TOL
    assert mean_abs.max() < 0.1           # one marker is a few pixels: 0.027 measured
    assert exact > 0.6                    # 0.79 measured
    assert np.percentile(max_abs, 50) == 0

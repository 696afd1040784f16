"""envs.render: pygame-2 rasterisation rules, cv2 INTER_LINEAR fixed-point resize, comparison helpers.
No real data needed (the comparison with the recorded images is in tests/test_env_fidelity.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from envs.geometry import BLOCK_COLOR, BLOCK_FILL, CONTACT_COLOR, GOAL_COLOR, WALL_COLOR
from envs.render import (
    Renderer,
    aaline,
    fat_segment,
    fill_circle,
    fill_polygon,
    frame_differences,
    linear_resize_coefs,
    resize_linear,
    summarize_differences,
)

RED = np.array([255, 0, 0, 255], dtype=np.uint8)


def blank(n=64):
    return np.zeros((n, n, 4), dtype=np.uint8)


def reference_fillpoly(points, n):
    """pygame's draw_fillpoly written out pixel by pixel with Python ints (no numpy), as a reference."""
    out = np.zeros((n, n), dtype=bool)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    miny, maxy = min(ys), max(ys)
    for y in range(miny, maxy + 1):
        hits = []
        for i in range(len(points)):
            (xa, ya), (xb, yb) = points[i - 1], points[i]
            if ya == yb:
                continue
            if ya > yb:
                xa, ya, xb, yb = xb, yb, xa, ya
            if ya <= y < yb or (y == maxy and yb == maxy):
                num = (y - ya) * (xb - xa)
                hits.append(int(num / (yb - ya)) + xa)   # C division truncates toward zero
        hits.sort()
        for a, b in zip(hits[::2], hits[1::2]):
            out[y, max(a, 0):min(b, n - 1) + 1] = True
    for i in range(len(points)):
        y = ys[i]
        if miny < y < maxy and ys[i - 1] == y:
            a, b = sorted((xs[i], xs[i - 1]))
            out[y, a:b + 1] = True
    return out


def test_render_module_does_not_import_pusht():
    code = "import sys, envs.render; print('envs.pusht' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fill_polygon_rectangle_is_inclusive():
    buf = blank()
    fill_polygon(buf, [(2, 3), (7, 3), (7, 6), (2, 6), (2, 3)], RED)
    mask = buf[..., 3] > 0
    assert mask.sum() == 6 * 4 and mask[3:7, 2:8].all()


@pytest.mark.parametrize("seed", range(6))
def test_fill_polygon_matches_pixel_reference(seed):
    rng = np.random.default_rng(seed)
    c = rng.uniform(20, 44, 2)
    a, w, h = rng.uniform(0, 2 * np.pi), rng.uniform(4, 30), rng.uniform(4, 30)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    corners = (np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2) @ rot.T + c
    pts = [(round(x), round(y)) for x, y in corners]
    pts.append(pts[0])
    buf = blank()
    fill_polygon(buf, pts, RED)
    np.testing.assert_array_equal(buf[..., 3] > 0, reference_fillpoly(pts, 64))


@pytest.mark.parametrize("r", [2, 11, 15])
def test_fill_circle_is_pygame_disc(r):
    buf = blank()
    fill_circle(buf, (30, 30), r, RED)
    mask = buf[..., 3] > 0
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (30 - r, 29 + r, 30 - r, 29 + r)
    sub = mask[30 - r:30 + r, 30 - r:30 + r]          # symmetric about the pixel corner (29.5, 29.5)
    assert (sub == sub[::-1, ::-1]).all() and (sub == sub.T).all()
    assert abs(mask.sum() - np.pi * r * r) < 2 * np.pi * r


def test_fat_segment_keeps_the_originals_slanted_offset():
    """The original offsets by (|dy|, |dx|): a real normal for a down-left edge, a sliver for down-right."""
    down_left, down_right = blank(), blank()
    fat_segment(down_left, (40.0, 10.0), (10.0, 40.0), 2.0, RED)
    fat_segment(down_right, (10.0, 10.0), (40.0, 40.0), 2.0, RED)
    assert (down_right[..., 3] > 0).sum() < (down_left[..., 3] > 0).sum()


def test_resize_keeps_uniform_colours_exactly():
    for color in ((255, 255, 255), BLOCK_FILL, BLOCK_COLOR, GOAL_COLOR, WALL_COLOR, (78, 126, 255)):
        img = np.empty((512, 512, 3), np.uint8)
        img[:] = color
        out = resize_linear(img, 96)
        assert (out == np.array(color, np.uint8)).all()


def test_resize_close_to_float_bilinear():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    lo, hi, w_lo, w_hi = linear_resize_coefs(512, 96)
    assert ((w_lo + w_hi) == 2048).all()
    f = ((np.arange(96) + 0.5) * 512 / 96 - 0.5)
    np.testing.assert_allclose(w_hi / 2048, f - np.floor(f), atol=1 / 2048)
    x = img.astype(float)
    wy = (f - np.floor(f))[:, None, None]
    wx = (f - np.floor(f))[None, :, None]
    top = x[lo][:, lo] * (1 - wx) + x[lo][:, hi] * wx
    bot = x[hi][:, lo] * (1 - wx) + x[hi][:, hi] * wx
    ref = top * (1 - wy) + bot * wy
    assert np.abs(resize_linear(img, 96) - ref).max() <= 1.0


def test_frame_differences_and_summary():
    r = Renderer()
    states = np.array([[100.0, 100.0, 256.0, 300.0, 0.3], [400.0, 80.0, 200.0, 250.0, 2.0]])
    images = np.stack([Renderer().draw(s[2:5], s[:2], 96) for s in states])
    d = frame_differences(states, images, r)
    np.testing.assert_array_equal(d, 0.0)
    images[1, 10, 10] = 0
    d = frame_differences(states, images)
    assert d[0, 1] == 0 and d[1, 1] == 255
    s = summarize_differences(d)
    assert s["frames"] == 2 and s["exact_frames"] == 1 and s["max_abs"]["max"] == 255
    with pytest.raises(ValueError, match="states"):
        frame_differences(states[:, :4], images)
    with pytest.raises(ValueError, match="images"):
        frame_differences(states, images[:1])


def test_aaline_horizontal_is_solid_and_diagonal_blends():
    buf = blank()
    buf[..., :3] = 255
    aaline(buf, (5, 10), (20, 10), RED)
    assert (buf[10, 5:21, :3] == RED[:3]).all() and (buf[9, :, :3] == 255).all() and (buf[11, :, :3] == 255).all()
    buf[..., :3] = 255
    aaline(buf, (5, 5), (25, 12), RED)
    assert tuple(buf[5, 5, :3]) == (255, 0, 0) and tuple(buf[12, 25, :3]) == (255, 0, 0)  # integer ends: full
    touched = (buf[..., :3] != 255).any(-1)
    partial = touched & (buf[..., 1] > 0)
    assert partial.sum() > 10                                     # anti-aliased pixels in between
    cols = np.nonzero(touched)[1]
    assert cols.min() == 5 and cols.max() == 25
    # brightness splits between the two rows of a column: green levels of each pair add up to about 255
    col = buf[:, 15, 1].astype(int)
    rows = np.nonzero(col < 255)[0]
    assert len(rows) == 2 and abs((255 - col[rows]).sum() - 255) <= 2


def test_env_draws_collision_markers_where_agent_touches_block():
    from envs.pusht import PushTEnv

    env = PushTEnv(obs_type="pixels", render_mode="rgb_array")
    env.reset(options={"reset_to_state": [256.0, 280.0, 256.0, 300.0, 0.0]})   # agent touching the bar
    for _ in range(3):
        env.step([256.0, 320.0])                                             # keep pushing down
    contacts = env._contact_segments()
    assert contacts, "the push should leave contacts"
    frame = env.render()
    plain = Renderer().canvas(env.block_pose, env.agent_pos)
    red = np.array(CONTACT_COLOR)
    diff = (frame != plain).any(-1)
    assert diff.any()
    assert (np.abs(frame[diff].astype(int) - red).sum(-1) < np.abs(plain[diff].astype(int) - red).sum(-1)).all()

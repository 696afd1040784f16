"""Headless Push-T rendering that reproduces the original's pygame frames: no window, no pygame.

The original (Diffusion Policy's `PushTEnv._render_frame` with its `pymunk_override.DrawOptions`) draws on
a 512 x 512 pygame canvas, y down, white background:
1. the goal T: each rectangle filled with `pygame.draw.polygon` in LightGreen (no outline);
2. pymunk's debug draw, dynamic shapes first (the T's bar, its stem, then the agent: Chipmunk iterates its
   shape hash set by shape id modulo 5), then the static walls:
   - a T rectangle: filled with the lightened colour (1.2 x LightSlateGray), then each edge (in pymunk's
     vertex order) as a "fat segment" of radius 2 in LightSlateGray;
   - a fat segment: a 4 px `pygame.draw.lines`, a 4-corner polygon whose offset is built from
     (|dy|, |dx|) (the original's formula: a true normal only for edges whose dx and dy have opposite
     signs; other edges get a slanted, thinner band) and a radius-2 disc at each end;
   - the agent: a RoyalBlue disc of radius 15 and a lightened disc of radius 11;
   - the walls: fat segments of radius 2 in LightGray;
   - then the collision-point markers (below).
3. `cv2.resize(img, (96, 96))`, i.e. INTER_LINEAR on uint8: pixel-centre aligned bilinear with 11-bit
   fixed-point weights (no antialiasing).
Every primitive here follows pygame 2's integer rasterisation (scanline polygon fill with C integer
division, Bresenham lines widened by [-1, +2] px, the midpoint filled circle), coordinates rounded with
Python's `round` as pymunk's `to_pygame` does. Last, pymunk's collision-point markers: a red
anti-aliased line (pygame `aaline`, blended) per contact point of the last physics substep; the env passes
its live contacts, a bare recorded state has none (see docs/env.md for the measured match).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from envs.geometry import (
    AGENT_COLOR,
    AGENT_FILL,
    AGENT_RADIUS,
    BAR_HULL,
    BLOCK_COLOR,
    BLOCK_FILL,
    CONTACT_COLOR,
    GOAL_COLOR,
    GOAL_POSE,
    STEM_HULL,
    WALL_COLOR,
    WALL_RADIUS,
    WALLS,
    WHITE,
    WORKSPACE,
    pose_to_world,
)

CANVAS = int(WORKSPACE)
COEF_BITS = 11
"""OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights are integers out of 2048."""


def _rgba(color) -> np.ndarray:
    return np.array(tuple(color) + (255,), dtype=np.uint8)


def _cdiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C integer division (truncation toward zero) of int arrays, b > 0."""
    q = np.abs(a) // b
    return np.where(a < 0, -q, q)


def to_pixel(p) -> tuple[int, int]:
    """pymunk's `to_pygame` with y down: each coordinate rounded by Python's round (half to even)."""
    return round(float(p[0])), round(float(p[1]))


# ---------------------------------------------------------------- pygame 2 primitives -------------------
def _hspan(buf: np.ndarray, x1: int, y: int, x2: int, color: np.ndarray) -> None:
    """Pixels x1..x2 (inclusive, either order) of row y, clipped to the buffer."""
    h, w = buf.shape[:2]
    if not 0 <= y < h:
        return
    lo, hi = max(min(x1, x2), 0), min(max(x1, x2), w - 1)
    if lo <= hi:
        buf[y, lo:hi + 1] = color


def fill_polygon(buf: np.ndarray, points: list[tuple[int, int]], color: np.ndarray) -> None:
    """pygame's `draw.polygon(..., width=0)` (`draw_fillpoly`) of integer `points` into `buf` (H, W, 4).

    Row y from min to max y: every non-horizontal edge with y1 <= y < y2 (or y == y2 == max y) contributes
    x = (y - y1) (x2 - x1) / (y2 - y1) + x1 in C integer division; sorted intersections are filled in
    inclusive pairs. Horizontal edges strictly between min and max y are drawn as well.
    """
    px = np.array([p[0] for p in points], dtype=np.int64)
    py = np.array([p[1] for p in points], dtype=np.int64)
    miny, maxy = int(py.min()), int(py.max())
    if miny == maxy:
        _hspan(buf, int(px.min()), miny, int(px.max()), color)
        return
    qx, qy = np.roll(px, 1), np.roll(py, 1)                      # the previous point of each edge
    keep = qy != py
    lower = qy < py
    y1 = np.where(lower, qy, py)[keep]
    y2 = np.where(lower, py, qy)[keep]
    x1 = np.where(lower, qx, px)[keep]
    x2 = np.where(lower, px, qx)[keep]
    ys = np.arange(miny, maxy + 1)[:, None]                       # (rows, 1)
    hit = ((ys >= y1) & (ys < y2)) | ((ys == maxy) & (y2 == maxy))  # (rows, edges)
    xs = _cdiv((ys - y1) * (x2 - x1), y2 - y1) + x1
    big = np.iinfo(np.int64).max
    xs = np.sort(np.where(hit, xs, big), axis=1)
    n_hit = hit.sum(axis=1)                                           # (rows,)
    n_pairs = int(n_hit.max()) // 2
    a, b = xs[:, 0:2 * n_pairs:2], xs[:, 1:2 * n_pairs:2]             # (rows, pairs) span ends
    valid = (2 * np.arange(n_pairs) + 1)[None, :] < n_hit[:, None]
    h, w = buf.shape[:2]
    if valid.any():
        x0, x1 = max(int(a[valid].min()), 0), min(int(b[valid].max()), w - 1)
        r0, r1 = max(miny, 0), min(maxy, h - 1)
        if x0 <= x1 and r0 <= r1:
            cols = np.arange(x0, x1 + 1)
            sel = slice(r0 - miny, r1 - miny + 1)
            inside = ((cols >= a[sel, :, None]) & (cols <= b[sel, :, None]) & valid[sel, :, None]).any(axis=1)
            buf[r0:r1 + 1, x0:x1 + 1][inside] = color
    for i in range(len(points)):
        y = int(py[i])
        if miny < y < maxy and int(py[i - 1]) == y:
            _hspan(buf, int(px[i]), y, int(px[i - 1]), color)


@cache
def _circle_spans(radius: int) -> tuple[tuple[int, int, int], ...]:
    """(dy, dx_left, dx_right) spans of pygame's `draw_circle_filled` around (x0, y0); it covers a disc
    centred on (x0 - 1/2, y0 - 1/2), 2 radius pixels across."""
    spans = []
    f, ddf_x, ddf_y, x, y = 1 - radius, 0, -2 * radius, 0, radius
    while x < y:
        if f >= 0:
            y -= 1
            ddf_y += 2
            f += ddf_y
        x += 1
        ddf_x += 2
        f += ddf_x + 1
        if f >= 0:
            spans += [(y - 1, -x, x - 1), (-y, -x, x - 1)]
        spans += [(x - 1, -y, y - 1), (-x, -y, y - 1)]
    return tuple(spans)


@cache
def _circle_mask(radius: int) -> np.ndarray:
    """(2 radius, 2 radius) bool: the pixels of `_circle_spans`, rows y0 - radius.., cols x0 - radius..."""
    m = np.zeros((2 * radius, 2 * radius), dtype=bool)
    for dy, xl, xr in _circle_spans(radius):
        m[dy + radius, xl + radius:xr + radius + 1] = True
    return m


def fill_circle(buf: np.ndarray, center: tuple[int, int], radius: int, color: np.ndarray) -> None:
    """pygame's `draw.circle(..., width=0)` at an integer centre."""
    if radius < 1:
        return
    m = _circle_mask(radius)
    h, w = buf.shape[:2]
    y0, x0 = center[1] - radius, center[0] - radius
    ya, yb, xa, xb = max(y0, 0), min(y0 + 2 * radius, h), max(x0, 0), min(x0 + 2 * radius, w)
    if ya < yb and xa < xb:
        buf[ya:yb, xa:xb][m[ya - y0:yb - y0, xa - x0:xb - x0]] = color


def _bresenham(p1: tuple[int, int], p2: tuple[int, int]) -> np.ndarray:
    """pygame's Bresenham walk from p1 to p2, both ends included: (N, 2) int points."""
    x1, y1 = p1
    x2, y2 = p2
    dx, sx = abs(x2 - x1), (1 if x1 < x2 else -1)
    dy, sy = abs(y2 - y1), (1 if y1 < y2 else -1)
    err = dx // 2 if dx > dy else -(dy // 2)
    pts = []
    while x1 != x2 or y1 != y2:
        pts.append((x1, y1))
        e2 = err
        if e2 > -dx:
            err -= dy
            x1 += sx
        if e2 < dy:
            err += dx
            y1 += sy
    pts.append((x2, y2))
    return np.array(pts, dtype=np.int64)


def thick_line(buf: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], width: int, color) -> None:
    """pygame's `draw.line(..., width)` for width > 1: each Bresenham point widened to
    [c - (width - 1) // 2, c + width // 2] across x for steep lines (|dx| <= |dy|), else across y."""
    pts = _bresenham(p1, p2)
    offsets = np.arange(-((width - 1) // 2), width // 2 + 1)
    h, w = buf.shape[:2]
    if abs(p1[0] - p2[0]) <= abs(p1[1] - p2[1]):
        xs, ys = pts[:, :1] + offsets, np.repeat(pts[:, 1:], len(offsets), axis=1)
    else:
        ys, xs = pts[:, 1:] + offsets, np.repeat(pts[:, :1], len(offsets), axis=1)
    ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    buf[ys[ok], xs[ok]] = color


def fat_segment(buf: np.ndarray, a, b, radius: float, color: np.ndarray) -> None:
    """`DrawOptions.draw_fat_segment` of the original: from world points a, b (floats)."""
    p1, p2 = to_pixel(a), to_pixel(b)
    r = round(max(1.0, radius * 2))
    thick_line(buf, p1, p2, r, color)
    if r <= 2:
        return
    ox, oy = abs(p2[1] - p1[1]), abs(p2[0] - p1[0])
    if ox == 0 and oy == 0:
        return
    scale = radius / (ox * ox + oy * oy) ** 0.5
    ox, oy = round(ox * scale), round(oy * scale)
    fill_polygon(buf, [(p1[0] - ox, p1[1] - oy), (p1[0] + ox, p1[1] + oy),
                       (p2[0] + ox, p2[1] + oy), (p2[0] - ox, p2[1] - oy)], color)
    fill_circle(buf, p1, round(radius), color)
    fill_circle(buf, p2, round(radius), color)


def _blend_pixel(buf: np.ndarray, x: int, y: int, color: np.ndarray, brightness) -> None:
    """pygame's `get_antialiased_color` with blend: (uint8)(b c + (1 - b) background), float32."""
    h, w = buf.shape[:2]
    if 0 <= x < w and 0 <= y < h:
        b = np.float32(brightness)
        mixed = b * color[:3].astype(np.float32) + (np.float32(1) - b) * buf[y, x, :3].astype(np.float32)
        buf[y, x, :3] = mixed.astype(np.uint8)


def aaline(buf: np.ndarray, p1, p2, color: np.ndarray) -> None:
    """pygame 2's `draw.aaline(..., blend=1)` from p1 to p2 (float32 arithmetic, no clipping needed inside
    the canvas): two endpoint pixels, then two blended pixels per column (row, for steep lines)."""
    f32 = np.float32
    fx, fy, tx, ty = (f32(v) for v in (p1[0], p1[1], p2[0], p2[1]))
    dx, dy = tx - fx, ty - fy
    if abs(dx) < 1e-4 and abs(dy) < 1e-4:
        _blend_pixel(buf, int(np.floor(fx + f32(0.5))), int(np.floor(fy + f32(0.5))), color, 1.0)
        return
    steep = abs(dx) < abs(dy)
    if steep:
        fx, fy, tx, ty, dx, dy = fy, fx, ty, tx, dy, dx
    if dx < 0:
        fx, tx, fy, ty, dx, dy = tx, fx, ty, fy, -dx, -dy
    gradient = f32(dy / dx)
    fy, ty = fy + f32(1), ty + f32(1)     # pygame shifts down one pixel so that int() floors

    def put(x, y, b):
        _blend_pixel(buf, *((y, x) if steep else (x, y)), color, b)

    def endpoint(xp, y_end, gap):
        bright = y_end - f32(int(y_end))
        if int(y_end) < y_end:
            put(xp, int(y_end), bright * gap)
        put(xp, int(y_end) - 1, (f32(1) - bright) * gap)

    x_start = int(fx)
    intersect = fy + gradient * f32(x_start - fx)
    endpoint(x_start, intersect, f32(1) + f32(x_start) - fx)
    intersect = intersect + gradient
    x_start += 1
    x_end = int(np.ceil(tx))
    endpoint(x_end, ty + gradient * (f32(x_end) - tx), f32(1) - f32(x_end) + tx)
    for x in range(x_start, x_end):
        y = int(intersect)
        bright = f32(1) - intersect + f32(y)
        put(x, y - 1, bright)
        if y < intersect:
            put(x, y, f32(1) - bright)
        intersect = intersect + gradient


def draw_block_rect(buf: np.ndarray, world: np.ndarray) -> None:
    """`DrawOptions.draw_polygon` of one T rectangle: (4, 2) world vertices in pymunk's order."""
    pts = [to_pixel(p) for p in world]
    fill_polygon(buf, pts + [pts[0]], _rgba(BLOCK_FILL))
    for i in range(len(world)):
        fat_segment(buf, world[i], world[(i + 1) % len(world)], 2.0, _rgba(BLOCK_COLOR))


# ---------------------------------------------------------------- cv2 INTER_LINEAR ----------------------
def linear_resize_coefs(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR along one axis: (dst,) lower source index, upper index, and the integer weight of
    the upper one out of 2048 (the lower gets its own rounding of (1 - f) 2048).

    Returns (lo, hi, w_lo, w_hi). Source coordinate of output pixel i: (i + 0.5) src / dst - 0.5 in
    float32, clamped to [0, src - 1].
    """
    f = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    lo = np.floor(f).astype(np.int64)
    frac = (f - lo.astype(np.float32)).astype(np.float32)
    low = lo < 0
    frac[low], lo[low] = 0.0, 0
    high = lo >= src - 1
    frac[high], lo[high] = 0.0, src - 1
    hi = np.minimum(lo + 1, src - 1)
    scale = np.float32(1 << COEF_BITS)
    w_lo = np.rint((np.float32(1.0) - frac) * scale).astype(np.int64)
    w_hi = np.rint(frac * scale).astype(np.int64)
    return lo, hi, w_lo, w_hi


def _blend(c00, c01, c10, c11, ax0, ax1, by0, by1) -> np.ndarray:
    """OpenCV's fixed-point bilinear blend of uint8 corners (any shape, int64 weights broadcast):
    horizontal sums in 11-bit weights, then the SIMD vertical pass ((s >> 4) * b >> 16 per row, + 2 >> 2)."""
    top = c00 * ax0 + c01 * ax1
    bot = c10 * ax0 + c11 * ax1
    out = (((top >> 4) * by0) >> 16) + (((bot >> 4) * by1) >> 16)
    return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)


def resize_linear(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C) uint8 as `cv2.resize(img, (size, size))` (INTER_LINEAR)."""
    h, w = img.shape[:2]
    if h == size and w == size:
        return img.copy()
    y0, y1, by0, by1 = linear_resize_coefs(h, size)
    x0, x1, ax0, ax1 = linear_resize_coefs(w, size)
    src = img.astype(np.int64)
    r0, r1 = src[y0], src[y1]
    ax0, ax1 = ax0[None, :, None], ax1[None, :, None]
    return _blend(r0[:, x0], r0[:, x1], r1[:, x0], r1[:, x1], ax0, ax1, by0[:, None, None], by1[:, None, None])


class _Sampler:
    """`resize_linear` of a (512, 512, 4) canvas restricted to some output rows x columns.

    `lo`/`hi` (size,) are the first and last canvas row (= column) each output row (column) reads.
    """

    def __init__(self, size: int):
        self.lo, self.hi, self.w_lo, self.w_hi = linear_resize_coefs(CANVAS, size)

    def sample(self, canvas: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        """(n_rows, n_cols, 3) uint8 output pixels rows x cols from a (512, 512, 4) uint8 canvas."""
        y0, y1 = self.lo[rows], self.hi[rows]
        x0, x1 = self.lo[cols], self.hi[cols]
        rgb = canvas[..., :3]
        r0, r1 = rgb[y0].astype(np.int64), rgb[y1].astype(np.int64)
        ax0, ax1 = self.w_lo[cols][None, :, None], self.w_hi[cols][None, :, None]
        by0, by1 = self.w_lo[rows][:, None, None], self.w_hi[rows][:, None, None]
        return _blend(r0[:, x0], r0[:, x1], r1[:, x0], r1[:, x1], ax0, ax1, by0, by1)

    def affected(self, lo: int, hi: int) -> slice:
        """Output rows (or columns) that read any canvas row in [lo, hi)."""
        return slice(int(np.searchsorted(self.hi, lo, side="left")),
                     int(np.searchsorted(self.lo, hi - 1, side="right")))


class Renderer:
    """Draws Push-T frames into a persistent (512, 512, 4) RGBA buffer. The static layer (background,
    goal, walls) is drawn once; a frame restores only the rectangles the previous frame drew on, draws the
    block and the agent, redraws the walls' pixels over them (the original draws static shapes last), and
    resamples only the output pixels those rectangles touch on top of the static layer's resampled copy."""

    def __init__(self):
        bg = np.empty((CANVAS, CANVAS, 4), dtype=np.uint8)
        bg[:] = _rgba(WHITE)
        for hull in (BAR_HULL, STEM_HULL):
            pts = [to_pixel(p) for p in pose_to_world(GOAL_POSE, np.array(hull))]
            fill_polygon(bg, pts + [pts[0]], _rgba(GOAL_COLOR))
        walls = np.zeros_like(bg)
        for a, b in WALLS:
            fat_segment(walls, a, b, WALL_RADIUS, _rgba(WALL_COLOR))
        self._wall_mask = walls[..., 3] > 0                               # (512, 512) bool
        bg[self._wall_mask] = _rgba(WALL_COLOR)
        self._background = bg
        self._buffer = bg.copy()
        self._dirty: list[tuple[int, int, int, int]] = []   # (x0, y0, x1, y1) half-open, drawn last frame
        self._samplers: dict[int, _Sampler] = {}
        self._static: dict[int, np.ndarray] = {}

    @staticmethod
    def _rect(points: list[tuple[int, int]], margin: int) -> tuple[int, int, int, int]:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return (max(min(xs) - margin, 0), max(min(ys) - margin, 0),
                min(max(xs) + margin + 1, CANVAS), min(max(ys) + margin + 1, CANVAS))

    def _paint(self, block_pose: np.ndarray, agent_pos: np.ndarray, contacts=()) -> np.ndarray:
        buf = self._buffer
        for x0, y0, x1, y1 in self._dirty:
            buf[y0:y1, x0:x1] = self._background[y0:y1, x0:x1]
        dirty = []
        for hull in (BAR_HULL, STEM_HULL):
            world = pose_to_world(block_pose, np.array(hull))
            draw_block_rect(buf, world)
            dirty.append(self._rect([to_pixel(p) for p in world], 4))
        c = to_pixel(agent_pos)
        fill_circle(buf, c, round(AGENT_RADIUS), _rgba(AGENT_COLOR))
        fill_circle(buf, c, round(AGENT_RADIUS - 4), _rgba(AGENT_FILL))
        r = round(AGENT_RADIUS)
        dirty.append(self._rect([(c[0] - r, c[1] - r), (c[0] + r, c[1] + r)], 1))
        self._dirty = [d for d in dirty if d[0] < d[2] and d[1] < d[3]]
        for x0, y0, x1, y1 in self._dirty:
            region, mask = buf[y0:y1, x0:x1], self._wall_mask[y0:y1, x0:x1]
            region[mask] = self._background[y0:y1, x0:x1][mask]
        for a, b in contacts:   # pymunk's collision-point markers, drawn after all shapes
            pa, pb = to_pixel(a), to_pixel(b)
            aaline(buf, pa, pb, _rgba(CONTACT_COLOR))
            rect = self._rect([pa, pb], 2)
            if rect[0] < rect[2] and rect[1] < rect[3]:
                self._dirty.append(rect)
        return buf[..., :3]

    def canvas(self, block_pose: np.ndarray, agent_pos: np.ndarray, contacts=()) -> np.ndarray:
        """(512, 512, 3) uint8 frame (a new array) for a block pose (x, y, angle) and agent (x, y).

        contacts: segments ((ax, ay), (bx, by)) of pymunk's collision-point markers (the env passes those
        of its last physics substep); none for a bare recorded state."""
        return self._paint(block_pose, agent_pos, contacts).copy()

    def draw(self, block_pose: np.ndarray, agent_pos: np.ndarray, size: int, contacts=()) -> np.ndarray:
        """(size, size, 3) uint8 frame (a new array), resampled like `resize_linear`."""
        self._paint(block_pose, agent_pos, contacts)
        if size == CANVAS:
            return self._buffer[..., :3].copy()
        if size not in self._samplers:
            self._samplers[size] = sampler = _Sampler(size)
            self._static[size] = sampler.sample(self._background, slice(None), slice(None))
        sampler = self._samplers[size]
        out = self._static[size].copy()
        for x0, y0, x1, y1 in self._dirty:
            rows, cols = sampler.affected(y0, y1), sampler.affected(x0, x1)
            if rows.start < rows.stop and cols.start < cols.stop:
                out[rows, cols] = sampler.sample(self._buffer, rows, cols)
        return out


# ---------------------------------------------------------------- comparison with recorded frames -------
def frame_differences(states: np.ndarray, images: np.ndarray, renderer: Renderer | None = None) -> np.ndarray:
    """Render recorded states and compare with the images recorded with them.

    `states` (N, 5) [agent x, agent y, block x, block y, angle] as stored in the replay buffer (the block
    pose is the body origin's, so it is drawn directly: no physics, no placement order to get wrong);
    `images` (N, S, S, 3) in 0..255 (uint8 or float). Returns (N, 2) float64: per frame the mean and the
    max absolute difference over all S x S x 3 values, in 0..255 levels.
    """
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] != 5:
        raise ValueError(f"states must have shape (N, 5), got {states.shape}")
    if images.ndim != 4 or images.shape[0] != states.shape[0] or images.shape[3] != 3 \
            or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must have shape (N, S, S, 3) with N = {states.shape[0]}, got {images.shape}")
    renderer = Renderer() if renderer is None else renderer
    size = images.shape[1]
    out = np.empty((states.shape[0], 2))
    for i, s in enumerate(states):
        d = np.abs(renderer.draw(s[2:5], s[:2], size).astype(np.float64) - np.asarray(images[i], np.float64))
        out[i] = d.mean(), d.max()
    return out


def summarize_differences(diffs: np.ndarray) -> dict:
    """(N, 2) per-frame (mean, max) differences -> {"frames", "mean_abs": {mean, p50, p95, max},
    "max_abs": {...}, "exact_frames"} (statistics over frames, in 0..255 levels)."""
    def stats(a):
        return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
                "p95": float(np.percentile(a, 95)), "max": float(a.max())}
    return {"frames": int(diffs.shape[0]), "mean_abs": stats(diffs[:, 0]), "max_abs": stats(diffs[:, 1]),
            "exact_frames": int((diffs[:, 1] == 0).sum())}

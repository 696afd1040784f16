"""Headless Push-T rendering with PIL: no window, no pygame.

Draws what the original's pygame debug draw draws on a 512 x 512 canvas (y down): white background, the
goal T in LightGreen, walls in LightGray, the block with lightened fill and a 4 px LightSlateGray outline
per rectangle, the agent as a RoyalBlue disc with a lighter inner disc; then resizes the canvas the way
`cv2.resize(..., INTER_LINEAR)` does (pixel-centre aligned bilinear, no antialiasing), which is how the
96 x 96 training images were made.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from envs import pusht as P

_CANVAS = int(P.WORKSPACE)


def _round_points(points: np.ndarray) -> list[tuple[int, int]]:
    """pygame's `to_pygame`: round each coordinate to the nearest int."""
    return [(round(float(x)), round(float(y))) for x, y in points]


def _fat_segment(draw: ImageDraw.ImageDraw, a, b, radius: float, color) -> None:
    """A segment of the given radius: a line 2r wide with round caps."""
    r = round(radius)
    draw.line([a, b], fill=color, width=round(2 * radius))
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def linear_resize_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR sampling along one axis: (dst,) lower index, upper index, upper weight.

    Source coordinate of output pixel i: (i + 0.5) * src / dst - 0.5, clamped to [0, src - 1].
    """
    x = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    x = np.clip(x, 0.0, src - 1)
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    return lo, hi, (x - lo)


def resize_linear(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C) uint8 by pixel-centre bilinear sampling (cv2 INTER_LINEAR).

    Only the 2 x 2 source pixels around each sample point are read, so the cost scales with `size`, not H W.
    """
    h, w = img.shape[:2]
    if h == size and w == size:
        return img.copy()
    y0, y1, wy = linear_resize_weights(h, size)
    x0, x1, wx = linear_resize_weights(w, size)
    wx = wx.astype(np.float32)[None, :, None]
    wy = wy.astype(np.float32)[:, None, None]
    r0, r1 = img[y0], img[y1]                      # (size, W, C) row gathers
    top = r0[:, x0] * (1 - wx) + r0[:, x1] * wx    # (size, size, C) float32
    bot = r1[:, x0] * (1 - wx) + r1[:, x1] * wx
    out = top * (1 - wy) + bot * wy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class _Sampler:
    """Bilinear sampling of a (512, 512) RGBA canvas at `size` x `size` points (cv2 INTER_LINEAR positions).

    `lo`/`hi` (size,) are the first and last canvas row (= column) each output row (column) reads; `idx`
    (4, size, size) the flat canvas index of each sample's 4 corners, `w` (4, size, size, 1) their weights.
    """

    def __init__(self, size: int):
        y0, y1, wy = linear_resize_weights(_CANVAS, size)
        self.lo, self.hi = y0, y1
        self.idx = np.stack([ya[:, None] * _CANVAS + xa[None, :] for ya in (y0, y1) for xa in (y0, y1)])
        wx, wy = wy[None, :], wy[:, None]   # the grid is square: x weights equal y weights
        w = [(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx]
        self.w = np.stack(w).astype(np.float32)[..., None]

    def sample(self, canvas: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        """(n_rows, n_cols, 3) uint8 samples of output rows x cols from a (512, 512, 4) uint8 canvas:
        out = sum_k w_k corner_k, corners gathered as whole RGBA uint32 words (one contiguous take)."""
        idx = self.idx[:, rows, cols]
        corners = canvas.view(np.uint32).reshape(-1).take(idx)                  # (4, r, c) RGBA words
        corners = corners.view(np.uint8).reshape(idx.shape + (4,)).astype(np.float32)
        corners *= self.w[:, rows, cols]
        out = corners.sum(axis=0)[..., :3]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def affected(self, lo: int, hi: int) -> slice:
        """Output rows (or columns) that read any canvas row in [lo, hi)."""
        return slice(int(np.searchsorted(self.hi, lo, side="left")),
                     int(np.searchsorted(self.lo, hi - 1, side="right")))


class Renderer:
    """Draws Push-T frames into a persistent RGBA buffer that a PIL image shares (no per-frame image
    allocation or conversion). The static layer (background, goal, walls) is drawn once; a frame restores
    only the rectangles the previous frame drew on, draws the block and the agent, and resamples only the
    output pixels those rectangles touch on top of the static layer's resampled copy."""

    def __init__(self):
        bg = Image.new("RGBA", (_CANVAS, _CANVAS), P._WHITE + (255,))
        draw = ImageDraw.Draw(bg)
        for verts in (P.BAR_VERTICES, P.STEM_VERTICES):
            draw.polygon(_round_points(P.pose_to_world(P.GOAL_POSE, np.array(verts))), fill=P._GOAL)
        for a, b in P.WALLS:
            _fat_segment(draw, _round_points([a])[0], _round_points([b])[0], P.WALL_RADIUS, P._WALL)
        self._background = np.array(bg)                                   # (512, 512, 4) uint8
        self._buffer = self._background.copy()
        image = Image.frombuffer("RGBA", (_CANVAS, _CANVAS), self._buffer, "raw", "RGBA", 0, 1)
        image.readonly = 0  # draw straight into self._buffer (frombuffer marks shared memory read-only)
        self._draw = ImageDraw.Draw(image)
        self._image = image
        self._dirty: list[tuple[int, int, int, int]] = []   # (x0, y0, x1, y1) half-open, drawn last frame
        self._samplers: dict[int, _Sampler] = {}
        self._static: dict[int, np.ndarray] = {}

    @staticmethod
    def _rect(points: list[tuple[int, int]], margin: int) -> tuple[int, int, int, int]:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return (max(min(xs) - margin, 0), max(min(ys) - margin, 0),
                min(max(xs) + margin + 1, _CANVAS), min(max(ys) + margin + 1, _CANVAS))

    def _paint(self, block_pose: np.ndarray, agent_pos: np.ndarray) -> np.ndarray:
        for x0, y0, x1, y1 in self._dirty:
            self._buffer[y0:y1, x0:x1] = self._background[y0:y1, x0:x1]
        draw, dirty = self._draw, []
        for verts in (P.BAR_VERTICES, P.STEM_VERTICES):
            pts = _round_points(P.pose_to_world(block_pose, np.array(verts)))
            draw.polygon(pts, fill=P._BLOCK_FILL)
            for i in range(len(pts)):
                _fat_segment(draw, pts[i], pts[(i + 1) % len(pts)], 2.0, P._BLOCK)
            dirty.append(self._rect(pts, 4))
        cx, cy = round(float(agent_pos[0])), round(float(agent_pos[1]))
        for r, color in ((round(P.AGENT_RADIUS), P._AGENT), (round(P.AGENT_RADIUS - 4), P._AGENT_FILL)):
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        r = round(P.AGENT_RADIUS)
        dirty.append(self._rect([(cx - r, cy - r), (cx + r, cy + r)], 2))
        self._dirty = [d for d in dirty if d[0] < d[2] and d[1] < d[3]]
        return self._buffer[..., :3]

    def canvas(self, block_pose: np.ndarray, agent_pos: np.ndarray) -> np.ndarray:
        """(512, 512, 3) uint8 frame (a new array) for a block pose (x, y, angle) and agent (x, y)."""
        return self._paint(block_pose, agent_pos).copy()

    def draw(self, block_pose: np.ndarray, agent_pos: np.ndarray, size: int) -> np.ndarray:
        """(size, size, 3) uint8 frame (a new array), resampled like `resize_linear`."""
        self._paint(block_pose, agent_pos)
        if size == _CANVAS:
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

"""Push-T geometry and drawing constants shared by `envs.pusht` (simulation) and `envs.render` (drawing).

A leaf module: it imports only numpy and math, so neither of its users imports the other.
Coordinates are pixels of the 512 x 512 workspace, y pointing down (image convention).
"""

from __future__ import annotations

import math

import numpy as np

WORKSPACE = 512.0
"""Side of the square workspace in pixels; y points down (image convention)."""
GOAL_POSE = np.array([256.0, 256.0, math.pi / 4])
"""Goal pose (x, y, angle) of the T's body origin, the middle of the bar's outer edge."""
AGENT_RADIUS = 15.0
WALL_RADIUS = 2.0
WALLS = (((5.0, 506.0), (5.0, 5.0)), ((5.0, 5.0), (506.0, 5.0)),
         ((506.0, 5.0), (506.0, 506.0)), ((5.0, 506.0), (506.0, 506.0)))
"""Static wall segments, in the order the original adds them (the order fixes the solver's order)."""
BAR_VERTICES = ((-60.0, 30.0), (60.0, 30.0), (60.0, 0.0), (-60.0, 0.0))
STEM_VERTICES = ((-15.0, 30.0), (-15.0, 120.0), (15.0, 120.0), (15.0, 30.0))
"""The T's two rectangles in body coordinates, as the original passes them to pymunk."""
BAR_HULL = ((-60.0, 0.0), (60.0, 0.0), (60.0, 30.0), (-60.0, 30.0))
STEM_HULL = ((-15.0, 30.0), (15.0, 30.0), (15.0, 120.0), (-15.0, 120.0))
"""The same rectangles in the order pymunk's `Poly` stores them (Chipmunk's convex hull: counter-clockwise
in pymunk's frame, starting at the smallest-x, then smallest-y vertex). The outline's edges are drawn in this
order, which fixes the direction, hence the pixels, of each edge's line."""

# rendering colours: the original's pygame colour names and its `light_color` fills (1.2 x, rounded:
# the recorded images hold (143, 163, 184) for the block fill, not the truncated (142, 163, 183))
WHITE = (255, 255, 255)
GOAL_COLOR = (144, 238, 144)          # LightGreen
WALL_COLOR = (211, 211, 211)          # LightGray
AGENT_COLOR = (65, 105, 225)          # RoyalBlue
AGENT_FILL = (78, 126, 255)           # light_color(RoyalBlue)
BLOCK_COLOR = (119, 136, 153)         # LightSlateGray
CONTACT_COLOR = (231, 76, 60)         # pymunk's default collision-point colour
BLOCK_FILL = (143, 163, 184)          # light_color(LightSlateGray): 1.2 x (119, 136, 153), rounded (as recorded)


def pose_to_world(pose, local: np.ndarray) -> np.ndarray:
    """Body-frame points to world: `pose` (x, y, angle), `local` (N, 2) -> (N, 2).

    world = R(angle) local + (x, y), with R the counter-clockwise rotation in pymunk's frame.
    """
    x, y, a = float(pose[0]), float(pose[1]), float(pose[2])
    c, s = math.cos(a), math.sin(a)
    out = np.empty_like(local, dtype=np.float64)
    out[:, 0] = c * local[:, 0] - s * local[:, 1] + x
    out[:, 1] = s * local[:, 0] + c * local[:, 1] + y
    return out

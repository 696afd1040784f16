"""Render the demonstrations' recorded states with `envs.render` and compare with their recorded images.

    python -m eval.render_check [--mode states|replay] [--stride K] [--out outputs/render_check.json]

Prints per-frame mean / max absolute pixel difference (0..255 levels) summarised over frames (mean, p50,
p95, max) and writes them to a JSON. The store is found as the tests find it (`PARAPOLICY_PUSHT_ZARR` or
shared/pusht/, or --zarr).
- `--mode states` (default): frames 0, K, 2K, ... of `data/state` drawn by `envs.render` (no physics; no
  collision-point markers, which a recorded state does not carry) against `data/img` (K = 1: all 25,650).
- `--mode replay`: the pixel env reset with each episode's seed and stepped open loop through its recorded
  actions (bit-exact physics, so its live contacts draw the markers too); every K-th episode.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from envs.render import Renderer, frame_differences, summarize_differences


def compare_store(path, stride: int = 1, block: int = 1610) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices (M,), per-frame (mean, max) differences (M, 2)) for every `stride`-th frame."""
    import zarr

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    data = zarr.open_group(str(path), mode="r")["data"]
    states, images = data["state"], data["img"]
    n = states.shape[0]
    renderer, idx, diffs = Renderer(), [], []
    for start in range(0, n, block):   # read whole chunks of the image array, keep every stride-th frame
        rows = np.arange(start, min(start + block, n))
        rows = rows[rows % stride == 0]
        if rows.size == 0:
            continue
        imgs = images[start:min(start + block, n)][rows - start]
        diffs.append(frame_differences(states[start:min(start + block, n)][rows - start], imgs, renderer))
        idx.append(rows)
    return np.concatenate(idx), np.concatenate(diffs)


def replay_store(path, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, per-frame (mean, max) differences) of the pixel env replaying every `stride`-th
    episode from its seeded reset against the recorded images (row i: the observation before action i)."""
    import zarr

    from envs.pusht import PushTEnv

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    root = zarr.open_group(str(path), mode="r")
    ends = np.asarray(root["meta"]["episode_ends"][:])
    actions, images = root["data"]["action"], root["data"]["img"]
    env = PushTEnv(obs_type="pixels", observation_size=images.shape[1])
    idx, diffs = [], []
    for e in range(0, len(ends), stride):
        lo, hi = (int(ends[e - 1]) if e else 0), int(ends[e])
        acts, imgs = np.asarray(actions[lo:hi], np.float64), images[lo:hi]
        obs, _ = env.reset(seed=e)
        for i in range(hi - lo):
            d = np.abs(obs["pixels"].astype(np.float64) - imgs[i])
            diffs.append((d.mean(), d.max()))
            obs, *_ = env.step(acts[i])
        idx.append(np.arange(lo, hi))
    return np.concatenate(idx), np.array(diffs)


def main(argv=None) -> dict:
    from parapolicy.data import find_pusht_zarr, pusht_zarr_candidates

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["states", "replay"], default="states")
    ap.add_argument("--stride", type=int, default=1,
                    help="every K-th frame (states) or episode (replay); default 1: all")
    ap.add_argument("--zarr", default=None, help="replay buffer path (default: found like the tests)")
    ap.add_argument("--out", default="outputs/render_check.json")
    args = ap.parse_args(argv)
    path = Path(args.zarr) if args.zarr else find_pusht_zarr()
    if path is None or not path.exists():
        raise SystemExit("Push-T demonstrations not found; looked for "
                         + ", ".join(str(p) for p in pusht_zarr_candidates()))
    t0 = time.perf_counter()
    idx, diffs = (compare_store if args.mode == "states" else replay_store)(path, args.stride)
    summary = summarize_differences(diffs)
    summary.update(mode=args.mode, store=str(path), stride=args.stride, seconds=round(time.perf_counter() - t0, 1),
                   worst_frames=[int(i) for i in idx[np.argsort(-diffs[:, 1], kind="stable")[:10]]])
    print(f"mode {args.mode}: {summary['frames']} frames (stride {args.stride}), "
          f"{summary['exact_frames']} identical")
    print(f"{'per-frame':<14}{'mean':>10}{'p50':>10}{'p95':>10}{'max':>10}")
    for key in ("mean_abs", "max_abs"):
        s = summary[key]
        print(f"{key:<14}{s['mean']:>10.4f}{s['p50']:>10.4f}{s['p95']:>10.4f}{s['max']:>10.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return summary


if __name__ == "__main__":
    main()

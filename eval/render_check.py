"""Render the demonstrations' recorded states with `envs.render` and compare with their recorded images.

    python -m eval.render_check [--stride K] [--out outputs/render_check.json] [--zarr PATH]

Prints per-frame mean / max absolute pixel difference (0..255 levels) summarised over frames (mean, p50,
p95, max) and writes them to a JSON. Frames 0, K, 2K, ... of `data/state` / `data/img` are compared
(K = 1: all 25,650). The store is found as the tests find it (`PARAPOLICY_PUSHT_ZARR` or shared/pusht/).
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


def main(argv=None) -> dict:
    from parapolicy.data import find_pusht_zarr, pusht_zarr_candidates

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stride", type=int, default=1, help="compare every K-th frame (default 1: all)")
    ap.add_argument("--zarr", default=None, help="replay buffer path (default: found like the tests)")
    ap.add_argument("--out", default="outputs/render_check.json")
    args = ap.parse_args(argv)
    path = Path(args.zarr) if args.zarr else find_pusht_zarr()
    if path is None or not path.exists():
        raise SystemExit("Push-T demonstrations not found; looked for "
                         + ", ".join(str(p) for p in pusht_zarr_candidates()))
    t0 = time.perf_counter()
    idx, diffs = compare_store(path, args.stride)
    summary = summarize_differences(diffs)
    summary.update(store=str(path), stride=args.stride, seconds=round(time.perf_counter() - t0, 1),
                   worst_frames=[int(i) for i in idx[np.argsort(-diffs[:, 1], kind="stable")[:10]]])
    print(f"{summary['frames']} frames (stride {args.stride}), {summary['exact_frames']} identical")
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

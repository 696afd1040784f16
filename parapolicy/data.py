"""Replay buffers in Diffusion Policy's zarr layout and the sequence windows it trains on.

Layout (zarr format 2 or 3 group):

    data/<key>          (N, ...) arrays, one row per env step, all episodes concatenated
    meta/episode_ends   (E,) int64, exclusive end index of each episode

`zarr` is imported inside the functions that need it (the `data` extra), so `import parapolicy` stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parapolicy.atomic import atomic_dir

PUSHT_ZARR_ENV = "PARAPOLICY_PUSHT_ZARR"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def pusht_zarr_candidates() -> list[Path]:
    """Where the Push-T demonstrations are looked for, in order."""
    paths = []
    if os.environ.get(PUSHT_ZARR_ENV):
        paths.append(Path(os.environ[PUSHT_ZARR_ENV]))
    rel = Path("shared") / "pusht" / "pusht_cchi_v7_replay.zarr"
    # <dir>/shared/pusht/... for the repository root, the working directory and each of their parents
    # (a checkout at /work/main or a worktree at /work/wt/<name> both find /work/shared)
    for base in (_REPO_ROOT, Path.cwd().resolve()):
        for d in (base, *base.parents):
            if d / rel not in paths:
                paths.append(d / rel)
    return paths


def find_pusht_zarr() -> Path | None:
    """The first existing Push-T demonstration store, or None (see `pusht_zarr_candidates`)."""
    for p in pusht_zarr_candidates():
        if (p / "meta").exists() or (p / "data").exists():
            return p
    return None


def _zarr():
    try:
        import zarr
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("reading replay buffers needs zarr: pip install 'parapolicy[data]'") from e
    return zarr


@dataclass
class ReplayBuffer:
    """All episodes in memory: `data[key]` is (N, ...) and `episode_ends` is (E,) exclusive ends."""

    data: dict[str, np.ndarray]
    episode_ends: np.ndarray

    def __post_init__(self):
        ends = np.asarray(self.episode_ends, dtype=np.int64)
        if ends.ndim != 1 or (len(ends) and (np.any(np.diff(ends) <= 0) or ends[0] <= 0)):
            raise ValueError(f"episode_ends must be strictly increasing positive ints, got {ends[:10]}...")
        n = int(ends[-1]) if len(ends) else 0
        for k, v in self.data.items():
            if len(v) != n:
                raise ValueError(f"data/{k} has {len(v)} rows but episode_ends[-1] = {n}")
        self.episode_ends = ends

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    def episode_slice(self, e: int) -> slice:
        start = 0 if e == 0 else int(self.episode_ends[e - 1])
        return slice(start, int(self.episode_ends[e]))

    def episode(self, e: int) -> dict[str, np.ndarray]:
        """Arrays of episode e: {key: (T_e, ...)}."""
        if not -self.n_episodes <= e < self.n_episodes:
            raise IndexError(f"episode {e} out of range for {self.n_episodes} episodes")
        s = self.episode_slice(e % self.n_episodes)
        return {k: v[s] for k, v in self.data.items()}

    @classmethod
    def load(cls, path: str | os.PathLike, keys: list[str] | None = None) -> ReplayBuffer:
        """Read a zarr v2 or v3 store with `data/*` and `meta/episode_ends` into memory."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no replay buffer at {path}")
        root = _zarr().open_group(str(path), mode="r")
        try:
            ends = np.asarray(root["meta"]["episode_ends"][:])
            group = root["data"]
        except KeyError as e:
            raise ValueError(f"{path} is not a replay buffer: missing {e} "
                             "(need data/* and meta/episode_ends)") from e
        names = keys if keys is not None else sorted(group.array_keys())
        missing = [k for k in names if k not in group]
        if missing:
            raise KeyError(f"{path} has no data/{missing[0]}; it has {sorted(group.array_keys())}")
        return cls({k: np.asarray(group[k][:]) for k in names}, ends)

    def save(self, path: str | os.PathLike, chunk_rows: int = 1024) -> Path:
        """Write in zarr format 2 (readable by Diffusion Policy's tools) via a temporary directory
        renamed into place, so an interrupted write never leaves a half-written store at `path`."""
        zarr = _zarr()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(path) as tmp:
            if int(zarr.__version__.split(".")[0]) >= 3:
                # zarr 3 writes format 3 unless told; format 2 keeps the store readable by zarr 2 tools
                root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
            else:  # pragma: no cover - zarr 2 only writes format 2
                root = zarr.open_group(str(tmp), mode="w")
            data = root.create_group("data")
            for k, v in self.data.items():
                chunks = (min(chunk_rows, max(len(v), 1)),) + v.shape[1:]
                arr = data.create_array(k, shape=v.shape, dtype=v.dtype, chunks=chunks) \
                    if hasattr(data, "create_array") else data.create_dataset(k, shape=v.shape, dtype=v.dtype,
                                                                             chunks=chunks)
                arr[...] = v
            meta = root.create_group("meta")
            ends = meta.create_array("episode_ends", shape=self.episode_ends.shape, dtype=np.int64) \
                if hasattr(meta, "create_array") else meta.create_dataset(
                    "episode_ends", shape=self.episode_ends.shape, dtype=np.int64)
            ends[...] = self.episode_ends
        return path


def sequence_indices(episode_ends: np.ndarray, sequence_length: int, pad_before: int = 0,
                     pad_after: int = 0, episode_mask: np.ndarray | None = None) -> np.ndarray:
    """Windows as Diffusion Policy samples them: rows (buffer_start, buffer_end, sample_start, sample_end).

    A window may start up to `pad_before` steps before an episode and end up to `pad_after` steps after it;
    the missing frames are filled by repeating the episode's first / last frame (see `sample_sequence`).
    """
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
    pad_before = min(max(pad_before, 0), sequence_length - 1)
    pad_after = min(max(pad_after, 0), sequence_length - 1)
    rows = []
    for e, end in enumerate(episode_ends):
        if episode_mask is not None and not episode_mask[e]:
            continue
        start = 0 if e == 0 else int(episode_ends[e - 1])
        length = int(end) - start
        for idx in range(-pad_before, length - sequence_length + pad_after + 1):
            b0, b1 = max(idx, 0) + start, min(idx + sequence_length, length) + start
            s0 = b0 - (idx + start)
            rows.append((b0, b1, s0, s0 + (b1 - b0)))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def sample_sequence(array: np.ndarray, index: np.ndarray, sequence_length: int) -> np.ndarray:
    """One window (sequence_length, ...) of `array` for an `index` row, edge frames repeated."""
    b0, b1, s0, s1 = (int(i) for i in index)
    chunk = array[b0:b1]
    if s0 == 0 and s1 == sequence_length:
        return chunk
    out = np.empty((sequence_length,) + array.shape[1:], dtype=array.dtype)
    out[s0:s1] = chunk
    out[:s0] = chunk[0]
    out[s1:] = chunk[-1]
    return out


def validation_mask(n_episodes: int, val_ratio: float = 0.02, seed: int = 42) -> np.ndarray:
    """Boolean (E,) mask of validation episodes, Diffusion Policy's `get_val_mask` rule: round(ratio*E)
    episodes (at least 1 when ratio > 0 and E > 1, never all), chosen by `np.random.default_rng(seed)`."""
    mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio <= 0:
        return mask
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    rng = np.random.default_rng(seed=seed)
    mask[rng.choice(n_episodes, size=n_val, replace=False)] = True
    return mask


def pusht_keypoint_obs(buffer: ReplayBuffer) -> np.ndarray:
    """The low-dim policy's 20-value observation per step: 9 block keypoints (x, y) then agent (x, y)."""
    kp = buffer.data["keypoint"].reshape(buffer.n_steps, -1)
    return np.concatenate([kp, buffer.data["state"][:, :2]], axis=-1).astype(np.float32)

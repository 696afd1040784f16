"""parapolicy.data: zarr replay buffer (format 2 and 3 stores), episode slicing, sequence windows, atomic
writes. A tiny store is made in each test; the real Push-T store is checked when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from parapolicy.data import (
    ReplayBuffer,
    find_pusht_zarr,
    pusht_keypoint_obs,
    pusht_zarr_candidates,
    sample_sequence,
    sequence_indices,
    validation_mask,
)

zarr = pytest.importorskip("zarr")


def tiny_buffer(lengths=(5, 1, 7, 3), seed=0) -> ReplayBuffer:
    """Episodes of the given lengths; every row is distinct so windows can be checked row by row."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    return ReplayBuffer(
        data={
            "state": rng.normal(size=(n, 5)).astype(np.float32),
            "keypoint": rng.normal(size=(n, 9, 2)).astype(np.float32),
            "action": np.arange(2 * n, dtype=np.float32).reshape(n, 2),
        },
        episode_ends=np.cumsum(lengths),
    )


def assert_same(a: ReplayBuffer, b: ReplayBuffer) -> None:
    np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
    assert sorted(a.data) == sorted(b.data)
    for k in a.data:
        assert a.data[k].dtype == b.data[k].dtype, k
        np.testing.assert_array_equal(a.data[k], b.data[k])


def write_with_zarr_api(path: Path, buf: ReplayBuffer, zarr_format: int) -> None:
    """An independent writer: the zarr 3 API directly (explicit shapes, explicit format for every node)."""
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    data = root.create_group("data")
    for k, v in buf.data.items():
        data.create_array(k, shape=v.shape, dtype=v.dtype, chunks=(2,) + v.shape[1:])[...] = v
    meta = root.create_group("meta")
    meta.create_array("episode_ends", shape=buf.episode_ends.shape, dtype=np.int64)[...] = buf.episode_ends


# ------------------------------------------------------------------ round trips
def test_save_writes_zarr_format_2_everywhere_and_loads_back(tmp_path):
    buf = tiny_buffer()
    path = buf.save(tmp_path / "store.zarr", chunk_rows=4)
    # every node is format 2: .zgroup / .zarray metadata, and no format-3 zarr.json hidden inside the group
    assert not list(path.rglob("zarr.json"))
    assert (path / ".zgroup").exists() and (path / "data" / ".zgroup").exists()
    for k, v in buf.data.items():
        meta = json.loads((path / "data" / k / ".zarray").read_text())
        assert meta["zarr_format"] == 2 and tuple(meta["shape"]) == v.shape
        assert np.dtype(meta["dtype"]) == v.dtype and meta["chunks"][0] == 4
    meta = json.loads((path / "meta" / "episode_ends" / ".zarray").read_text())
    assert meta["zarr_format"] == 2 and np.dtype(meta["dtype"]) == np.int64
    assert_same(buf, ReplayBuffer.load(path))
    # the zarr API opened explicitly as format 2 sees the same arrays
    root = zarr.open_group(str(path), mode="r", zarr_format=2)
    np.testing.assert_array_equal(root["data"]["state"][:], buf.data["state"])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_load_reads_stores_written_by_the_zarr_api(tmp_path, zarr_format):
    buf = tiny_buffer(seed=zarr_format)
    write_with_zarr_api(tmp_path / "s.zarr", buf, zarr_format)
    assert (tmp_path / "s.zarr" / "zarr.json").exists() == (zarr_format == 3)
    assert_same(buf, ReplayBuffer.load(tmp_path / "s.zarr"))


def test_format_3_store_resaved_as_format_2(tmp_path):
    buf = tiny_buffer(seed=3)
    write_with_zarr_api(tmp_path / "v3.zarr", buf, 3)
    ReplayBuffer.load(tmp_path / "v3.zarr").save(tmp_path / "v2.zarr")
    assert not list((tmp_path / "v2.zarr").rglob("zarr.json"))
    assert_same(buf, ReplayBuffer.load(tmp_path / "v2.zarr"))


def test_load_subset_of_keys_and_errors(tmp_path):
    buf = tiny_buffer()
    path = buf.save(tmp_path / "s.zarr")
    sub = ReplayBuffer.load(path, keys=["action"])
    assert list(sub.data) == ["action"]
    with pytest.raises(KeyError, match="data/nope"):
        ReplayBuffer.load(path, keys=["nope"])
    with pytest.raises(FileNotFoundError):
        ReplayBuffer.load(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w", zarr_format=2)
    with pytest.raises(ValueError, match="not a replay buffer"):
        ReplayBuffer.load(tmp_path / "empty.zarr")


def test_bad_buffers_rejected():
    with pytest.raises(ValueError, match="strictly increasing"):
        ReplayBuffer({"a": np.zeros(5)}, np.array([3, 3, 5]))
    with pytest.raises(ValueError, match="rows"):
        ReplayBuffer({"a": np.zeros(4)}, np.array([2, 5]))


# ------------------------------------------------------------------ atomic writes
class _FailsOnRead:
    """Array-like whose values cannot be read: writing it raises midway through a save."""

    def __init__(self, n):
        self.shape, self.dtype = (n, 2), np.dtype(np.float32)

    def __len__(self):
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("simulated failure mid-write")

    def __getitem__(self, key):
        raise RuntimeError("simulated failure mid-write")


def _dirs(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_interrupted_write_leaves_no_partial_store(tmp_path):
    good = tiny_buffer()
    bad = ReplayBuffer({"state": good.data["state"], "zz_fails": _FailsOnRead(good.n_steps)},
                       good.episode_ends)
    with pytest.raises(RuntimeError, match="mid-write"):
        bad.save(tmp_path / "new.zarr")
    assert _dirs(tmp_path) == []  # neither the store nor its temporary directory


def test_interrupted_overwrite_keeps_existing_store(tmp_path):
    old = tiny_buffer(seed=1)
    path = old.save(tmp_path / "s.zarr")
    new = tiny_buffer(seed=2)
    bad = ReplayBuffer({"state": new.data["state"], "zz_fails": _FailsOnRead(new.n_steps)}, new.episode_ends)
    with pytest.raises(RuntimeError, match="mid-write"):
        bad.save(path)
    assert _dirs(tmp_path) == ["s.zarr"]
    assert_same(old, ReplayBuffer.load(path))
    # a successful overwrite replaces it completely and leaves nothing else behind
    new.save(path)
    assert _dirs(tmp_path) == ["s.zarr"]
    assert_same(new, ReplayBuffer.load(path))


# ------------------------------------------------------------------ episodes and windows
def test_episode_slicing():
    lengths = (5, 1, 7, 3)
    buf = tiny_buffer(lengths)
    assert buf.n_episodes == 4 and buf.n_steps == sum(lengths)
    start = 0
    for e, n in enumerate(lengths):
        ep = buf.episode(e)
        assert len(ep["action"]) == n
        np.testing.assert_array_equal(ep["action"], buf.data["action"][start:start + n])
        start += n
    np.testing.assert_array_equal(buf.episode(-1)["state"], buf.episode(3)["state"])
    with pytest.raises(IndexError):
        buf.episode(4)


def brute_force_windows(buf: ReplayBuffer, key: str, seq: int, pad_before: int, pad_after: int,
                        mask=None) -> list[np.ndarray]:
    """Every window Diffusion Policy samples, built directly: for each episode of length L and each start
    t in [-pad_before, L - seq + pad_after], frame j is the episode's row clip(t + j, 0, L - 1)."""
    out = []
    for e in range(buf.n_episodes):
        if mask is not None and not mask[e]:
            continue
        ep = buf.episode(e)[key]
        n = len(ep)
        for t in range(-pad_before, n - seq + pad_after + 1):
            out.append(ep[np.clip(np.arange(t, t + seq), 0, n - 1)])
    return out


@pytest.mark.parametrize("seq,pad_before,pad_after", [(4, 0, 0), (4, 1, 3), (16, 1, 7), (3, 2, 2), (1, 0, 0)])
def test_sequence_windows_match_brute_force(seq, pad_before, pad_after):
    buf = tiny_buffer((5, 1, 7, 3, 20))
    mask = np.array([True, True, False, True, True])
    for m in (None, mask):
        idx = sequence_indices(buf.episode_ends, seq, pad_before, pad_after, episode_mask=m)
        for key in ("keypoint", "action"):
            expected = brute_force_windows(buf, key, seq, pad_before, pad_after, m)
            got = [sample_sequence(buf.data[key], row, seq) for row in idx]
            assert len(got) == len(expected)
            for g, x in zip(got, expected, strict=True):
                assert g.shape == (seq,) + buf.data[key].shape[1:]
                np.testing.assert_array_equal(g, x)


def test_sequence_indices_rejects_bad_length():
    with pytest.raises(ValueError, match="sequence_length"):
        sequence_indices(np.array([3]), 0)


def test_validation_mask_rule():
    for n in (1, 2, 10, 206):
        m = validation_mask(n, 0.02, seed=42)
        assert m.sum() == (min(max(1, round(n * 0.02)), n - 1))
    np.testing.assert_array_equal(validation_mask(206), validation_mask(206))
    assert not validation_mask(206, 0.0).any()


# ------------------------------------------------------------------ the real store
def test_candidates_name_the_shared_store():
    assert any(str(p).endswith("shared/pusht/pusht_cchi_v7_replay.zarr") for p in pusht_zarr_candidates())


@pytest.mark.realdata
def test_real_pusht_store():
    path = find_pusht_zarr()
    if path is None:
        pytest.skip("Push-T demonstrations not found; looked for "
                    + ", ".join(str(p) for p in pusht_zarr_candidates()))
    buf = ReplayBuffer.load(path, keys=["state", "keypoint", "action", "n_contacts"])
    assert buf.n_episodes == 206 and buf.n_steps == 25650
    assert buf.data["keypoint"].shape == (25650, 9, 2) and buf.data["action"].shape == (25650, 2)
    obs = pusht_keypoint_obs(buf)
    assert obs.shape == (25650, 20)
    np.testing.assert_array_equal(obs[:, 18:], buf.data["state"][:, :2])
    idx = sequence_indices(buf.episode_ends, 16, 1, 7)
    # per episode of length L there are L - 16 + 1 + 7 + 1 windows
    assert len(idx) == int(np.sum(np.diff(np.r_[0, buf.episode_ends]) - 16 + 9))

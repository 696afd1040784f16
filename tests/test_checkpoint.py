import json

import pytest
import torch

from parapolicy.checkpoint import detect_format, load_checkpoint, load_policy_dir, save_policy_dir
from tests.conftest import tiny_policy_parts


def test_round_trip(tmp_path):
    cfg, model, norm = tiny_policy_parts()
    path = save_policy_dir(tmp_path / "p", cfg, model.state_dict(), norm.state_dict())
    assert detect_format(path) == "parapolicy"
    ck = load_checkpoint(path)
    assert ck.source == "parapolicy" and ck.config["horizon"] == cfg["horizon"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ck.model_state[k], v)
    assert set(ck.normalizer_state) == set(norm.state_dict())


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path):
    cfg, model, norm = tiny_policy_parts()
    save_policy_dir(tmp_path / "p", cfg, model.state_dict(), norm.state_dict())
    cfg2 = dict(cfg, note="second")
    save_policy_dir(tmp_path / "p", cfg2, model.state_dict(), norm.state_dict())
    assert json.loads((tmp_path / "p" / "config.json").read_text())["note"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_failed_write_keeps_the_old_checkpoint(tmp_path):
    cfg, model, norm = tiny_policy_parts()
    save_policy_dir(tmp_path / "p", cfg, model.state_dict(), norm.state_dict())
    bad = {"x": object()}  # not a tensor: the write fails half-way
    with pytest.raises(AttributeError):
        save_policy_dir(tmp_path / "p", cfg, bad, norm.state_dict())
    load_policy_dir(tmp_path / "p")  # still intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_truncated_weights_are_reported(tmp_path):
    cfg, model, norm = tiny_policy_parts()
    path = save_policy_dir(tmp_path / "p", cfg, model.state_dict(), norm.state_dict())
    w = path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_corrupt_config_and_unknown_paths(tmp_path):
    cfg, model, norm = tiny_policy_parts()
    path = save_policy_dir(tmp_path / "p", cfg, model.state_dict(), norm.state_dict())
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="built-in names"):
        load_checkpoint("no_such_policy_name")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without config.json"):
        load_checkpoint(tmp_path / "empty")


def test_missing_config_keys_are_named(tmp_path):
    cfg, model, norm = tiny_policy_parts()
    del cfg["horizon"]
    path = save_policy_dir(tmp_path / "p", cfg, model.state_dict(), norm.state_dict())
    with pytest.raises(ValueError, match="horizon"):
        load_checkpoint(path)

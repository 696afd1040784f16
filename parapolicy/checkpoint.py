"""parapolicy's own checkpoint format: a directory with `config.json` and `model.safetensors`.

    config.json         {"format": "parapolicy", "format_version": 1, "policy_type": ..., "model": {UNet kwargs},
                         "scheduler": {diffusers DDPMScheduler kwargs}, "horizon", "n_obs_steps",
                         "n_action_steps", "obs_key", "obs_dim", "action_dim", "num_inference_steps", ...}
    model.safetensors   "model.<UNet parameter>" and "normalizer.params_dict.<key>.<field>" tensors

Written to a temporary directory and renamed into place, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

FORMAT = "parapolicy"
FORMAT_VERSION = 1


def save_policy_dir(path: str | os.PathLike, config: dict, model_state: dict, normalizer_state: dict) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    tensors.update({f"normalizer.{k}": v.detach().cpu().contiguous() for k, v in normalizer_state.items()})
    cfg = dict(config, format=FORMAT, format_version=FORMAT_VERSION)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        if path.exists():
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_policy_dir(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """-> (config, model_state, normalizer_state). Raises ValueError naming what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, w_path = path / "config.json", path / "model.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise FileNotFoundError(f"{path} is not a parapolicy checkpoint: needs config.json and model.safetensors")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e}); the checkpoint is corrupt") from e
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_path} has format {cfg.get('format')!r}, expected {FORMAT!r}")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer parapolicy (format_version {cfg['format_version']})")
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{w_path} cannot be read ({e}); the file is truncated or corrupt") from e
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    norm = {k[len("normalizer."):]: v for k, v in tensors.items() if k.startswith("normalizer.")}
    if not model:
        raise ValueError(f"{w_path} holds no 'model.*' tensors")
    return cfg, model, norm

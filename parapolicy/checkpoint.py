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
from dataclasses import dataclass
from pathlib import Path

import torch

from parapolicy.atomic import atomic_dir

FORMAT = "parapolicy"
FORMAT_VERSION = 1


def save_policy_dir(path: str | os.PathLike, config: dict, model_state: dict, normalizer_state: dict,
                    encoder_state: dict | None = None) -> Path:
    """encoder_state: image policies' `LoadedCheckpoint.encoder_state`, stored as "encoder.<name>"."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    tensors.update({f"normalizer.{k}": v.detach().cpu().contiguous() for k, v in normalizer_state.items()})
    # cloned: robomimic's VisualCore registers the same modules twice (backbone.* and nets.0.*), and
    # safetensors refuses tensors that share memory
    tensors.update({f"encoder.{k}": v.detach().cpu().clone().contiguous() for k, v in (encoder_state or {}).items()})
    cfg = dict(config, format=FORMAT, format_version=FORMAT_VERSION)
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
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


@dataclass
class LoadedCheckpoint:
    """What every loader returns; `parapolicy.policy.DiffusionPolicy.from_checkpoint` builds a policy from it.

    config: our config schema (see the module docstring), including
        obs_keys [str], obs_dims {key: int}, action_dim, horizon, n_obs_steps, n_action_steps,
        action_start (first executed index of the predicted horizon; Diffusion Policy: n_obs_steps - 1),
        obs_as_global_cond (False: the UNet's input is [action, obs] and observations are inpainted),
        model (ConditionalUnet1D kwargs), scheduler (diffusers DDPMScheduler kwargs), num_inference_steps.
    model_state: ConditionalUnet1D state_dict (our parameter names).
    normalizer_state: LinearNormalizer state_dict with one entry per obs key and "action".
    source: "parapolicy", "diffusion_policy_ckpt" or "lerobot", and `path` it came from.
    encoder_state: image policies only (config["vision"], see parapolicy.image_cond): the camera encoders'
        tensors `encoders.<i>.*` and the image normalisation `norm_scale_<i>`, `norm_offset_<i>`.
    """

    config: dict
    model_state: dict[str, torch.Tensor]
    normalizer_state: dict[str, torch.Tensor]
    source: str
    path: str = ""
    encoder_state: dict[str, torch.Tensor] | None = None


BUILTIN_DIR = Path(__file__).resolve().parent / "checkpoints"


def builtin_names() -> list[str]:
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "config.json").exists()) \
        if BUILTIN_DIR.exists() else []


def detect_format(path: str | os.PathLike) -> str:
    """"parapolicy", "lerobot" or "diffusion_policy_ckpt" for an existing path; ValueError otherwise."""
    p = Path(path)
    if p.is_dir():
        cfg_path = p / "config.json"
        if not cfg_path.exists():
            raise ValueError(f"{p} is a directory without config.json: not a parapolicy or LeRobot checkpoint")
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path} is not valid JSON ({e})") from e
        if cfg.get("format") == FORMAT:
            return "parapolicy"
        if "type" in cfg or "input_features" in cfg or "input_shapes" in cfg:
            return "lerobot"
        raise ValueError(f"{cfg_path} is neither a parapolicy config (format='parapolicy') nor a LeRobot "
                         "policy config (with 'type' and 'input_features')")
    if p.is_file():
        return "diffusion_policy_ckpt"
    raise FileNotFoundError(f"no checkpoint at {p}")


def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Load any supported checkpoint: a built-in name (see `builtin_names()`), our directory, a LeRobot
    pretrained directory, or a real-stanford diffusion_policy `.ckpt` file."""
    p = Path(path)
    if not p.exists() and isinstance(path, str) and (BUILTIN_DIR / path / "config.json").exists():
        p = BUILTIN_DIR / path
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {path!s} (built-in names: {builtin_names()})")
    fmt = detect_format(p)
    if fmt == "parapolicy":
        cfg, model, norm = load_policy_dir(p)
        enc = None
        if cfg.get("vision"):
            from safetensors.torch import load_file

            enc = {k[len("encoder."):]: v for k, v in load_file(str(p / "model.safetensors")).items()
                   if k.startswith("encoder.")}
        return LoadedCheckpoint(complete_config(cfg), model, norm, "parapolicy", str(p), encoder_state=enc)
    if fmt == "lerobot":
        from parapolicy.adapters.lerobot import load_lerobot_dir
        return load_lerobot_dir(p)
    from parapolicy.adapters.diffusion_policy import load_dp_ckpt
    return load_dp_ckpt(p)


REQUIRED_KEYS = ("action_dim", "horizon", "n_obs_steps", "n_action_steps", "model", "scheduler")


def complete_config(cfg: dict) -> dict:
    """Fill defaults of the config schema (obs_keys/obs_dims from a single obs_key/obs_dim, action_start =
    n_obs_steps - 1, obs_as_global_cond True) and check the required keys, naming any that is missing."""
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"checkpoint config lacks {missing}")
    cfg = dict(cfg)
    if "obs_keys" not in cfg:
        key = cfg.get("obs_key", "obs")
        cfg["obs_keys"] = [key]
        cfg["obs_dims"] = {key: cfg["obs_dim"]}
    cfg.setdefault("action_start", cfg["n_obs_steps"] - 1)
    cfg.setdefault("obs_as_global_cond", True)
    cfg.setdefault("num_inference_steps", cfg["scheduler"].get("num_train_timesteps", 100))
    if cfg["action_start"] + cfg["n_action_steps"] > cfg["horizon"]:
        raise ValueError(f"action_start {cfg['action_start']} + n_action_steps {cfg['n_action_steps']} exceeds "
                         f"horizon {cfg['horizon']}")
    return cfg

"""parapolicy's own checkpoint format: a directory with `config.json` and `model.safetensors`.

    config.json         {"format": "parapolicy", "format_version": 1, "policy_type": ..., "model": {UNet kwargs},
                         "scheduler": {diffusers DDPMScheduler kwargs}, "horizon", "n_obs_steps",
                         "n_action_steps", "obs_key", "obs_dim", "action_dim", "num_inference_steps", ...}
    model.safetensors   "model.<UNet parameter>" and "normalizer.params_dict.<key>.<field>" tensors

Written to a temporary directory and renamed into place, so a reader never sees half a checkpoint.
`load_checkpoint` dispatches on the format to the loaders in `parapolicy.adapters`; the type they all return
(`LoadedCheckpoint`) and the config completion they share live in the leaf module `checkpoint_schema`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from parapolicy.atomic import atomic_dir
from parapolicy.checkpoint_schema import REQUIRED_KEYS, LoadedCheckpoint, complete_config  # noqa: F401  (re-exported)

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

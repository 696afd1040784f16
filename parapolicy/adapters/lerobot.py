"""Load a LeRobot pretrained `DiffusionPolicy` directory (state-based, UNet) without lerobot installed.

A directory saved by `policy.save_pretrained` holds `config.json` and `model.safetensors`. Two config layouts
are read (the UNet and its parameter names are the same in both):

    legacy (lerobot <= 0.1, mid-2024; e.g. lerobot/diffusion_pusht_keypoints as first uploaded):
        input_shapes {key: shape}, output_shapes, input_normalization_modes {key: "min_max"|"mean_std"},
        output_normalization_modes; no "type" key.
    draccus (lerobot >= 0.2): "type": "diffusion", input_features {key: {"type": "STATE"|"ENV"|"VISUAL",
        "shape"}}, output_features, normalization_mapping {feature type: "MIN_MAX"|"MEAN_STD"|"IDENTITY"}.
        A feature type missing from the mapping is left unnormalised (IDENTITY): with the default mapping
        {VISUAL: MEAN_STD, STATE: MIN_MAX, ACTION: MIN_MAX} the ENV keypoints enter the UNet raw.

Normalisation statistics, wherever they are:

    buffers in model.safetensors (lerobot < 0.4): normalize_inputs.buffer_<key, . -> _>.{min,max,mean,std},
        unnormalize_outputs.buffer_action.* (normalize_targets.buffer_action.* as fallback);
        LeRobot's Normalize: min_max (x - min) / (max - min + 1e-8) * 2 - 1, mean_std (x - mean)/(std + 1e-8);
        Unnormalize: (y + 1) / 2 * (max - min) + min, y * std + mean.
    processor files (lerobot >= 0.4): policy_preprocessor.json / policy_postprocessor.json with a
        "normalizer_processor" / "unnormalizer_processor" step, its `norm_map` and `eps`, and a `state_file`
        (flat "<key>.<stat>" safetensors); min_max there divides by max - min, by eps only where that is 0.

Each becomes our affine `x * scale + offset` (min_max: scale = 2 / range, offset = -1 - min * scale;
mean_std: scale = 1 / std, offset = -mean / std, with LeRobot's eps placement; identity: 1, 0). An input
dimension with zero range (or std) is mapped by scale 1 so that its constant value lands where LeRobot puts it
(-1, or 0) without float32 cancellation; LeRobot itself multiplies any deviation from it by ~1e8.

UNet names (LeRobot `DiffusionConditionalUnet1d` under `diffusion.unet.` -> our ConditionalUnet1D):

    *.conv1.block.*  -> *.blocks.0.block.*        *.conv2.block.* -> *.blocks.1.block.*
    down_modules.i.2.{weight,bias} (plain Conv1d) -> down_modules.i.2.conv.{weight,bias}
    up_modules.i.2.{weight,bias} (ConvTranspose1d) -> up_modules.i.2.conv.{weight,bias}
    cond_encoder.1.*, residual_conv.*, diffusion_step_encoder.{1,3}.*, final_conv.* -> unchanged

FiLM: both split the cond encoder output as [scale (C), bias (C)]. Conditioning: LeRobot builds
cond = cat([state, (image features), env_state], -1).flatten(1) over n_obs_steps, so obs_keys =
["observation.state", "observation.environment_state"] and the policy builds
cond = cat([normalised obs[k] for k in obs_keys], -1).flatten(1). Executed actions start at n_obs_steps - 1.

Image features (VISUAL, `observation.image` / `observation.images.<cam>`): the rgb encoder (shared:
`diffusion.rgb_encoder.*`; use_separate_rgb_encoder_per_camera: `diffusion.rgb_encoder.<i>.*`) goes to
LoadedCheckpoint.encoder_state, config["vision"] describes it (parapolicy.image_cond; resize_shape, crop_shape
centre-cropped at eval, spatial_softmax_num_keypoints, use_group_norm False = BatchNorm with running stats);
images are normalised per channel by their mode (default mapping VISUAL: MEAN_STD) before resize and crop.
Per step cond = [state, camera features in input order, env state], as `_prepare_global_conditioning`.

Refused with a message: policy types other than "diffusion" (act, vqbet, tdmpc, pi0, ...), vision backbones
other than resnet18, cameras of different shapes, weights without a `diffusion.unet.` UNet.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from parapolicy.adapters._unet_shapes import check_loads, unet_kwargs_from_state
from parapolicy.checkpoint_schema import LoadedCheckpoint, complete_config

STATE, ENV, ACTION = "observation.state", "observation.environment_state", "action"
EPS = 1e-8
UNET_PREFIX = "diffusion.unet."


def normalizer_key(key: str) -> str:
    """Our LinearNormalizer key for a LeRobot feature key (ParameterDict keys cannot hold '.')."""
    return key.replace(".", "_")


def lerobot_to_ours(name: str) -> str:
    """One LeRobot UNet parameter name (without `diffusion.unet.`) -> ours."""
    name = re.sub(r"\.conv1\.block\.", ".blocks.0.block.", name)
    name = re.sub(r"\.conv2\.block\.", ".blocks.1.block.", name)
    return re.sub(r"^(down_modules|up_modules)\.(\d+)\.2\.(weight|bias)$", r"\1.\2.2.conv.\3", name)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is truncated or corrupt") from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} cannot be read ({e}); the file is truncated or corrupt") from e


def _feature_type(key: str) -> str:
    if key == STATE:
        return "STATE"
    if key.startswith("observation.image"):
        return "VISUAL"
    if key == ENV:
        return "ENV"
    if key == ACTION:
        return "ACTION"
    return "STATE"


def _parse_features(cfg: dict, where: str) -> tuple[dict, dict, str]:
    """-> ({key: (type, shape)} inputs, outputs, layout "draccus" | "legacy")."""
    if "input_features" in cfg:
        try:
            ins = {k: (str(v["type"]).upper(), list(v["shape"])) for k, v in cfg["input_features"].items()}
            outs = {
                k: (str(v["type"]).upper(), list(v["shape"]))
                for k, v in cfg.get("output_features", {}).items()
            }
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{where}: input_features/output_features malformed ({e})") from e
        return ins, outs, "draccus"
    if "input_shapes" in cfg:
        ins = {k: (_feature_type(k), list(v)) for k, v in cfg["input_shapes"].items()}
        outs = {k: (_feature_type(k), list(v)) for k, v in cfg.get("output_shapes", {}).items()}
        return ins, outs, "legacy"
    raise ValueError(
        f"{where}: config.json has neither input_features (lerobot >= 0.2) nor input_shapes "
        "(legacy); not a LeRobot policy config"
    )


def _modes(cfg: dict, ins: dict, outs: dict, layout: str, processor_map: dict | None) -> dict[str, str]:
    """Normalisation mode per key: "MIN_MAX" | "MEAN_STD" | "IDENTITY"."""
    if layout == "legacy":
        per_key = {**cfg.get("input_normalization_modes", {}), **cfg.get("output_normalization_modes", {})}
        return {k: str(per_key.get(k, "identity")).upper() for k in [*ins, *outs]}
    mapping = processor_map if processor_map is not None else cfg.get("normalization_mapping", {})
    mapping = {str(t).upper(): str(m).upper() for t, m in mapping.items()}
    return {k: mapping.get(t, "IDENTITY") for k, (t, _) in {**ins, **outs}.items()}


def _processor_stats(path: Path, registry_name: str) -> tuple[dict, dict | None, float] | None:
    """Stats {key: {stat: tensor}}, norm_map and eps of the (un)normaliser step of a lerobot >= 0.4 processor
    pipeline saved beside the policy; None when there is no such file."""
    fname = (
        "policy_preprocessor.json" if registry_name == "normalizer_processor" else "policy_postprocessor.json"
    )
    cfg_path = path / fname
    if not cfg_path.exists():
        return None
    for step in _read_json(cfg_path).get("steps", []):
        if step.get("registry_name") != registry_name:
            continue
        conf = step.get("config", {})
        if "state_file" not in step:
            raise ValueError(f"{cfg_path}: step {registry_name} has no state_file (no statistics saved)")
        flat = _read_safetensors(path / step["state_file"])
        stats: dict[str, dict] = {}
        for name, tensor in flat.items():
            key, _, stat = name.rpartition(".")
            stats.setdefault(key, {})[stat] = tensor.to(torch.float32)
        return stats, conf.get("norm_map"), float(conf.get("eps", EPS))
    return None


def _buffer_stats(tensors: dict[str, torch.Tensor], key: str, output: bool) -> dict[str, torch.Tensor]:
    bufname = "buffer_" + key.replace(".", "_")
    heads = ["unnormalize_outputs.", "normalize_targets."] if output else ["normalize_inputs."]
    for head in heads:
        prefix = f"{head}{bufname}."
        found = {n[len(prefix) :]: v.to(torch.float32) for n, v in tensors.items() if n.startswith(prefix)}
        if found:
            return found
    return {}


def affine_from_stats(
    stats: dict, mode: str, dim: int, *, output: bool, legacy: bool, eps: float = EPS, where: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset) with x * scale + offset == LeRobot's normalisation of an input (output=False), and
    (y - offset) / scale == its unnormalisation of an output (output=True)."""

    def need(*names):
        missing = [n for n in names if n not in stats]
        if missing:
            raise ValueError(f"{where}: {mode} normalisation needs stats {missing}, found {sorted(stats)}")
        vals = [stats[n].reshape(-1).to(torch.float32) for n in names]
        for n, v in zip(names, vals, strict=True):
            if v.numel() != dim:
                raise ValueError(f"{where}: stat '{n}' has {v.numel()} values, the feature has {dim}")
            if not torch.isfinite(v).all():
                raise ValueError(f"{where}: stat '{n}' is not finite (a policy saved without dataset stats)")
        return vals

    if mode == "IDENTITY":
        return torch.ones(dim), torch.zeros(dim)
    if mode == "MIN_MAX":
        lo, hi = need("min", "max")
        rng = hi - lo
        flat = rng == 0
        if legacy and not output:
            rng = rng + eps  # (x - min) / (max - min + eps)
        else:
            rng = torch.where(flat, torch.full_like(rng, eps), rng)
        scale = 2.0 / rng  # y = 2 (x - min) / range - 1
        scale, offset = scale, -1.0 - lo * scale
        if not output:  # constant input dim: its value -> -1 as in LeRobot, without float32 cancellation
            scale, offset = torch.where(flat, 1.0, scale), torch.where(flat, -1.0 - lo, offset)
        return scale, offset
    if mode == "MEAN_STD":
        mean, std = need("mean", "std")
        flat = std == 0
        std = std + eps if not output else torch.where(flat, torch.full_like(std, eps), std)
        scale, offset = 1.0 / std, -mean / std  # y = (x - mean) / std
        if not output:
            scale, offset = torch.where(flat, 1.0, scale), torch.where(flat, -mean, offset)
        return scale, offset
    raise ValueError(f"{where}: normalisation mode {mode!r} is not supported (MIN_MAX, MEAN_STD, IDENTITY)")


def load_lerobot_dir(path: str | os.PathLike) -> LoadedCheckpoint:
    """Load a LeRobot DiffusionPolicy directory -> LoadedCheckpoint (source "lerobot"). ValueError naming
    the file and the problem for unsupported policies, missing tensors/stats or corrupt files."""
    from parapolicy.normalizer import LinearNormalizer

    path = Path(path)
    cfg_path, w_path = path / "config.json", path / "model.safetensors"
    for p in (cfg_path, w_path):
        if not p.exists():
            raise FileNotFoundError(f"{path} is not a LeRobot pretrained directory: {p.name} is missing")
    cfg = _read_json(cfg_path)
    where = str(cfg_path)

    # 1. Policy type and features.
    ptype = cfg.get("type")
    if ptype is None and "input_shapes" in cfg:
        ptype = (
            "diffusion"
            if "down_dims" in cfg and "num_train_timesteps" in cfg
            else "act"
            if "chunk_size" in cfg
            else "unknown"
        )
    if ptype != "diffusion":
        raise ValueError(
            f"{where}: LeRobot policy type {ptype!r} is not supported; parapolicy loads "
            "'diffusion' (DiffusionPolicy with a UNet) only"
        )
    ins, outs, layout = _parse_features(cfg, where)
    images = [k for k, (t, _) in ins.items() if t == "VISUAL"]
    vision = _vision_config(cfg, {k: ins[k][1] for k in images}, where) if images else None
    if STATE not in ins:
        raise ValueError(f"{where}: input features lack {STATE!r} (have {sorted(ins)})")
    if ACTION not in outs:
        raise ValueError(f"{where}: output features lack 'action' (have {sorted(outs)})")
    env_keys = [k for k, (t, _) in ins.items() if t == "ENV"]
    obs_keys = [STATE] + images + env_keys[:1]  # LeRobot's order: state, images, env state
    dims = {k: 2 * int(vision["num_kp"]) if k in images else int(torch.tensor(ins[k][1]).prod())
            for k in obs_keys}
    if vision:
        vision["cond_order"] = list(obs_keys)
    action_dim = int(torch.tensor(outs[ACTION][1]).prod())

    # 2. Weights.
    tensors = _read_safetensors(w_path)
    encoder_state = _encoder_state(tensors, vision, w_path) if vision else None
    unet = {
        lerobot_to_ours(k[len(UNET_PREFIX) :]): v.contiguous()
        for k, v in tensors.items()
        if k.startswith(UNET_PREFIX)
    }
    if not unet:
        heads = sorted({k.split(".")[0] + "." + k.split(".")[1] for k in tensors if "." in k})[:8]
        raise ValueError(f"{w_path}: no '{UNET_PREFIX}*' tensors (found {heads}); not a UNet DiffusionPolicy")
    n_obs_steps, horizon = int(cfg.get("n_obs_steps", 2)), int(cfg.get("horizon", 16))
    n_action_steps = int(cfg.get("n_action_steps", 8))
    kwargs = {
        "input_dim": action_dim,
        "local_cond_dim": None,
        "global_cond_dim": sum(dims.values()) * n_obs_steps,
        "diffusion_step_embed_dim": int(cfg.get("diffusion_step_embed_dim", 128)),
        "down_dims": [int(d) for d in cfg.get("down_dims", (512, 1024, 2048))],
        "kernel_size": int(cfg.get("kernel_size", 5)),
        "n_groups": int(cfg.get("n_groups", 8)),
        "cond_predict_scale": bool(cfg.get("use_film_scale_modulation", True)),
    }
    from_weights = unet_kwargs_from_state(unet, n_groups=kwargs["n_groups"], where=f"{w_path}: ")
    if from_weights != kwargs:
        diff = {k: (kwargs[k], from_weights[k]) for k in kwargs if kwargs[k] != from_weights[k]}
        raise ValueError(
            f"{path}: config.json and model.safetensors disagree on the UNet (config, weights): {diff}"
        )
    check_loads(kwargs, unet, where=f"{w_path}: ")
    factor = 2 ** (len(kwargs["down_dims"]) - 1)
    if horizon % factor:
        raise ValueError(f"{where}: horizon {horizon} is not divisible by {factor}")

    # 3. Normalisation: buffers in the weights (lerobot < 0.4) or processor files (>= 0.4).
    pre = _processor_stats(path, "normalizer_processor")
    post = _processor_stats(path, "unnormalizer_processor")
    has_buffers = any(k.startswith(("normalize_inputs.", "unnormalize_outputs.")) for k in tensors)
    processor_map = (pre or post)[1] if (pre or post) and not has_buffers else None
    modes = _modes(cfg, ins, outs, layout, processor_map)
    norm = LinearNormalizer()
    norm_keys = {}
    for key in [*obs_keys, ACTION]:
        output = key == ACTION
        dim = action_dim if output else dims[key]
        if has_buffers:
            stats, eps, legacy = _buffer_stats(tensors, key, output), EPS, True
            src = f"{w_path} (normalize_inputs/unnormalize_outputs buffers)"
        else:
            step = (post or pre) if output else pre
            if step is None and modes[key] != "IDENTITY":
                raise ValueError(
                    f"{path}: no normalisation statistics for {key!r}: neither normalize_inputs/"
                    "unnormalize_outputs buffers in model.safetensors nor policy_preprocessor.json/"
                    "policy_postprocessor.json"
                )
            stats, eps, legacy = (step[0].get(key, {}) if step else {}), (step[2] if step else EPS), False
            src = f"{path} (processor stats)"
        if key in images:  # per channel, into the image conditioner (LeRobot stats are (C, 1, 1))
            i, c = images.index(key), int(ins[key][1][0])
            scale, offset = affine_from_stats(
                stats, modes[key], c, output=False, legacy=legacy, eps=eps, where=f"{src} {key!r}"
            )
            encoder_state[f"norm_scale_{i}"], encoder_state[f"norm_offset_{i}"] = scale, offset
            continue
        scale, offset = affine_from_stats(
            stats, modes[key], dim, output=output, legacy=legacy, eps=eps, where=f"{src} {key!r}"
        )
        norm_keys[key] = normalizer_key(key)
        input_stats = {
            s: stats[s].reshape(-1)
            for s in ("min", "max", "mean", "std")
            if s in stats and stats[s].numel() == dim
        }
        norm.set_params(norm_keys[key], scale, offset, input_stats)
    normalizer_state = {k: v.detach().clone() for k, v in norm.state_dict().items()}

    # 4. Scheduler: LeRobot builds diffusers' DDPMScheduler or DDIMScheduler from these (fixed_small).
    sched_type = str(cfg.get("noise_scheduler_type", "DDPM")).upper()
    if sched_type not in ("DDPM", "DDIM"):
        raise ValueError(f"{where}: noise_scheduler_type {sched_type!r} is not supported (DDPM, DDIM)")
    sched = {
        "num_train_timesteps": int(cfg.get("num_train_timesteps", 100)),
        "beta_start": float(cfg.get("beta_start", 1e-4)),
        "beta_end": float(cfg.get("beta_end", 0.02)),
        "beta_schedule": cfg.get("beta_schedule", "squaredcos_cap_v2"),
        "variance_type": "fixed_small",
        "clip_sample": bool(cfg.get("clip_sample", True)),
        "clip_sample_range": float(cfg.get("clip_sample_range", 1.0)),
        "prediction_type": cfg.get("prediction_type", "epsilon"),
    }
    num_inference_steps = cfg.get("num_inference_steps") or sched["num_train_timesteps"]
    config = {
        "policy_type": "lerobot_diffusion",
        "lerobot_layout": layout,
        "lerobot_normalization": "buffers" if has_buffers else "processor",
        "obs_keys": obs_keys,
        "obs_dims": dims,
        "normalizer_keys": norm_keys,
        "normalization_modes": {k: modes[k] for k in [*obs_keys, ACTION]},
        "action_key": ACTION,
        "action_dim": action_dim,
        "horizon": horizon,
        "n_obs_steps": n_obs_steps,
        "n_action_steps": n_action_steps,
        "action_start": n_obs_steps - 1,
        "obs_as_global_cond": True,
        "model": kwargs,
        "scheduler": sched,
        "num_inference_steps": int(num_inference_steps),
        "default_sampler": sched_type.lower(),
    }
    if vision:
        config["vision"] = vision
    return LoadedCheckpoint(complete_config(config), unet, normalizer_state, "lerobot", str(path),
                            encoder_state=encoder_state)


ENCODER_PREFIX = "diffusion.rgb_encoder."


def _vision_config(cfg: dict, shapes: dict, where: str) -> dict:
    """config["vision"] (parapolicy.image_cond) of a LeRobot image policy; ValueError for what is not
    reproduced."""
    backbone = cfg.get("vision_backbone", "resnet18")
    if backbone != "resnet18":
        raise ValueError(f"{where}: vision_backbone {backbone!r} is not supported (resnet18 only)")
    if len({tuple(v) for v in shapes.values()}) != 1:
        raise ValueError(f"{where}: cameras have different shapes {shapes}; LeRobot requires one shape")
    c = int(next(iter(shapes.values()))[0])
    if c != 3:
        raise ValueError(f"{where}: image features must have 3 channels (C, H, W), got {shapes}")
    crop, resize = cfg.get("crop_shape"), cfg.get("resize_shape")
    return {
        "style": "lerobot",
        "encoder": "lerobot",
        "image_keys": list(shapes),
        "image_shapes": {k: [int(s) for s in v] for k, v in shapes.items()},
        "shared": not bool(cfg.get("use_separate_rgb_encoder_per_camera", False)),
        "resize": None if resize is None else [int(s) for s in resize],
        "crop": None if crop is None else [int(s) for s in crop],
        "imagenet_norm": False,
        "num_kp": int(cfg.get("spatial_softmax_num_keypoints", 32)),
        "width": 64,
        "blocks": [2, 2, 2, 2],
        "norm": "group" if cfg.get("use_group_norm", True) else "batch",
        "cond_order": [STATE, *shapes],  # env state appended by load_lerobot_dir when present
    }


def _encoder_state(tensors: dict, vision: dict, w_path) -> dict:
    """`diffusion.rgb_encoder.*` (shared) or `diffusion.rgb_encoder.<i>.*` (one per camera) -> encoders.<i>.*"""
    sub = {k[len(ENCODER_PREFIX):]: v.contiguous() for k, v in tensors.items() if k.startswith(ENCODER_PREFIX)}
    if not sub:
        raise ValueError(f"{w_path}: no '{ENCODER_PREFIX}*' tensors for the image features "
                         f"{vision['image_keys']}")
    if vision["shared"]:
        if "backbone.0.weight" not in sub:
            raise ValueError(f"{w_path}: no {ENCODER_PREFIX}backbone.0.weight (shared encoder); set "
                             "use_separate_rgb_encoder_per_camera if the weights hold one encoder per camera")
        return {f"encoders.0.{k}": v for k, v in sub.items()}
    n = len(vision["image_keys"])
    for i in range(n):
        if f"{i}.backbone.0.weight" not in sub:
            raise ValueError(f"{w_path}: no {ENCODER_PREFIX}{i}.backbone.0.weight for camera "
                             f"{vision['image_keys'][i]!r} (one encoder per camera)")
    return {f"encoders.{k}": v for k, v in sub.items()}

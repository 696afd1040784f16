"""real-stanford/diffusion_policy image policies: `DiffusionUnetImagePolicy` (MultiImageObsEncoder) and
`DiffusionUnetHybridImagePolicy` (robomimic's VisualCore), read from the payload `load_dp_ckpt` unpickled.

Policy state dict (`ema_model` when present, else `model`):

    model.<ConditionalUnet1D parameter>                                    -> model_state
    normalizer.params_dict.<obs key | action>.<field>                     -> normaliser (low-dim, action)
        image keys: scale/offset of one value (DP's get_image_range_normalizer: [0, 1] -> [-1, 1])
                                                                           -> encoder_state norm_*_<i>
    image policy:  obs_encoder.key_model_map.<rgb key>.<resnet18 param>   -> encoders.<i>.*  (share_rgb_model:
                   obs_encoder.key_model_map.rgb.*  -> encoders.0.*)
    hybrid policy: obs_encoder.obs_nets.<rgb key>.{backbone,pool,nets}.*  -> encoders.<i>.*

Conditioning per step (then steps flattened, global cond): image policy = features of the rgb keys sorted by
name, then the low-dim keys sorted by name (MultiImageObsEncoder sorts both); hybrid = every obs key in
shape_meta order (robomimic's ObservationEncoder keeps the order it was given). Preprocessing at eval:
normaliser, then image policy: resize (obs_encoder.resize_shape), crop (centre crop at eval: DP's
CropRandomizer in eval mode, or CenterCrop with random_crop=False), ImageNet normalisation (imagenet_norm);
hybrid: centre crop policy.crop_shape (eval_fixed_crop=True), VisualCore, ReLU. Executed actions start at
n_obs_steps - 1 (+ n_latency_steps).

Refused with a message: obs_as_global_cond=False, BatchNorm encoders (use_group_norm / obs_encoder_group_norm
False), a backbone other than get_resnet("resnet18"), eval_fixed_crop=False (robomimic's randomiser crops at
random at eval), per-key dict resize/crop shapes that differ, image normalisers with per-channel scales,
extra policy kwargs.
"""

from __future__ import annotations

import torch

from parapolicy.adapters._unet_shapes import check_loads, unet_kwargs_from_state
from parapolicy.checkpoint_schema import LoadedCheckpoint, complete_config

IMAGE_POLICY, HYBRID_POLICY = "DiffusionUnetImagePolicy", "DiffusionUnetHybridImagePolicy"
_COMMON = {"_target_", "shape_meta", "noise_scheduler", "horizon", "n_action_steps", "n_obs_steps",
           "num_inference_steps", "obs_as_global_cond", "diffusion_step_embed_dim", "down_dims", "kernel_size",
           "n_groups", "cond_predict_scale"}
_KEYS = {IMAGE_POLICY: _COMMON | {"obs_encoder"},
         HYBRID_POLICY: _COMMON | {"crop_shape", "obs_encoder_group_norm", "eval_fixed_crop"}}


def _one_shape(value, keys, name, where):
    """A (h, w) or None from a DP shape option that may be a per-key dict."""
    if value is None:
        return None
    if isinstance(value, dict):
        shapes = {tuple(value[k]) for k in keys}
        if len(shapes) != 1:
            raise ValueError(f"{where}: per-camera {name} {value} differ; only one shape for all cameras is "
                             "supported")
        value = shapes.pop()
    return [int(v) for v in value]


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v.detach().contiguous() for k, v in state.items() if k.startswith(prefix)}


def load_dp_image(cfg: dict, sds: dict, where: str, path: str, get) -> LoadedCheckpoint:
    """cfg: plain dict of the workspace cfg; sds: state_dicts; get(dotted, default) reads cfg (resolved)."""
    target = str(get("policy._target_", ""))
    cls = target.rsplit(".", 1)[-1]
    policy = get("policy", {})
    extra = sorted(set(policy) - _KEYS[cls])
    if extra:
        raise ValueError(f"{where}: {cls} kwargs {extra} are not supported (diffusion_policy passes unknown "
                         "kwargs to scheduler.step, which parapolicy's samplers do not reproduce)")
    if not get("policy.obs_as_global_cond", True):
        raise ValueError(f"{where}: obs_as_global_cond=False (image features inpainted into the trajectory) is "
                         "not supported for image policies")
    sched_target = str(get("policy.noise_scheduler._target_", ""))
    if sched_target.rsplit(".", 1)[-1] != "DDPMScheduler":
        raise ValueError(f"{where}: noise scheduler {sched_target!r} is not supported (DDPMScheduler only)")
    shape_meta = get("policy.shape_meta", None) or get("shape_meta", None)
    if not isinstance(shape_meta, dict) or "obs" not in shape_meta:
        raise ValueError(f"{where}: cfg lacks policy.shape_meta.obs")
    obs_meta = {k: (str(a.get("type", "low_dim")), [int(s) for s in a["shape"]])
                for k, a in shape_meta["obs"].items()}
    bad = {k: t for k, (t, _) in obs_meta.items() if t not in ("rgb", "low_dim")}
    if bad:
        raise ValueError(f"{where}: obs types {bad} are not supported (rgb, low_dim)")
    rgb = [k for k, (t, _) in obs_meta.items() if t == "rgb"]
    low = [k for k, (t, _) in obs_meta.items() if t == "low_dim"]
    if not rgb:
        raise ValueError(f"{where}: {cls} without rgb observations in shape_meta")

    which = "ema_model" if sds.get("ema_model") else "model"
    state = sds[which]
    unet = _sub(state, "model.")
    norm_flat = _sub(state, "normalizer.")
    if not norm_flat and which == "ema_model" and sds.get("model"):
        norm_flat = _sub(sds["model"], "normalizer.")
    if not unet:
        raise ValueError(f"{where}: state_dicts.{which} has no 'model.*' (UNet) tensors")

    if cls == IMAGE_POLICY:
        enc = get("policy.obs_encoder", {})
        if str(enc.get("_target_", "")).rsplit(".", 1)[-1] != "MultiImageObsEncoder":
            raise ValueError(f"{where}: obs_encoder {enc.get('_target_')!r} is not supported "
                             "(MultiImageObsEncoder only)")
        rgb_model = get("policy.obs_encoder.rgb_model", {})
        if (str(rgb_model.get("_target_", "")).rsplit(".", 1)[-1] != "get_resnet"
                or rgb_model.get("name") != "resnet18"):
            raise ValueError(f"{where}: rgb_model {rgb_model} is not supported (get_resnet name=resnet18 only)")
        if not get("policy.obs_encoder.use_group_norm", False):
            raise ValueError(f"{where}: obs_encoder.use_group_norm=False (BatchNorm resnet) is not supported")
        shared = bool(get("policy.obs_encoder.share_rgb_model", False))
        image_keys, cond_order = sorted(rgb), sorted(rgb) + sorted(low)
        resize = _one_shape(get("policy.obs_encoder.resize_shape", None), rgb, "resize_shape", where)
        crop = _one_shape(get("policy.obs_encoder.crop_shape", None), rgb, "crop_shape", where)
        imagenet = bool(get("policy.obs_encoder.imagenet_norm", False))
        center = "round"  # CropRandomizer at eval and CenterCrop both call torchvision's center_crop
        prefixes = (["obs_encoder.key_model_map.rgb."] if shared
                    else [f"obs_encoder.key_model_map.{k}." for k in image_keys])
        vision = {"encoder": "dp_resnet", "style": "dp"}
    else:
        if not get("policy.obs_encoder_group_norm", False):
            raise ValueError(f"{where}: obs_encoder_group_norm=False (BatchNorm robomimic encoder) is not "
                             "supported")
        if not get("policy.eval_fixed_crop", False):
            raise ValueError(f"{where}: eval_fixed_crop=False is not supported (robomimic's CropRandomizer "
                             "crops at random at eval; only DP's fixed centre crop is reproduced)")
        shared, image_keys, cond_order = False, rgb, list(obs_meta)
        resize, imagenet = None, False
        crop = _one_shape(get("policy.crop_shape", None), rgb, "crop_shape", where)
        prefixes = [f"obs_encoder.obs_nets.{k}." for k in image_keys]
        vision = {"encoder": "robomimic", "style": "dp_hybrid"}
        center = "round"  # DP's CropRandomizer (eval_fixed_crop) at eval: torchvision's center_crop

    encoder_state = {}
    for i, prefix in enumerate(prefixes):
        sub = _sub(state, prefix)
        if not sub:
            raise ValueError(f"{where}: state_dicts.{which} has no '{prefix}*' tensors")
        encoder_state.update({f"encoders.{i}.{k}": v for k, v in sub.items()})
    first = _sub(state, prefixes[0])
    if cls == IMAGE_POLICY:
        stem, stages = "conv1.weight", [f"layer{j}" for j in range(1, 5)]
        layout = _trunk(first, "", stem, stages, where)
    else:
        layout = _trunk(first, "backbone.nets.", "0.weight", ["4", "5", "6", "7"], where)
        kp = first.get("pool.nets.weight")
        lin = first.get("nets.3.weight")
        if kp is None or lin is None:
            raise ValueError(f"{where}: robomimic VisualCore lacks pool.nets / nets.3 (SpatialSoftmax + Linear)")
        layout.update(num_kp=int(kp.shape[0]), feature_dim=int(lin.shape[0]),
                      temperature=float(first.get("pool.temperature", torch.ones(1)).reshape(-1)[0]))
    vision.update(layout, image_keys=image_keys, shared=shared, resize=resize, crop=crop, imagenet_norm=imagenet,
                  center_crop=center,
                  cond_order=cond_order, image_shapes={k: obs_meta[k][1] for k in image_keys})

    normalizer_state = {}
    for key in low + ["action"]:
        for field in ("scale", "offset"):
            if f"params_dict.{key}.{field}" not in norm_flat:
                raise ValueError(f"{where}: state_dicts.{which} lacks normalizer.params_dict.{key}.{field}")
        normalizer_state.update({k: v.to(torch.float32) for k, v in norm_flat.items()
                                 if k.startswith(f"params_dict.{key}.")})
    for i, key in enumerate(image_keys):
        scale, offset = (norm_flat.get(f"params_dict.{key}.{f}") for f in ("scale", "offset"))
        if scale is None or offset is None:
            raise ValueError(f"{where}: state_dicts.{which} lacks normalizer.params_dict.{key}.scale/offset")
        if scale.numel() != 1 or offset.numel() != 1:
            raise ValueError(f"{where}: image normaliser '{key}' has {scale.numel()} scales; only one value "
                             "for all pixels (get_image_range_normalizer) is supported")
        encoder_state[f"norm_scale_{i}"] = scale.to(torch.float32).reshape(1)
        encoder_state[f"norm_offset_{i}"] = offset.to(torch.float32).reshape(1)
    for k, v in normalizer_state.items():
        if not torch.isfinite(v).all() or (k.endswith(".scale") and (v == 0).any()):
            raise ValueError(f"{where}: normalizer '{k}' is zero or not finite")

    # Feature dims per obs key (images: encoder output, built once to read it).
    from parapolicy.image_cond import ImageConditioner

    cond = ImageConditioner(vision)
    cond.load_encoder_state(encoder_state, where=f"{where}: ")
    dims = {k: cond.feature_dim for k in image_keys}
    dims.update({k: int(torch.tensor(obs_meta[k][1]).prod()) for k in low})
    action_dim = int(norm_flat["params_dict.action.scale"].numel())
    n_obs_steps = int(get("policy.n_obs_steps", None) or get("n_obs_steps", 2))
    horizon = int(get("policy.horizon", None) or get("horizon", 16))
    kwargs = unet_kwargs_from_state(unet, n_groups=get("policy.n_groups", 8), where=f"{where}: ")
    expect_g = sum(dims.values()) * n_obs_steps
    if kwargs["input_dim"] != action_dim or kwargs["global_cond_dim"] != expect_g:
        raise ValueError(f"{where}: UNet input_dim={kwargs['input_dim']}, global_cond_dim="
                         f"{kwargs['global_cond_dim']} do not fit action_dim={action_dim} and features {dims} x "
                         f"n_obs_steps={n_obs_steps} (expected {action_dim}, {expect_g})")
    check_loads(kwargs, unet, where=f"{where}: ")
    factor = 2 ** (len(kwargs["down_dims"]) - 1)
    if horizon % factor:
        raise ValueError(f"{where}: horizon {horizon} is not divisible by {factor}")
    n_latency = int(get("n_latency_steps", 0) or 0)
    total = get("policy.n_action_steps", None)
    total = int(total) if total is not None else int(get("n_action_steps", 8)) + n_latency
    sched = {k: get(f"policy.noise_scheduler.{k}", None) for k in get("policy.noise_scheduler", {})
             if k != "_target_"}
    sched = {k: list(v) if isinstance(v, tuple) else v for k, v in sched.items()}
    try:
        from diffusers import DDPMScheduler

        DDPMScheduler(**sched)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise ValueError(f"{where}: policy.noise_scheduler {sched} is not valid for DDPMScheduler: {e}") from e
    steps = get("policy.num_inference_steps", None) or int(sched.get("num_train_timesteps", 1000))
    config = {
        "policy_type": "diffusion_unet_image" if cls == IMAGE_POLICY else "diffusion_unet_hybrid_image",
        "source_policy": target,
        "obs_keys": cond_order,
        "obs_dims": dims,
        "normalizer_keys": {k: k for k in low + ["action"]},
        "action_dim": action_dim,
        "horizon": horizon,
        "n_obs_steps": n_obs_steps,
        "n_action_steps": total - n_latency,
        "n_latency_steps": n_latency,
        "action_start": n_obs_steps - 1 + n_latency,
        "obs_as_global_cond": True,
        "model": kwargs,
        "scheduler": sched,
        "num_inference_steps": int(steps),
        "default_sampler": "ddpm",
        "weights": which,
        "vision": vision,
    }
    return LoadedCheckpoint(complete_config(config), unet, normalizer_state, "diffusion_policy_ckpt", path,
                            encoder_state=encoder_state)


def _trunk(state: dict, prefix: str, stem: str, stages: list[str], where: str) -> dict:
    from parapolicy.vision import trunk_layout_from_state

    try:
        lay = trunk_layout_from_state(state, prefix, stem, stages)
    except ValueError as e:
        raise ValueError(f"{where}: image encoder: {e}") from None
    return {"width": lay["width"], "blocks": list(lay["blocks"])}

"""Load a real-stanford/diffusion_policy `.ckpt` of a low-dim UNet policy (`DiffusionUnetLowdimPolicy`).

The file (written by `BaseWorkspace.save_checkpoint`) is a torch.save'd, dill-pickled dict

    {"cfg": OmegaConf DictConfig (the Hydra training config),
     "state_dicts": {"model": policy state dict, "ema_model": same (when training.use_ema), "optimizer": ...},
     "pickles": {"_output_dir": dill bytes}}                       # never unpickled here

It is read with `safe_unpickle.safe_torch_load` (allow-listed globals only: no dill, no diffusion_policy, no
code from the file runs). From the policy state dict (`ema_model` when present):

    model.<ConditionalUnet1D parameter>                   -> model_state (names already ours)
    normalizer.params_dict.{obs,action}.<field>           -> normalizer_state
    _dummy_variable, mask_generator._dummy_variable       -> ignored (empty parameters of DP's mixins)

From cfg.policy: horizon, n_obs_steps, n_action_steps, num_inference_steps, obs_as_global_cond
(False = inpainting: the UNet denoises [action, obs], the first n_obs_steps obs rows imposed each step),
oa_step_convention (True: executed actions start at n_obs_steps - 1, as the shipped configs set; False:
at n_obs_steps), `noise_scheduler` kwargs, `model.n_groups`. The UNet's other arguments are read from the
weights' shapes and cross-checked against cfg.policy.model where cfg gives a plain value. Only `${a.b}`
references are resolved in cfg; resolvers such as `${eval:...}` are never run (cfg values that need one
fall back to the weights or to the top-level keys they were computed from).

Image policies (DiffusionUnetImagePolicy, DiffusionUnetHybridImagePolicy) are read by `dp_image.load_dp_image`.
Refused with a message: any other policy class (the transformer backbone, BET, IBC),
`obs_as_local_cond`, `pred_action_steps_only`, a noise scheduler other than diffusers' DDPMScheduler, and
extra policy kwargs (DP forwards them to `scheduler.step`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from parapolicy.adapters._unet_shapes import check_loads, unet_kwargs_from_state
from parapolicy.adapters.safe_unpickle import safe_torch_load
from parapolicy.checkpoint_schema import LoadedCheckpoint, complete_config

SUPPORTED_POLICY = "DiffusionUnetLowdimPolicy"
IMAGE_POLICIES = ("DiffusionUnetImagePolicy", "DiffusionUnetHybridImagePolicy")  # adapters/dp_image.py
_POLICY_KEYS = {
    "_target_",
    "model",
    "noise_scheduler",
    "horizon",
    "obs_dim",
    "action_dim",
    "n_action_steps",
    "n_obs_steps",
    "num_inference_steps",
    "obs_as_local_cond",
    "obs_as_global_cond",
    "pred_action_steps_only",
    "oa_step_convention",
}
_MISSING = object()
_MISSING_OK = object()
_REF = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")


class _Unresolvable(Exception):
    pass


def _cfg_to_dict(cfg, where: str) -> dict:
    """OmegaConf DictConfig (or plain dict) -> plain dict, interpolations left as strings."""
    if isinstance(cfg, dict):
        return cfg
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError as e:  # pragma: no cover - omegaconf comes with hydra-core
        raise ValueError(f"{where}: reading its cfg needs omegaconf (pip install omegaconf)") from e
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{where}: 'cfg' is a {type(cfg).__name__}, expected an OmegaConf DictConfig")
    return OmegaConf.to_container(cfg, resolve=False)


def _lookup(root: dict, dotted: str):
    node = root
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _resolve(root: dict, value, depth: int = 0):
    """Resolve plain `${a.b}` references; anything needing a resolver raises _Unresolvable."""
    if isinstance(value, str) and "${" in value:
        m = _REF.match(value.strip())
        if m is None or depth > 16:
            raise _Unresolvable(value)
        target = _lookup(root, m.group(1))
        if target is _MISSING:
            raise _Unresolvable(value)
        return _resolve(root, target, depth + 1)
    if value == "???":
        raise _Unresolvable(value)
    return value


def _get(root: dict, dotted: str, default=_MISSING, where: str = ""):
    """cfg value at `dotted` (resolved); `default` when absent or unresolvable, else ValueError naming it."""
    value = _lookup(root, dotted)
    try:
        if value is _MISSING:
            raise _Unresolvable(None)
        return _resolve(root, value)
    except _Unresolvable as e:
        if default is not _MISSING:
            return default
        why = "is missing" if value is _MISSING else f"cannot be resolved without running a resolver ({e})"
        raise ValueError(f"{where}: cfg '{dotted}' {why}") from None


def _first(root: dict, paths: tuple[str, ...], where: str):
    """The first of `paths` that is present and resolvable; ValueError naming the first one otherwise."""
    for dotted in paths:
        value = _get(root, dotted, _MISSING_OK, where)
        if value is not _MISSING_OK:
            return value
    return _get(root, paths[0], _MISSING, where)


def _class_name(target) -> str:
    return str(target).rsplit(".", 1)[-1]


def load_dp_ckpt(path: str | os.PathLike) -> LoadedCheckpoint:
    """Load a diffusion_policy `.ckpt` -> LoadedCheckpoint (source "diffusion_policy_ckpt").

    ValueError (naming the file) for unsupported policy types/options, missing keys, or a corrupt file;
    `UnsafePickleError` (a ValueError) when the file needs a global outside the allow-list."""
    path = Path(path)
    where = str(path)
    payload = safe_torch_load(path)
    if not isinstance(payload, dict):
        raise ValueError(
            f"{where}: holds a {type(payload).__name__}, expected the workspace dict "
            "{cfg, state_dicts, pickles}"
        )
    missing = [k for k in ("cfg", "state_dicts") if k not in payload]
    if missing:
        raise ValueError(
            f"{where}: checkpoint dict lacks {missing} (has {sorted(payload)}); "
            "not a diffusion_policy workspace checkpoint"
        )
    cfg = _cfg_to_dict(payload["cfg"], where)
    policy = _lookup(cfg, "policy")
    if not isinstance(policy, dict):
        raise ValueError(f"{where}: cfg lacks the 'policy' section")

    # 1. Policy type and options we can reproduce.
    target = _get(cfg, "policy._target_", "", where)
    if _class_name(target) in IMAGE_POLICIES:
        from parapolicy.adapters.dp_image import load_dp_image

        sds = payload["state_dicts"]
        if not isinstance(sds, dict) or not (sds.get("ema_model") or sds.get("model")):
            raise ValueError(f"{where}: state_dicts has neither 'ema_model' nor 'model'")
        return load_dp_image(cfg, sds, where, str(path), lambda d, default=None: _get(cfg, d, default, where))
    if _class_name(target) != SUPPORTED_POLICY:
        raise ValueError(
            f"{where}: policy type {target!r} is not supported; parapolicy loads "
            f"{SUPPORTED_POLICY} and {', '.join(IMAGE_POLICIES)} (ConditionalUnet1D backbone) only"
        )
    model_target = _get(cfg, "policy.model._target_", "", where)
    if _class_name(model_target) != "ConditionalUnet1D":
        raise ValueError(f"{where}: policy.model is {model_target!r}; only ConditionalUnet1D is supported")
    sched_target = _get(cfg, "policy.noise_scheduler._target_", "", where)
    if _class_name(sched_target) != "DDPMScheduler":
        raise ValueError(f"{where}: noise scheduler {sched_target!r} is not supported (DDPMScheduler only)")
    extra = sorted(set(policy) - _POLICY_KEYS)
    if extra:
        raise ValueError(
            f"{where}: policy kwargs {extra} are not supported (diffusion_policy passes them to "
            "scheduler.step, which parapolicy's samplers do not reproduce)"
        )
    if _get(cfg, "policy.obs_as_local_cond", False, where):
        raise ValueError(
            f"{where}: obs_as_local_cond=True is not supported (global-cond and inpainting only)"
        )
    if _get(cfg, "policy.pred_action_steps_only", False, where):
        raise ValueError(f"{where}: pred_action_steps_only=True is not supported (only the default False)")
    global_cond = bool(_get(cfg, "policy.obs_as_global_cond", False, where))
    oa_step = bool(_get(cfg, "policy.oa_step_convention", False, where))

    # 2. Weights: EMA when present, UNet under `model.`, normaliser under `normalizer.`.
    sds = payload["state_dicts"]
    if not isinstance(sds, dict) or not (sds.get("ema_model") or sds.get("model")):
        raise ValueError(
            f"{where}: state_dicts has neither 'ema_model' nor 'model' "
            f"(has {sorted(sds) if isinstance(sds, dict) else type(sds).__name__})"
        )
    which = "ema_model" if sds.get("ema_model") else "model"
    policy_state = sds[which]
    unet_state = {k[len("model.") :]: v for k, v in policy_state.items() if k.startswith("model.")}
    norm_flat = {k[len("normalizer.") :]: v for k, v in policy_state.items() if k.startswith("normalizer.")}
    if not norm_flat and which == "ema_model" and sds.get("model"):
        norm_flat = {
            k[len("normalizer.") :]: v for k, v in sds["model"].items() if k.startswith("normalizer.")
        }
    if not unet_state:
        raise ValueError(f"{where}: state_dicts.{which} has no 'model.*' (UNet) tensors")
    need = [f"params_dict.{k}.{f}" for k in ("obs", "action") for f in ("scale", "offset")]
    lacking = [n for n in need if n not in norm_flat]
    if lacking:
        raise ValueError(
            f"{where}: state_dicts.{which} lacks normalizer tensors {['normalizer.' + n for n in lacking]}"
        )
    normalizer_state = {
        k: v.detach().to(torch.float32).contiguous()
        for k, v in norm_flat.items()
        if k.split(".")[1] in ("obs", "action")
    }
    for key in ("obs", "action"):
        scale, offset = norm_flat[f"params_dict.{key}.scale"], norm_flat[f"params_dict.{key}.offset"]
        if not (torch.isfinite(scale).all() and torch.isfinite(offset).all()) or (scale == 0).any():
            raise ValueError(f"{where}: normalizer '{key}' has a zero or non-finite scale/offset")
    obs_dim = int(norm_flat["params_dict.obs.scale"].numel())
    action_dim = int(norm_flat["params_dict.action.scale"].numel())

    # 3. UNet arguments from the weights, checked against cfg and against the conditioning mode.
    unet_state = {k: v.detach().contiguous() for k, v in unet_state.items()}
    kwargs = unet_kwargs_from_state(
        unet_state, n_groups=_get(cfg, "policy.model.n_groups", 8, where), where=f"{where}: "
    )
    for key, value in kwargs.items():
        declared = _get(cfg, f"policy.model.{key}", None, where)
        if (
            declared is not None
            and key != "n_groups"
            and (list(declared) if key == "down_dims" else declared) != value
        ):
            raise ValueError(
                f"{where}: cfg policy.model.{key}={declared!r} disagrees with the weights ({value!r})"
            )
    horizon = int(_first(cfg, ("policy.horizon", "horizon"), where))
    n_obs_steps = int(_first(cfg, ("policy.n_obs_steps", "n_obs_steps"), where))
    expect_in = action_dim if global_cond else action_dim + obs_dim
    expect_g = obs_dim * n_obs_steps if global_cond else None
    if kwargs["input_dim"] != expect_in or kwargs["global_cond_dim"] != expect_g:
        mode = "global-cond" if global_cond else "inpainting"
        raise ValueError(
            f"{where}: UNet input_dim={kwargs['input_dim']}, global_cond_dim="
            f"{kwargs['global_cond_dim']} do not fit a {mode} policy with obs_dim={obs_dim}, "
            f"action_dim={action_dim}, n_obs_steps={n_obs_steps} (expected {expect_in}, {expect_g})"
        )
    if kwargs["local_cond_dim"] is not None:
        raise ValueError(f"{where}: the UNet has a local-condition encoder, which is not supported")
    factor = 2 ** (len(kwargs["down_dims"]) - 1)
    if horizon % factor:
        raise ValueError(
            f"{where}: horizon {horizon} is not divisible by {factor} (UNet with "
            f"{len(kwargs['down_dims'])} levels)"
        )
    check_loads(kwargs, unet_state, where=f"{where}: ")

    # 4. Timing: DP's env runner drops the first n_latency_steps of the n_action_steps + n_latency_steps.
    n_latency = int(_get(cfg, "n_latency_steps", 0, where))
    total = _get(cfg, "policy.n_action_steps", None, where)
    if total is None:
        total = int(_get(cfg, "n_action_steps", _MISSING, where)) + n_latency
    n_action_steps = int(total) - n_latency
    start = (n_obs_steps - 1 if oa_step else n_obs_steps) + n_latency

    # 5. Scheduler kwargs, validated by building the diffusers scheduler.
    sched = {
        k: _get(cfg, f"policy.noise_scheduler.{k}", _MISSING, where)
        for k in _lookup(cfg, "policy.noise_scheduler")
        if k != "_target_"
    }
    sched = {k: list(v) if isinstance(v, tuple) else v for k, v in sched.items()}
    try:
        from diffusers import DDPMScheduler

        DDPMScheduler(**sched)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise ValueError(
            f"{where}: policy.noise_scheduler {sched} is not valid for DDPMScheduler: {e}"
        ) from e
    num_inference_steps = _get(cfg, "policy.num_inference_steps", None, where)
    if num_inference_steps is None:
        num_inference_steps = int(sched.get("num_train_timesteps", 1000))

    config = {
        "policy_type": "diffusion_unet_lowdim",
        "source_policy": str(target),
        "obs_keys": ["obs"],
        "obs_dims": {"obs": obs_dim},
        "normalizer_keys": {"obs": "obs", "action": "action"},
        "action_dim": action_dim,
        "horizon": horizon,
        "n_obs_steps": n_obs_steps,
        "n_action_steps": n_action_steps,
        "n_latency_steps": n_latency,
        "action_start": start,
        "obs_as_global_cond": global_cond,
        "model": kwargs,
        "scheduler": sched,
        "num_inference_steps": int(num_inference_steps),
        "default_sampler": "ddpm",
        "weights": which,
    }
    return LoadedCheckpoint(
        complete_config(config), unet_state, normalizer_state, "diffusion_policy_ckpt", str(path)
    )

"""Image policies: checkpoints built here with each source's real key layout, config and normalisation
(random resnet18 + GroupNorm tensors named as torchvision / robomimic / LeRobot name them, tiny UNets, small
images), loaded by parapolicy and sampled through `DiffusionPolicy.predict_action`, against the reference
encoders of tests/vision_reference.py and the original DDPM loop of tests/dp_reference.py with the same noise.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from parapolicy.model import ConditionalUnet1D
from parapolicy.policy import load_policy
from tests import vision_reference as ref
from tests.dp_reference import _denoise, make_scheduler
from tests.test_adapters_lerobot import LeRobotUnetMirror

H = W = 96
CROP = [84, 84]  # the real Push-T crop: a 3x3 layer4 map, so keypoints depend on the image
A, N_OBS, HORIZON, N_ACT, STEPS = 2, 2, 8, 4, 10
SCHED = {"num_train_timesteps": 20, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2",
         "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon"}
UNET = {"diffusion_step_embed_dim": 16, "down_dims": [16, 32], "kernel_size": 3, "n_groups": 4,
        "cond_predict_scale": True}


def _noise(b, steps=STEPS, seed=11):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, HORIZON, A, generator=g), torch.randn(steps, b, HORIZON, A, generator=g)


def _images(b, keys, seed=3):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(b, N_OBS, 3, H, W, generator=g) for k in keys}


def _sample(unet, cond, init, step, sched_kwargs):
    zeros = torch.zeros(cond.shape[0], HORIZON, A)
    with torch.no_grad():
        return _denoise(unet, make_scheduler(sched_kwargs, STEPS), zeros, torch.zeros_like(zeros, dtype=torch.bool),
                        cond, None, init, step)


def _check_policy(path, obs, want_action, init, step):
    """DDPM on the eager and fp32 fast paths and ParaDDPM at tol 0 give the reference actions."""
    for fast in ("eager", "fp32"):
        policy = load_policy(path, fast=fast)
        out = policy.predict_action(obs, sampler="ddpm", init_noise=init, step_noise=step)
        assert out["action"].shape == want_action.shape
        assert (out["action"] - want_action).abs().max() <= 1e-2, (fast, (out["action"] - want_action).abs().max())
        assert set(out["timing"]) == {"encoder_s", "denoise_s"}
    para = policy.predict_action(obs, sampler={"name": "paraddpm", "tol": 0.0, "window": 4}, init_noise=init,
                                 step_noise=step)
    assert (para["action"] - want_action).abs().max() <= 1e-2
    # the test has power: other images (same state, same noise) move the actions well beyond the tolerance
    other = {k: (v.flip(-1) if v.ndim == 5 else v) for k, v in obs.items()}
    moved = policy.predict_action(other, sampler="ddpm", init_noise=init, step_noise=step)["action"]
    assert (moved - want_action).abs().max() > 0.5
    return policy


# ----------------------------------------------------------------------------------- diffusion_policy
def _image_range_norm():
    return {"scale": torch.tensor([2.0]), "offset": torch.tensor([-1.0]),
            "input_stats.min": torch.tensor([0.0]), "input_stats.max": torch.tensor([1.0]),
            "input_stats.mean": torch.tensor([0.5]), "input_stats.std": torch.tensor([0.2887])}


def _limits(d, g):
    lo, hi = torch.rand(d, generator=g) * 50, 300 + torch.rand(d, generator=g) * 200
    scale = 2 / (hi - lo)
    return {"scale": scale, "offset": -1 - lo * scale, "input_stats.min": lo, "input_stats.max": hi,
            "input_stats.mean": (lo + hi) / 2, "input_stats.std": (hi - lo) / 4}


def _dp_cfg(kind, shape_meta, shared=False):
    policy = {"shape_meta": "${shape_meta}",
              "noise_scheduler": {"_target_": "diffusers.schedulers.scheduling_ddpm.DDPMScheduler", **SCHED},
              "horizon": "${horizon}", "n_action_steps": "${eval:'${n_action_steps}+${n_latency_steps}'}",
              "n_obs_steps": "${n_obs_steps}", "num_inference_steps": STEPS, "obs_as_global_cond": True, **UNET}
    if kind == "image":
        policy["_target_"] = "diffusion_policy.policy.diffusion_unet_image_policy.DiffusionUnetImagePolicy"
        policy["obs_encoder"] = {
            "_target_": "diffusion_policy.model.vision.multi_image_obs_encoder.MultiImageObsEncoder",
            "shape_meta": "${shape_meta}",
            "rgb_model": {"_target_": "diffusion_policy.model.vision.model_getter.get_resnet", "name": "resnet18",
                          "weights": None},
            "resize_shape": None, "crop_shape": CROP, "random_crop": True, "use_group_norm": True,
            "share_rgb_model": shared, "imagenet_norm": True}
    else:
        policy["_target_"] = ("diffusion_policy.policy.diffusion_unet_hybrid_image_policy."
                              "DiffusionUnetHybridImagePolicy")
        policy.update(crop_shape=CROP, obs_encoder_group_norm=True, eval_fixed_crop=True)
    return {"_target_": "diffusion_policy.workspace.train_diffusion_unet_image_workspace.Workspace",
            "shape_meta": shape_meta, "horizon": HORIZON, "n_obs_steps": N_OBS, "n_action_steps": N_ACT,
            "n_latency_steps": 0, "policy": policy}


def _robomimic_core(g, prefix):
    """VisualCore tensors: backbone.nets.*, pool.*, and the same under nets.0 / nets.1, Linear nets.3."""
    sd = ref.make_resnet_state(ref.SEQUENTIAL, g)
    px, py = ref.grid(3, 3)  # layer4 map of an 84x84 crop: 3x3
    pool = {"nets.weight": torch.randn(32, 512, 1, 1, generator=g) * 0.05, "nets.bias": torch.zeros(32),
            "temperature": torch.tensor([1.0]), "pos_x": px[None], "pos_y": py[None]}
    lin = {"weight": torch.randn(64, 64, generator=g) * 0.1, "bias": torch.randn(64, generator=g) * 0.1}
    out = {}
    for k, v in sd.items():
        out[f"{prefix}backbone.nets.{k}"] = v
        out[f"{prefix}nets.0.nets.{k}"] = v
    for k, v in pool.items():
        out[f"{prefix}pool.{k}"] = v
        out[f"{prefix}nets.1.{k}"] = v
    out.update({f"{prefix}nets.3.{k}": v for k, v in lin.items()})
    return out


def _write_dp(tmp_path, kind, rgb, low, shared=False, seed=0, name="a.ckpt"):
    """A DP workspace .ckpt of an image/hybrid policy -> (path, reference state dict, unet, norms)."""
    g = torch.Generator().manual_seed(seed)
    shape_meta = {"obs": {}, "action": {"shape": [A]}}
    for k in rgb:
        shape_meta["obs"][k] = {"shape": [3, H, W], "type": "rgb"}
    for k, d in low.items():
        shape_meta["obs"][k] = {"shape": [d], "type": "low_dim"}
    sd = {}
    if kind == "image":
        for k in (["rgb"] if shared else rgb):
            sd.update({f"obs_encoder.key_model_map.{k}.{n}": v
                       for n, v in ref.make_resnet_state(ref.TORCHVISION, g).items()})
        feat = 512
    else:
        for k in rgb:
            sd.update(_robomimic_core(g, f"obs_encoder.obs_nets.{k}."))
        feat = 64
    cond_dim = (feat * len(rgb) + sum(low.values())) * N_OBS
    torch.manual_seed(seed)
    unet = ConditionalUnet1D(input_dim=A, global_cond_dim=cond_dim, **UNET)
    sd.update({f"model.{k}": v for k, v in unet.state_dict().items()})
    norms = {k: _image_range_norm() for k in rgb}
    norms.update({k: _limits(d, g) for k, d in list(low.items()) + [("action", A)]})
    for k, fields in norms.items():
        sd.update({f"normalizer.params_dict.{k}.{f}": v for f, v in fields.items()})
    sd["_dummy_variable"] = torch.zeros(0)
    payload = {"cfg": OmegaConf.create(_dp_cfg(kind, shape_meta, shared)),
               "state_dicts": {"model": {k: v + 0.0 for k, v in sd.items()}, "ema_model": sd},
               "pickles": {"_output_dir": pickle.dumps("/x")}}
    torch.save(payload, str(tmp_path / name))
    return tmp_path / name, sd, unet, norms


def _dp_reference(kind, sd, unet, norms, obs, rgb, low, order, shared, init, step):
    """DiffusionUnet(Hybrid)ImagePolicy.predict_action with the same noise."""
    nobs = {k: ref.dp_normalize(obs[k], norms[k]["scale"], norms[k]["offset"]) for k in obs}
    b = next(iter(obs.values())).shape[0]
    flat = {k: v[:, :N_OBS].reshape(-1, *v.shape[2:]) for k, v in nobs.items()}
    with torch.no_grad():
        if kind == "image":
            feats = ref.dp_multi_image_encoder(flat, sd, rgb_keys=rgb, low_keys=list(low), crop=CROP, imagenet=True,
                                               shared=shared)
        else:
            feats = ref.robomimic_obs_encoder(flat, sd, order=order, rgb_keys=rgb, crop=CROP)
    sample = _sample(unet, feats.reshape(b, -1), init, step, SCHED)
    act = (sample - norms["action"]["offset"]) / norms["action"]["scale"]
    return act[:, N_OBS - 1:N_OBS - 1 + N_ACT]


@pytest.mark.parametrize("kind, shared", [("image", False), ("image", True), ("hybrid", False)])
def test_dp_image_policies_match_original(tmp_path, kind, shared):
    rgb = ["top", "front"] if kind == "image" else ["image"]  # image policy: features of sorted keys
    low = {"agent_pos": 2}
    path, sd, unet, norms = _write_dp(tmp_path, kind, rgb, low, shared)
    obs = _images(3, rgb)
    g = torch.Generator().manual_seed(5)
    obs["agent_pos"] = torch.rand(3, N_OBS, 2, generator=g) * 400
    init, step = _noise(3)
    order = list(rgb) + list(low)
    want = _dp_reference(kind, sd, unet, norms, obs, rgb, low, order, shared, init, step)
    policy = _check_policy(path, obs, want, init, step)
    assert policy.config["vision"]["image_keys"] == (sorted(rgb) if kind == "image" else rgb)
    assert policy.config["weights"] == "ema_model"


def test_dp_hybrid_keeps_shape_meta_order(tmp_path):
    """robomimic's encoder concatenates in shape_meta order (here low-dim first), not sorted."""
    g = torch.Generator().manual_seed(1)
    path, sd, unet, norms = _write_dp(tmp_path, "hybrid", ["image"], {"agent_pos": 2}, seed=2)
    # rewrite shape_meta with agent_pos first
    payload = torch.load(str(path), weights_only=False)
    cfg = OmegaConf.to_container(payload["cfg"])
    cfg["shape_meta"]["obs"] = {"agent_pos": cfg["shape_meta"]["obs"]["agent_pos"],
                                "image": cfg["shape_meta"]["obs"]["image"]}
    payload["cfg"] = OmegaConf.create(cfg)
    torch.save(payload, str(path))
    obs = _images(2, ["image"])
    obs["agent_pos"] = torch.rand(2, N_OBS, 2, generator=g) * 400
    init, step = _noise(2)
    want = _dp_reference("hybrid", sd, unet, norms, obs, ["image"], {"agent_pos": 2}, ["agent_pos", "image"],
                         False, init, step)
    policy = _check_policy(path, obs, want, init, step)
    assert policy.config["vision"]["cond_order"] == ["agent_pos", "image"]


def test_dp_image_refusals_named(tmp_path):
    path, *_ = _write_dp(tmp_path, "image", ["image"], {"agent_pos": 2})
    payload = torch.load(str(path), weights_only=False)
    for key, value, match in [("use_group_norm", False, "use_group_norm"),
                              ("rgb_model", {"_target_": "x.get_resnet", "name": "resnet50"}, "resnet18")]:
        cfg = OmegaConf.to_container(payload["cfg"])
        cfg["policy"]["obs_encoder"][key] = value
        bad = dict(payload, cfg=OmegaConf.create(cfg))
        torch.save(bad, str(tmp_path / "bad.ckpt"))
        with pytest.raises(ValueError, match=match):
            load_policy(tmp_path / "bad.ckpt", fast="eager")


# ----------------------------------------------------------------------------------------------- LeRobot
def _lerobot_dir(tmp_path, layout, cams, separate, normalization, seed=0):
    g = torch.Generator().manual_seed(seed)
    state_dim = 2
    cfg_common = {"n_obs_steps": N_OBS, "horizon": HORIZON, "n_action_steps": N_ACT, "vision_backbone": "resnet18",
                  "crop_shape": CROP, "crop_is_random": True, "pretrained_backbone_weights": None,
                  "use_group_norm": True, "spatial_softmax_num_keypoints": 32,
                  "use_separate_rgb_encoder_per_camera": separate, "down_dims": UNET["down_dims"],
                  "kernel_size": UNET["kernel_size"], "n_groups": UNET["n_groups"],
                  "diffusion_step_embed_dim": UNET["diffusion_step_embed_dim"], "use_film_scale_modulation": True,
                  "noise_scheduler_type": "DDPM", "num_train_timesteps": 20, "beta_schedule": "squaredcos_cap_v2",
                  "beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "epsilon", "clip_sample": True,
                  "clip_sample_range": 1.0, "num_inference_steps": STEPS}
    if layout == "legacy":
        cfg = {"input_shapes": {"observation.state": [state_dim], **{c: [3, H, W] for c in cams}},
               "output_shapes": {"action": [A]},
               "input_normalization_modes": {"observation.state": "min_max", **{c: "mean_std" for c in cams}},
               "output_normalization_modes": {"action": "min_max"}, **cfg_common}
    else:
        cfg = {"type": "diffusion", "normalization_mapping": {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX",
                                                              "ACTION": "MIN_MAX"},
               "input_features": {"observation.state": {"type": "STATE", "shape": [state_dim]},
                                  **{c: {"type": "VISUAL", "shape": [3, H, W]} for c in cams}},
               "output_features": {"action": {"type": "ACTION", "shape": [A]}}, **cfg_common}
    stats = {"observation.state": {"min": torch.rand(2, generator=g) * 20, "max": 400 + torch.rand(2, generator=g)},
             "action": {"min": torch.rand(2, generator=g) * 20, "max": 450 + torch.rand(2, generator=g)}}
    for c in cams:
        stats[c] = {"mean": 0.3 + 0.4 * torch.rand(3, 1, 1, generator=g),
                    "std": 0.1 + 0.2 * torch.rand(3, 1, 1, generator=g)}
    tensors = {}
    px, py = ref.grid(3, 3)
    for i in range(len(cams) if separate else 1):
        p = f"diffusion.rgb_encoder.{i}." if separate else "diffusion.rgb_encoder."
        tensors.update({f"{p}backbone.{k}": v for k, v in ref.make_resnet_state(ref.SEQUENTIAL, g).items()})
        tensors[f"{p}pool.nets.weight"] = torch.randn(32, 512, 1, 1, generator=g) * 0.05
        tensors[f"{p}pool.nets.bias"] = torch.zeros(32)
        tensors[f"{p}pool.pos_grid"] = torch.stack([px, py], 1)
        tensors[f"{p}out.weight"] = torch.randn(64, 64, generator=g) * 0.1
        tensors[f"{p}out.bias"] = torch.randn(64, generator=g) * 0.1
    torch.manual_seed(seed)
    mirror = LeRobotUnetMirror(A, (state_dim + 64 * len(cams)) * N_OBS, UNET["down_dims"],
                               UNET["diffusion_step_embed_dim"], UNET["kernel_size"], UNET["n_groups"], True).eval()
    tensors.update({f"diffusion.unet.{k}": v.detach().clone() for k, v in mirror.state_dict().items()})
    d = tmp_path / f"lr_{layout}"
    d.mkdir()
    if normalization == "buffers":
        for key, st in stats.items():
            heads = ["normalize_targets", "unnormalize_outputs"] if key == "action" else ["normalize_inputs"]
            for head in heads:
                for s, v in st.items():
                    tensors[f"{head}.buffer_{key.replace('.', '_')}.{s}"] = v.clone()
    else:
        flat = {f"{k}.{s}": v.clone() for k, st in stats.items() for s, v in st.items()}
        for pipe, reg in [("policy_preprocessor", "normalizer_processor"),
                          ("policy_postprocessor", "unnormalizer_processor")]:
            save_file(flat, str(d / f"{pipe}_step_0_{reg}.safetensors"))
            steps = [{"registry_name": reg, "state_file": f"{pipe}_step_0_{reg}.safetensors",
                      "config": {"eps": 1e-8, "norm_map": cfg["normalization_mapping"]}}]
            (d / f"{pipe}.json").write_text(json.dumps({"name": pipe, "steps": steps}))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg))
    return d, tensors, mirror, stats


@pytest.mark.parametrize("layout, cams, separate, normalization", [
    ("legacy", ["observation.image"], False, "buffers"),
    ("draccus", ["observation.images.top", "observation.images.wrist"], True, "processor"),
    ("draccus", ["observation.images.top", "observation.images.wrist"], False, "buffers"),
])
def test_lerobot_image_policies_match_original(tmp_path, layout, cams, separate, normalization):
    d, tensors, mirror, stats = _lerobot_dir(tmp_path, layout, cams, separate, normalization)
    obs = _images(3, cams)
    g = torch.Generator().manual_seed(8)
    obs["observation.state"] = torch.rand(3, N_OBS, 2, generator=g) * 400
    init, step = _noise(3)
    st = stats["observation.state"]
    state_n = (obs["observation.state"] - st["min"]) / (st["max"] - st["min"] + 1e-8) * 2 - 1
    if normalization == "processor":
        state_n = 2 * (obs["observation.state"] - st["min"]) / (st["max"] - st["min"]) - 1
    with torch.no_grad():
        cond = ref.lerobot_global_cond(obs, tensors, image_keys=cams, state_n=state_n, env_n=None,
                                       img_stats=stats, crop=CROP, separate=separate)
    sample = _sample(mirror, cond, init, step, SCHED)
    sa = stats["action"]
    want = ((sample + 1) / 2 * (sa["max"] - sa["min"]) + sa["min"])[:, N_OBS - 1:N_OBS - 1 + N_ACT]
    policy = _check_policy(d, obs, want, init, step)
    assert policy.config["vision"]["shared"] is (not separate)
    assert policy.obs_keys == ["observation.state", *cams]


# ----------------------------------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def dp_policy(tmp_path_factory):
    path, *_ = _write_dp(tmp_path_factory.mktemp("dp"), "image", ["image"], {"agent_pos": 2})
    return load_policy(path, fast="eager")


def _good_obs(b=1):
    obs = _images(b, ["image"])
    obs["agent_pos"] = torch.full((b, N_OBS, 2), 100.0)
    return obs


@pytest.mark.parametrize("mutate, match", [
    (lambda o: o.update(image=(o["image"] * 255).to(torch.uint8)), r"obs\['image'\] is uint8"),
    (lambda o: o.update(image=o["image"] * 255), r"obs\['image'\].*\[0, 1\].*divide by 255"),
    (lambda o: o.update(image=o["image"] - 0.5), r"obs\['image'\] values span"),
    (lambda o: o.update(image=o["image"].permute(0, 1, 3, 4, 2)), r"channels last"),
    (lambda o: o.update(image=o["image"][:, :1]), r"obs\['image'\] must have shape \(B, 2, 3, 96, 96\)"),
    (lambda o: o.update(image=o["image"].to(torch.int64)), r"dtype torch.int64"),
    (lambda o: o.pop("image"), r"lacks cameras \['image'\]"),
    (lambda o: o.update(agent_pos=o["agent_pos"][:, :, :1]), r"obs\['agent_pos'\] must have shape"),
    (lambda o: o.update(image=o["image"] * float("nan")), r"NaN"),
    (lambda o: o.update(agent_pos=torch.full((2, N_OBS, 2), 1.0)), r"batch sizes differ"),
])
def test_bad_image_inputs_rejected(dp_policy, mutate, match):
    obs = _good_obs()
    mutate(obs)
    with pytest.raises(ValueError, match=match):
        dp_policy.predict_action(obs, sampler="ddpm")


def test_numpy_images_and_act_loop(dp_policy):
    """numpy float inputs work; act() keeps an image history and returns one action per call."""
    obs = {k: np.asarray(v) for k, v in _good_obs(1).items()}
    out = dp_policy.predict_action(obs, sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (1, N_ACT, A)
    dp_policy.reset()
    a = dp_policy.act({"image": obs["image"][0, 0], "agent_pos": obs["agent_pos"][0, 0]}, sampler="ddpm")
    assert a.shape == (A,)


def test_image_checkpoint_converts_to_our_format(tmp_path):
    """A loaded DP image checkpoint saved as a parapolicy directory (encoder tensors under `encoder.`) gives
    the same actions."""
    from parapolicy.checkpoint import load_checkpoint, save_policy_dir

    path, *_ = _write_dp(tmp_path, "hybrid", ["image"], {"agent_pos": 2})
    ck = load_checkpoint(path)
    ours = save_policy_dir(tmp_path / "ours", ck.config, ck.model_state, ck.normalizer_state, ck.encoder_state)
    obs = _good_obs(2)
    init, step = _noise(2)
    a = load_policy(path, fast="eager").predict_action(obs, sampler="ddpm", init_noise=init, step_noise=step)
    b = load_policy(ours, fast="eager").predict_action(obs, sampler="ddpm", init_noise=init, step_noise=step)
    assert torch.equal(a["action"], b["action"])


def test_lerobot_batchnorm_backbone_uses_running_stats(tmp_path):
    """use_group_norm=false (an ImageNet-initialised LeRobot backbone keeps BatchNorm): eval-mode BatchNorm with
    the saved running statistics, checked against a functional batch_norm of the same tensors."""
    import torch.nn.functional as F

    d, tensors, mirror, stats = _lerobot_dir(tmp_path, "draccus", ["observation.image"], False, "buffers")
    cfg = json.loads((d / "config.json").read_text())
    cfg["use_group_norm"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(9)
    for name in [k for k in tensors if k.startswith("diffusion.rgb_encoder.backbone.") and k.endswith(".bias")
                 and ("bn" in k or k.split(".")[-2] in ("1",))]:
        head = name[: -len(".bias")]
        c = tensors[name].numel()
        tensors[head + ".running_mean"] = 0.1 * torch.randn(c, generator=g)
        tensors[head + ".running_var"] = 0.5 + torch.rand(c, generator=g)
        tensors[head + ".num_batches_tracked"] = torch.tensor(100)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(d / "model.safetensors"))
    policy = load_policy(d, fast="eager")
    assert policy.config["vision"]["norm"] == "batch"
    enc = policy.vision.encoders[0]
    x = torch.rand(2, 3, 84, 84, generator=g)
    p = "diffusion.rgb_encoder.backbone."
    want = F.batch_norm(F.conv2d(x, tensors[p + "0.weight"], stride=2, padding=3), tensors[p + "1.running_mean"],
                        tensors[p + "1.running_var"], tensors[p + "1.weight"], tensors[p + "1.bias"], False, 0.0, 1e-5)
    with torch.no_grad():
        got = enc.backbone[1](enc.backbone[0](x))
    assert torch.allclose(got, want, atol=1e-5)

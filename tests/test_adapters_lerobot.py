"""LeRobot DiffusionPolicy directory adapter. lerobot is not installed: the test writes the directory itself,
with weights from a small module that mirrors LeRobot's `DiffusionConditionalUnet1d` module tree (so the
parameter names come from that structure, not from the adapter's mapping) and config.json / processor files
in LeRobot's formats. The mirrored UNet's outputs and LeRobot-formula normalisation are the references."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from parapolicy.adapters.lerobot import load_lerobot_dir
from parapolicy.checkpoint import load_checkpoint
from parapolicy.model import ConditionalUnet1D
from parapolicy.normalizer import LinearNormalizer
from tests.dp_reference import (
    _denoise,
    lerobot_generate_actions,
    lerobot_normalize,
    lerobot_unnormalize,
    make_scheduler,
)

STATE_DIM, ENV_DIM, ACTION_DIM, N_OBS, HORIZON, N_ACT = 2, 6, 2, 2, 8, 4
DOWN, DSED, KERNEL, GROUPS = [16, 32], 8, 3, 4




# ---------------------------------------------------------------- a mirror of LeRobot's UNet module tree


class _LRConv(nn.Module):  # DiffusionConv1dBlock
    def __init__(self, cin, cout, k, groups=8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(cin, cout, k, padding=k // 2), nn.GroupNorm(groups, cout), nn.Mish()
        )

    def forward(self, x):
        return self.block(x)


class _LRRes(nn.Module):  # DiffusionConditionalResidualBlock1d
    def __init__(self, cin, cout, cond_dim, k, groups, film_scale):
        super().__init__()
        self.film_scale, self.cout = film_scale, cout
        self.conv1 = _LRConv(cin, cout, k, groups)
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, cout * 2 if film_scale else cout))
        self.conv2 = _LRConv(cout, cout, k, groups)
        self.residual_conv = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, cond):
        out = self.conv1(x)
        emb = self.cond_encoder(cond).unsqueeze(-1)
        out = emb[:, : self.cout] * out + emb[:, self.cout :] if self.film_scale else out + emb
        return self.conv2(out) + self.residual_conv(x)


class _LRSinusoid(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        f = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
        e = t.float().unsqueeze(-1) * f.unsqueeze(0)
        return torch.cat((e.sin(), e.cos()), dim=-1)


class LeRobotUnetMirror(nn.Module):
    """LeRobot's DiffusionConditionalUnet1d: no local cond, plain Conv1d/ConvTranspose1d resamplers."""

    def __init__(self, action_dim, global_cond_dim, down_dims, dsed, k, groups, film_scale):
        super().__init__()
        self.diffusion_step_encoder = nn.Sequential(
            _LRSinusoid(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed)
        )
        cond = dsed + global_cond_dim
        in_out = [(action_dim, down_dims[0])] + list(zip(down_dims[:-1], down_dims[1:], strict=True))
        kw = dict(cond_dim=cond, k=k, groups=groups, film_scale=film_scale)
        self.down_modules = nn.ModuleList(
            nn.ModuleList(
                [
                    _LRRes(a, b, **kw),
                    _LRRes(b, b, **kw),
                    nn.Conv1d(b, b, 3, 2, 1) if i < len(in_out) - 1 else nn.Identity(),
                ]
            )
            for i, (a, b) in enumerate(in_out)
        )
        self.mid_modules = nn.ModuleList([_LRRes(down_dims[-1], down_dims[-1], **kw) for _ in range(2)])
        self.up_modules = nn.ModuleList(
            nn.ModuleList([_LRRes(b * 2, a, **kw), _LRRes(a, a, **kw), nn.ConvTranspose1d(a, a, 4, 2, 1)])
            for a, b in reversed(in_out[1:])
        )
        self.final_conv = nn.Sequential(
            _LRConv(down_dims[0], down_dims[0], k), nn.Conv1d(down_dims[0], action_dim, 1)
        )

    def forward(self, x, timestep, global_cond=None, **_):
        x = x.transpose(1, 2)
        t = torch.as_tensor(timestep).reshape(-1).expand(x.shape[0])
        feat = self.diffusion_step_encoder(t)
        feat = torch.cat([feat, global_cond], -1) if global_cond is not None else feat
        skips = []
        for r1, r2, down in self.down_modules:
            x = r2(r1(x, feat), feat)
            skips.append(x)
            x = down(x)
        for m in self.mid_modules:
            x = m(x, feat)
        for r1, r2, up in self.up_modules:
            x = up(r2(r1(torch.cat((x, skips.pop()), 1), feat), feat))
        return self.final_conv(x).transpose(1, 2)


# ---------------------------------------------------------------- writing LeRobot directories


def make_stats(seed=0):
    g = torch.Generator().manual_seed(seed)

    def mm(d, lo, hi):
        a, b = torch.rand(d, generator=g) * lo, hi + torch.rand(d, generator=g) * hi
        return {"min": a, "max": b, "mean": (a + b) / 2, "std": (b - a) / 4}

    stats = {
        "observation.state": mm(STATE_DIM, 10, 500),
        "observation.environment_state": mm(ENV_DIM, 5, 400),
        "action": mm(ACTION_DIM, 10, 500),
    }
    stats["observation.environment_state"]["max"][0] = stats["observation.environment_state"]["min"][
        0
    ]  # flat dim
    return stats


def base_config(layout="draccus", env_mode="MIN_MAX", sched="DDPM", **over):
    common = {
        "n_obs_steps": N_OBS,
        "horizon": HORIZON,
        "n_action_steps": N_ACT,
        "drop_n_last_frames": 3,
        "vision_backbone": "resnet18",
        "crop_shape": [84, 84],
        "crop_is_random": True,
        "pretrained_backbone_weights": None,
        "use_group_norm": True,
        "spatial_softmax_num_keypoints": 32,
        "down_dims": DOWN,
        "kernel_size": KERNEL,
        "n_groups": GROUPS,
        "diffusion_step_embed_dim": DSED,
        "use_film_scale_modulation": True,
        "noise_scheduler_type": sched,
        "num_train_timesteps": 20,
        "beta_schedule": "squaredcos_cap_v2",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "prediction_type": "epsilon",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "num_inference_steps": 10,
        "do_mask_loss_for_padding": False,
    }
    if layout == "legacy":
        cfg = {
            "input_shapes": {"observation.state": [STATE_DIM], "observation.environment_state": [ENV_DIM]},
            "output_shapes": {"action": [ACTION_DIM]},
            "input_normalization_modes": {
                "observation.state": "min_max",
                "observation.environment_state": env_mode.lower(),
            },
            "output_normalization_modes": {"action": "min_max"},
            **common,
        }
    else:
        mapping = {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
        if env_mode != "IDENTITY":
            mapping["ENV"] = env_mode
        cfg = {
            "type": "diffusion",
            "n_obs_steps": N_OBS,
            "normalization_mapping": mapping,
            "input_features": {
                "observation.state": {"type": "STATE", "shape": [STATE_DIM]},
                "observation.environment_state": {"type": "ENV", "shape": [ENV_DIM]},
            },
            "output_features": {"action": {"type": "ACTION", "shape": [ACTION_DIM]}},
            "device": "cpu",
            "use_amp": False,
            **common,
        }
    cfg.update(over)
    return cfg


def mirror_unet(seed=0):
    torch.manual_seed(seed)
    m = LeRobotUnetMirror(ACTION_DIM, (STATE_DIM + ENV_DIM) * N_OBS, DOWN, DSED, KERNEL, GROUPS, True)
    with torch.no_grad():  # non-default GroupNorm affine so a swapped conv1/conv2 would show
        for mod in m.modules():
            if isinstance(mod, nn.GroupNorm):
                mod.weight.normal_(1.0, 0.2)
                mod.bias.normal_(0.0, 0.2)
    return m.eval()


def write_dir(tmp_path, cfg, unet, stats, normalization="buffers", name="pretrained_model"):
    d = tmp_path / name
    d.mkdir()
    tensors = {f"diffusion.unet.{k}": v.detach().clone().contiguous() for k, v in unet.state_dict().items()}
    if normalization == "buffers":
        modes = {
            "observation.state": "MIN_MAX",
            "observation.environment_state": (
                cfg.get("normalization_mapping", {}).get("ENV")
                or cfg.get("input_normalization_modes", {}).get("observation.environment_state", "identity")
            ),
            "action": "MIN_MAX",
        }
        for key, mode in modes.items():
            mode = str(mode).upper()
            if mode == "IDENTITY":
                continue
            names = ("min", "max") if mode == "MIN_MAX" else ("mean", "std")
            heads = ["normalize_targets", "unnormalize_outputs"] if key == "action" else ["normalize_inputs"]
            for head in heads:
                for s in names:
                    tensors[f"{head}.buffer_{key.replace('.', '_')}.{s}"] = stats[key][s].clone()
    else:  # lerobot >= 0.4 processor pipeline files
        flat = {f"{k}.{s}": v.clone() for k, st in stats.items() for s, v in st.items()}
        feats = {
            k: {"type": t, "shape": [d_]}
            for k, t, d_ in [
                ("observation.state", "STATE", STATE_DIM),
                ("observation.environment_state", "ENV", ENV_DIM),
                ("action", "ACTION", ACTION_DIM),
            ]
        }
        for pipe, reg, idx in [
            ("policy_preprocessor", "normalizer_processor", 3),
            ("policy_postprocessor", "unnormalizer_processor", 0),
        ]:
            state_file = f"{pipe}_step_{idx}_{reg}.safetensors"
            save_file(flat, str(d / state_file))
            steps = [
                {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}}
            ] * idx + [
                {
                    "registry_name": reg,
                    "config": {"eps": 1e-8, "features": feats, "norm_map": cfg["normalization_mapping"]},
                    "state_file": state_file,
                }
            ]
            (d / f"{pipe}.json").write_text(json.dumps({"name": pipe, "steps": steps}))
    save_file(tensors, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    return d


def load_ours(ck):
    net = ConditionalUnet1D(**ck.config["model"])
    net.load_state_dict(ck.model_state)
    return net.eval(), LinearNormalizer().load_flat_state(ck.normalizer_state)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("layout", ["draccus", "legacy"])
def test_unet_matches_lerobot_structure(tmp_path, layout):
    mirror = mirror_unet()
    ck = load_lerobot_dir(write_dir(tmp_path, base_config(layout), mirror, make_stats()))
    net, _ = load_ours(ck)
    c = ck.config
    assert c["model"] == {
        "input_dim": ACTION_DIM,
        "local_cond_dim": None,
        "global_cond_dim": (STATE_DIM + ENV_DIM) * N_OBS,
        "diffusion_step_embed_dim": DSED,
        "down_dims": DOWN,
        "kernel_size": KERNEL,
        "n_groups": GROUPS,
        "cond_predict_scale": True,
    }
    assert c["obs_keys"] == ["observation.state", "observation.environment_state"]
    assert (c["horizon"], c["n_obs_steps"], c["n_action_steps"], c["action_start"]) == (
        HORIZON,
        N_OBS,
        N_ACT,
        1,
    )
    assert c["obs_as_global_cond"] and c["lerobot_layout"] == layout
    g = torch.Generator().manual_seed(0)
    x, cond = (
        torch.randn(3, HORIZON, ACTION_DIM, generator=g),
        torch.randn(3, (STATE_DIM + ENV_DIM) * N_OBS, generator=g),
    )
    with torch.no_grad():
        for t in (torch.tensor([0, 7, 19]), torch.tensor(5)):
            want = mirror(x, t, global_cond=cond)
            assert torch.allclose(net(x, t, global_cond=cond), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "layout, env_mode, normalization",
    [
        ("legacy", "MIN_MAX", "buffers"),
        ("draccus", "MIN_MAX", "buffers"),
        ("draccus", "MEAN_STD", "buffers"),
        ("draccus", "IDENTITY", "buffers"),
        ("draccus", "MIN_MAX", "processor"),
        ("draccus", "IDENTITY", "processor"),
    ],
)
def test_normalisation_follows_lerobot(tmp_path, layout, env_mode, normalization):
    stats = make_stats(1)
    ck = load_lerobot_dir(
        write_dir(tmp_path, base_config(layout, env_mode), mirror_unet(), stats, normalization)
    )
    _, norm = load_ours(ck)
    keys = ck.config["normalizer_keys"]
    modes = ck.config["normalization_modes"]
    assert modes["observation.environment_state"] == env_mode and modes["observation.state"] == "MIN_MAX"
    legacy = normalization == "buffers"
    g = torch.Generator().manual_seed(2)
    for key, dim in [("observation.state", STATE_DIM), ("observation.environment_state", ENV_DIM)]:
        st = stats[key]
        x = st["min"] + torch.rand(5, dim, generator=g) * (st["max"] - st["min"] + 1)
        want = lerobot_normalize(x, st, modes[key], legacy=legacy)
        got = norm.normalize(x, keys[key])
        ok = st["max"] > st["min"] if modes[key] == "MIN_MAX" else st["std"] > 0
        assert torch.allclose(got[:, ok], want[:, ok], rtol=1e-5, atol=1e-5), key
        # A constant (zero-range) dim: at its constant value both give LeRobot's -1 (mean_std: 0).
        at = st["min"] if modes[key] == "MIN_MAX" else st["mean"]
        assert torch.allclose(
            norm.normalize(at, keys[key])[~ok],
            lerobot_normalize(at, st, modes[key], legacy=legacy)[~ok],
            atol=1e-5,
        )
    if env_mode == "IDENTITY":
        x = torch.randn(4, ENV_DIM) * 100
        assert torch.equal(norm.normalize(x, keys["observation.environment_state"]), x)
    y = torch.rand(5, ACTION_DIM, generator=g) * 2 - 1
    want = lerobot_unnormalize(y, stats["action"], "MIN_MAX", legacy=legacy)
    assert torch.allclose(norm.unnormalize(y, keys["action"]), want, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize(
    "normalization, sched", [("buffers", "DDPM"), ("processor", "DDPM"), ("buffers", "DDIM")]
)
def test_actions_match_lerobot_generate_actions(tmp_path, normalization, sched):
    """Full chunk: LeRobot's pipeline on the mirrored UNet vs the loaded UNet + normaliser + config, with the
    cond built as the config documents: cat([normalised obs[k] for k in obs_keys], -1).flatten(1)."""
    stats, mirror = make_stats(3), mirror_unet(3)
    cfg = base_config("draccus", "MIN_MAX", sched=sched)
    ck = load_lerobot_dir(write_dir(tmp_path, cfg, mirror, stats, normalization))
    net, norm = load_ours(ck)
    c = ck.config
    g = torch.Generator().manual_seed(4)
    batch = {
        k: stats[k]["min"] + torch.rand(3, N_OBS, d, generator=g) * (stats[k]["max"] - stats[k]["min"])
        for k, d in [("observation.state", STATE_DIM), ("observation.environment_state", ENV_DIM)]
    }
    want = lerobot_generate_actions(
        mirror,
        batch,
        obs_keys=["observation.state", "observation.environment_state"],
        stats=stats,
        modes={
            "observation.state": "min_max",
            "observation.environment_state": "min_max",
            "action": "min_max",
        },
        horizon=HORIZON,
        n_obs_steps=N_OBS,
        n_action_steps=N_ACT,
        action_dim=ACTION_DIM,
        scheduler_kwargs=dict(
            num_train_timesteps=20,
            beta_schedule="squaredcos_cap_v2",
            clip_sample=True,
            prediction_type="epsilon",
        ),
        num_inference_steps=10,
        legacy=normalization == "buffers",
        scheduler_type=sched,
        generator=torch.Generator().manual_seed(5),
    )
    cond = torch.cat([norm.normalize(batch[k], c["normalizer_keys"][k]) for k in c["obs_keys"]], -1).flatten(
        1
    )
    zeros = torch.zeros(3, c["horizon"], c["action_dim"])
    with torch.no_grad():
        sample = _denoise(
            net,
            make_scheduler(c["scheduler"], c["num_inference_steps"], c["default_sampler"]),
            zeros,
            torch.zeros_like(zeros, dtype=torch.bool),
            cond,
            torch.Generator().manual_seed(5),
            None,
            None,
        )
    s = c["action_start"]
    got = norm.unnormalize(sample[:, s : s + c["n_action_steps"]], c["normalizer_keys"]["action"])
    assert got.shape == (3, N_ACT, ACTION_DIM)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-3), (got - want).abs().max()


def test_scheduler_settings_and_ddim(tmp_path):
    ck = load_lerobot_dir(
        write_dir(tmp_path, base_config(sched="DDIM", num_inference_steps=None), mirror_unet(), make_stats())
    )
    assert ck.config["default_sampler"] == "ddim" and ck.config["num_inference_steps"] == 20
    assert ck.config["scheduler"] == {
        "num_train_timesteps": 20,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "squaredcos_cap_v2",
        "variance_type": "fixed_small",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "prediction_type": "epsilon",
    }


def test_dispatcher_detects_lerobot_dir(tmp_path):
    d = write_dir(tmp_path, base_config(), mirror_unet(), make_stats())
    assert load_checkpoint(d).source == "lerobot"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("ptype", ["act", "vqbet", "tdmpc", "pi0"])
def test_other_policy_types_refused(tmp_path, ptype):
    d = write_dir(tmp_path, base_config(type=ptype), mirror_unet(), make_stats())
    with pytest.raises(ValueError, match=f"'{ptype}' is not supported"):
        load_lerobot_dir(d)


def test_image_policy_without_encoder_weights_refused(tmp_path):
    """Image features are loaded (tests/test_vision.py); weights without the rgb encoder are named."""
    cfg = base_config()
    cfg["input_features"]["observation.image"] = {"type": "VISUAL", "shape": [3, 96, 96]}
    with pytest.raises(ValueError, match=r"no 'diffusion\.rgb_encoder\.\*' tensors.*observation\.image"):
        load_lerobot_dir(write_dir(tmp_path, cfg, mirror_unet(), make_stats()))


def test_corrupt_and_missing_files(tmp_path):
    d = write_dir(tmp_path, base_config(), mirror_unet(), make_stats())
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as e:
        load_lerobot_dir(d)
    assert str(w) in str(e.value)
    w.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="model.safetensors"):
        load_lerobot_dir(d)
    w.write_bytes(data)
    (d / "config.json").write_text('{"type": "diffusion", "n_obs')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_lerobot_dir(d)
    w.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_lerobot_dir(d)


def test_missing_tensors_and_stats_named(tmp_path):
    stats = make_stats()
    d = write_dir(tmp_path, base_config(), mirror_unet(), stats, name="a")
    from safetensors.torch import load_file

    t = load_file(str(d / "model.safetensors"))
    t2 = {k: v for k, v in t.items() if k != "normalize_inputs.buffer_observation_state.max"}
    save_file(t2, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"'observation\.state'.*\['max'\]"):
        load_lerobot_dir(d)
    t3 = dict(t)
    t3["normalize_inputs.buffer_observation_state.max"] = torch.full((STATE_DIM,), float("inf"))
    save_file(t3, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="not finite"):
        load_lerobot_dir(d)
    save_file(
        {k: v for k, v in t.items() if k != "diffusion.unet.final_conv.1.weight"},
        str(d / "model.safetensors"),
    )
    with pytest.raises(ValueError, match="final_conv.1.weight"):
        load_lerobot_dir(d)
    save_file(
        {k: v for k, v in t.items() if not k.startswith("diffusion.unet.")}, str(d / "model.safetensors")
    )
    with pytest.raises(ValueError, match="no 'diffusion.unet.\\*' tensors"):
        load_lerobot_dir(d)
    d2 = write_dir(tmp_path, base_config(down_dims=[32, 64]), mirror_unet(), stats, name="b")
    with pytest.raises(ValueError, match="disagree on the UNet.*down_dims"):
        load_lerobot_dir(d2)
    d3 = write_dir(tmp_path, base_config(), mirror_unet(), stats, normalization="none", name="c")
    for p in d3.glob("policy_*"):
        p.unlink()
    with pytest.raises(ValueError, match="no normalisation statistics for 'observation.state'"):
        load_lerobot_dir(d3)


def test_converts_to_our_format(tmp_path):
    from parapolicy.checkpoint import save_policy_dir

    ck = load_lerobot_dir(write_dir(tmp_path, base_config(), mirror_unet(), make_stats()))
    back = load_checkpoint(
        save_policy_dir(tmp_path / "converted", ck.config, ck.model_state, ck.normalizer_state)
    )
    assert {k: v for k, v in back.config.items() if not k.startswith("format")} == ck.config
    assert all(torch.equal(back.normalizer_state[k], v) for k, v in ck.normalizer_state.items())

"""real-stanford/diffusion_policy `.ckpt` adapter: checkpoints are built here from a tiny config with the real
key layout and pickled the way the workspace does (torch.save of {cfg, state_dicts, pickles}, dill when
importable), then loaded without dill's or diffusion_policy's help."""

from __future__ import annotations

import copy
import importlib.util
import os
import pickle

import pytest
import torch
from omegaconf import OmegaConf

from parapolicy.adapters.diffusion_policy import load_dp_ckpt
from parapolicy.adapters.safe_unpickle import UnsafePickleError, safe_torch_load
from parapolicy.checkpoint import load_checkpoint
from parapolicy.model import ConditionalUnet1D
from parapolicy.normalizer import LinearNormalizer
from tests.dp_reference import dp_predict_action, draw_reference_noise, make_scheduler

HAVE_DILL = importlib.util.find_spec("dill") is not None
PICKLERS = ["pickle"] + (["dill"] if HAVE_DILL else [])

OBS_DIM, ACTION_DIM, HORIZON, N_OBS, N_ACT = 4, 2, 8, 2, 4
SCHED = {
    "num_train_timesteps": 20,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "prediction_type": "epsilon",
}




def dp_cfg(global_cond: bool = True, resolved: bool = True, **policy_overrides) -> dict:
    """A train_diffusion_unet_lowdim_workspace cfg (key layout of the real yaml), shrunk."""
    input_dim = ACTION_DIM if global_cond else ACTION_DIM + OBS_DIM
    model = {
        "_target_": "diffusion_policy.model.diffusion.conditional_unet1d.ConditionalUnet1D",
        "input_dim": input_dim,
        "local_cond_dim": None,
        "global_cond_dim": OBS_DIM * N_OBS if global_cond else None,
        "diffusion_step_embed_dim": 8,
        "down_dims": [16, 32],
        "kernel_size": 3,
        "n_groups": 4,
        "cond_predict_scale": True,
    }
    policy = {
        "_target_": "diffusion_policy.policy.diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy",
        "model": model,
        "noise_scheduler": {"_target_": "diffusers.schedulers.scheduling_ddpm.DDPMScheduler", **SCHED},
        "horizon": HORIZON,
        "obs_dim": OBS_DIM,
        "action_dim": ACTION_DIM,
        "n_action_steps": N_ACT,
        "n_obs_steps": N_OBS,
        "num_inference_steps": 10,
        "obs_as_local_cond": False,
        "obs_as_global_cond": global_cond,
        "pred_action_steps_only": False,
        "oa_step_convention": True,
    }
    if not resolved:  # as in the yaml before OmegaConf.resolve (the eval resolver is never run by us)
        model["input_dim"] = (
            "${eval: ${task.action_dim} if ${obs_as_local_cond} or ${obs_as_global_cond} "
            "else ${task.obs_dim} + ${task.action_dim}}"
        )
        model["global_cond_dim"] = (
            "${eval: ${task.obs_dim}*${n_obs_steps} if ${obs_as_global_cond} else None}"
        )
        policy.update(
            horizon="${horizon}",
            obs_dim="${obs_dim}",
            n_obs_steps="${n_obs_steps}",
            n_action_steps="${eval:'${n_action_steps}+${n_latency_steps}'}",
            obs_as_global_cond="${obs_as_global_cond}",
        )
    policy.update(policy_overrides)
    return {
        "name": "train_diffusion_unet_lowdim",
        "_target_": "diffusion_policy.workspace.train_diffusion_unet_lowdim_workspace."
        "TrainDiffusionUnetLowdimWorkspace",
        "obs_dim": "${task.obs_dim}" if not resolved else OBS_DIM,
        "action_dim": ACTION_DIM,
        "keypoint_dim": 2,
        "task_name": "pusht_lowdim",
        "exp_name": "default",
        "horizon": HORIZON,
        "n_obs_steps": N_OBS,
        "n_action_steps": N_ACT,
        "n_latency_steps": 0,
        "past_action_visible": False,
        "keypoint_visible_rate": 1.0,
        "obs_as_local_cond": False,
        "obs_as_global_cond": global_cond,
        "pred_action_steps_only": False,
        "policy": policy,
        "ema": {
            "_target_": "diffusion_policy.model.diffusion.ema_model.EMAModel",
            "update_after_step": 0,
            "inv_gamma": 1.0,
            "power": 0.75,
            "min_value": 0.0,
            "max_value": 0.9999,
        },
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "lr": 1.0e-4,
            "betas": [0.95, 0.999],
            "eps": 1.0e-8,
            "weight_decay": 1.0e-6,
        },
        "training": {
            "device": "cuda:0",
            "seed": 42,
            "use_ema": True,
            "lr_scheduler": "cosine",
            "lr_warmup_steps": 500,
            "num_epochs": 5000,
            "max_train_steps": None,
        },
        "task": {
            "name": "pusht_lowdim",
            "obs_dim": OBS_DIM,
            "action_dim": ACTION_DIM,
            "keypoint_dim": 2,
            "env_runner": {
                "_target_": "diffusion_policy.env_runner.pusht_keypoints_runner.PushTKeypointsRunner",
                "n_test": 50,
                "test_start_seed": 100000,
            },
        },
    }


def build_parts(global_cond: bool = True, seed: int = 0):
    """-> (model, ema_model, normalizer) as DP would hold them after training."""
    g = torch.Generator().manual_seed(seed)
    cfg = dp_cfg(global_cond)["policy"]["model"]
    kwargs = {k: v for k, v in cfg.items() if k != "_target_"}
    torch.manual_seed(seed)
    model = ConditionalUnet1D(**kwargs)
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    norm = LinearNormalizer().fit(
        {
            "obs": torch.randn(200, OBS_DIM, generator=g) * 50 + 100,
            "action": torch.rand(200, ACTION_DIM, generator=g) * 500,
        }
    )
    return model, ema, norm


class _DummyMixin(torch.nn.Module):
    """DP's ModuleAttrMixin: an empty `_dummy_variable` parameter."""

    def __init__(self):
        super().__init__()
        self._dummy_variable = torch.nn.Parameter()


class _LowdimPolicyLike(_DummyMixin):
    """The module tree of DiffusionUnetLowdimPolicy: model, normalizer, mask_generator (+ the mixin)."""

    def __init__(self, unet, norm):
        super().__init__()
        self.model, self.normalizer, self.mask_generator = unet, norm, _DummyMixin()


def policy_state(unet: ConditionalUnet1D, norm: LinearNormalizer) -> dict:
    """DiffusionUnetLowdimPolicy.state_dict() (an OrderedDict with `_metadata`, as torch.save stores it)."""
    sd = _LowdimPolicyLike(copy.deepcopy(unet), copy.deepcopy(norm)).state_dict()
    assert {"_dummy_variable", "mask_generator._dummy_variable", "normalizer.params_dict.obs.scale"} <= set(
        sd
    )
    return sd


def save_ckpt(
    path, cfg: dict, parts, pickler: str = "pickle", use_ema: bool = True, extra: dict | None = None
):
    model, ema, norm = parts
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999))
    width = model.final_conv[1].out_channels
    model(
        torch.randn(1, HORIZON, width),
        3,
        global_cond=torch.randn(1, OBS_DIM * N_OBS) if width == ACTION_DIM else None,
    ).sum().backward()
    opt.step()
    state_dicts = {"model": policy_state(model, norm), "optimizer": opt.state_dict()}
    if use_ema:
        state_dicts["ema_model"] = policy_state(ema, norm)
    module = pickle
    if pickler == "dill":
        import dill

        module = dill
    payload = {
        "cfg": OmegaConf.create(cfg),
        "state_dicts": state_dicts,
        "pickles": {"_output_dir": module.dumps("/data/outputs/run")},
    }
    payload.update(extra or {})
    torch.save(payload, str(path), pickle_module=module)
    return path


@pytest.mark.parametrize("pickler", PICKLERS)
@pytest.mark.parametrize("global_cond", [True, False])
def test_loads_config_weights_and_normalizer(tmp_path, pickler, global_cond):
    parts = build_parts(global_cond)
    path = save_ckpt(tmp_path / "latest.ckpt", dp_cfg(global_cond), parts, pickler)
    ck = load_dp_ckpt(path)
    c = ck.config
    assert ck.source == "diffusion_policy_ckpt" and c["weights"] == "ema_model"
    assert (c["obs_keys"], c["obs_dims"], c["action_dim"]) == (["obs"], {"obs": OBS_DIM}, ACTION_DIM)
    assert (c["horizon"], c["n_obs_steps"], c["n_action_steps"], c["action_start"]) == (
        HORIZON,
        N_OBS,
        N_ACT,
        1,
    )
    assert c["obs_as_global_cond"] is global_cond and c["num_inference_steps"] == 10
    assert c["scheduler"] == SCHED
    want = {k: v for k, v in dp_cfg(global_cond)["policy"]["model"].items() if k != "_target_"}
    assert c["model"] == want
    ema_sd = parts[1].state_dict()
    assert set(ck.model_state) == set(ema_sd)
    assert all(torch.equal(ck.model_state[k], ema_sd[k]) for k in ema_sd)
    loaded_norm = LinearNormalizer().load_flat_state(ck.normalizer_state)
    assert sorted(loaded_norm.keys()) == ["action", "obs"]
    x = torch.randn(3, OBS_DIM)
    assert torch.equal(loaded_norm.normalize(x, "obs"), parts[2].normalize(x, "obs"))


def test_without_ema_uses_model(tmp_path):
    parts = build_parts()
    ck = load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", dp_cfg(), parts, use_ema=False))
    assert ck.config["weights"] == "model"
    sd = parts[0].state_dict()
    assert all(torch.equal(ck.model_state[k], sd[k]) for k in sd)


def test_unresolved_eval_interpolations_fall_back_without_running_them(tmp_path):
    parts = build_parts()
    ck = load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", dp_cfg(resolved=False), parts))
    assert (
        ck.config["model"]["input_dim"] == ACTION_DIM
        and ck.config["model"]["global_cond_dim"] == OBS_DIM * N_OBS
    )
    assert (ck.config["horizon"], ck.config["n_action_steps"], ck.config["obs_as_global_cond"]) == (
        HORIZON,
        N_ACT,
        True,
    )


def test_dispatcher_detects_ckpt(tmp_path):
    path = save_ckpt(tmp_path / "epoch=0100-test_mean_score=0.900.ckpt", dp_cfg(), build_parts())
    ck = load_checkpoint(path)
    assert ck.source == "diffusion_policy_ckpt" and ck.path == str(path)


@pytest.mark.parametrize("global_cond", [True, False])
def test_reference_sampling_matches_original_settings(tmp_path, global_cond):
    """Sampling what the loader returns (config + weights + normaliser) with the reference DDPM loop equals
    sampling the original objects with the original settings, given the same generator."""
    parts = build_parts(global_cond, seed=1)
    ck = load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", dp_cfg(global_cond), parts))
    c = ck.config
    net = ConditionalUnet1D(**c["model"])
    net.load_state_dict(ck.model_state)
    norm = LinearNormalizer().load_flat_state(ck.normalizer_state)
    obs = torch.randn(3, N_OBS, OBS_DIM) * 50 + 100

    def run(model, n, **kw):
        p = n.params_dict
        return dp_predict_action(
            model,
            obs,
            obs_scale=p["obs"]["scale"],
            obs_offset=p["obs"]["offset"],
            action_scale=p["action"]["scale"],
            action_offset=p["action"]["offset"],
            generator=torch.Generator().manual_seed(7),
            **kw,
        )

    got = run(
        net,
        norm,
        horizon=c["horizon"],
        n_obs_steps=c["n_obs_steps"],
        n_action_steps=c["n_action_steps"],
        action_dim=c["action_dim"],
        obs_as_global_cond=c["obs_as_global_cond"],
        oa_step_convention=c["action_start"] == c["n_obs_steps"] - 1,
        scheduler_kwargs=c["scheduler"],
        num_inference_steps=c["num_inference_steps"],
    )
    want = run(
        parts[1],
        parts[2],
        horizon=HORIZON,
        n_obs_steps=N_OBS,
        n_action_steps=N_ACT,
        action_dim=ACTION_DIM,
        obs_as_global_cond=global_cond,
        oa_step_convention=True,
        scheduler_kwargs=SCHED,
        num_inference_steps=10,
    )
    assert got["action"].shape == (3, N_ACT, ACTION_DIM) and got["action_pred"].shape == (
        3,
        HORIZON,
        ACTION_DIM,
    )
    assert torch.equal(got["action"], want["action"])
    assert torch.equal(got["action"], got["action_pred"][:, c["action_start"] : c["action_start"] + N_ACT])


@pytest.mark.parametrize("global_cond", [True, False])
def test_reference_explicit_noise_equals_generator_noise(global_cond):
    """dp_reference's explicit (init_noise, step_noise) path is the generator path with the draws made up
    front: the convention parapolicy's samplers follow (step_noise[k] at the k-th reverse step)."""
    model, _, norm = build_parts(global_cond, seed=2)
    p = norm.params_dict
    obs = torch.randn(2, N_OBS, OBS_DIM) * 50 + 100
    kw = dict(
        obs_scale=p["obs"]["scale"],
        obs_offset=p["obs"]["offset"],
        action_scale=p["action"]["scale"],
        action_offset=p["action"]["offset"],
        horizon=HORIZON,
        n_obs_steps=N_OBS,
        n_action_steps=N_ACT,
        action_dim=ACTION_DIM,
        obs_as_global_cond=global_cond,
        oa_step_convention=True,
        scheduler_kwargs=SCHED,
        num_inference_steps=10,
    )
    a = dp_predict_action(model, obs, generator=torch.Generator().manual_seed(3), **kw)
    D = ACTION_DIM if global_cond else ACTION_DIM + OBS_DIM
    timesteps = make_scheduler(SCHED, 10).timesteps
    init, steps = draw_reference_noise(torch.Generator().manual_seed(3), (2, HORIZON, D), timesteps)
    assert steps.shape == (10, 2, HORIZON, D)
    b = dp_predict_action(model, obs, init_noise=init, step_noise=steps, **kw)
    assert torch.equal(a["action_pred"], b["action_pred"])
    c = dp_predict_action(model, obs, init_noise=init, step_noise=steps + 0.1, **kw)
    assert not torch.allclose(a["action_pred"], c["action_pred"])


def test_oa_step_convention_false_and_latency(tmp_path):
    cfg = dp_cfg(oa_step_convention=False)
    ck = load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", cfg, build_parts()))
    assert ck.config["action_start"] == N_OBS
    cfg = dp_cfg()
    cfg["n_latency_steps"] = 1
    cfg["policy"]["n_action_steps"] = N_ACT + 1
    ck = load_dp_ckpt(save_ckpt(tmp_path / "b.ckpt", cfg, build_parts()))
    assert (ck.config["action_start"], ck.config["n_action_steps"], ck.config["n_latency_steps"]) == (
        2,
        N_ACT,
        1,
    )


# ---------------------------------------------------------------- refusal: code in the pickle


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("pickler", PICKLERS)
def test_os_system_via_reduce_is_refused_and_not_run(tmp_path, pickler):
    marker = tmp_path / "pwned"
    path = save_ckpt(
        tmp_path / "evil.ckpt",
        dp_cfg(),
        build_parts(),
        pickler,
        extra={"pickles": {"_output_dir": _Evil(marker)}},
    )
    with pytest.raises(UnsafePickleError, match=r"refused to unpickle global '(posix|os|nt)\.system'") as e:
        load_dp_ckpt(path)
    assert str(path) in str(e.value)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        torch.save({"x": _EvalEvil()}, str(tmp_path / "e.ckpt"))
        safe_torch_load(tmp_path / "e.ckpt")


@pytest.mark.skipif(not HAVE_DILL, reason="dill not installed")
def test_dill_serialised_function_is_refused(tmp_path):
    import dill

    path = tmp_path / "fn.ckpt"
    torch.save(
        {"cfg": OmegaConf.create(dp_cfg()), "state_dicts": {}, "pickles": {}, "hook": lambda x: x + 1},
        str(path),
        pickle_module=dill,
    )
    with pytest.raises(UnsafePickleError, match=r"dill\._dill\._create_(function|code)|dill\._dill\.\w+"):
        load_dp_ckpt(path)


def test_dill_load_type_only_maps_data_types():
    from parapolicy.adapters.safe_unpickle import allowed_global

    assert allowed_global("dill._dill", "_load_type")("dict") is dict
    with pytest.raises(UnsafePickleError, match="CodeType"):
        allowed_global("dill._dill", "_load_type")("CodeType")
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):
        allowed_global("_codecs", "encode")("x", "zlib_codec")


# ---------------------------------------------------------------- refusal: bad input


def test_truncated_and_corrupt_files(tmp_path):
    path = save_ckpt(tmp_path / "good.ckpt", dp_cfg(), build_parts())
    data = path.read_bytes()
    for name, blob in [
        ("trunc.ckpt", data[: len(data) // 2]),
        ("head.ckpt", data[:100]),
        ("garbage.ckpt", os.urandom(4096)),
        ("empty.ckpt", b""),
    ]:
        bad = tmp_path / name
        bad.write_bytes(blob)
        with pytest.raises(ValueError, match="truncated, corrupt") as e:
            load_dp_ckpt(bad)
        assert str(bad) in str(e.value)


@pytest.mark.parametrize(
    "target",
    [
        "diffusion_policy.policy.diffusion_transformer_lowdim_policy.DiffusionTransformerLowdimPolicy",
        "diffusion_policy.policy.bet_lowdim_policy.BETLowdimPolicy",
    ],
)
def test_unsupported_policy_types_named(tmp_path, target):
    cfg = dp_cfg(_target_=target)
    with pytest.raises(ValueError, match=target.rsplit(".", 1)[-1]):
        load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", cfg, build_parts()))


@pytest.mark.parametrize(
    "override, match",
    [
        ({"pred_action_steps_only": True}, "pred_action_steps_only"),
        ({"obs_as_local_cond": True, "obs_as_global_cond": False}, "obs_as_local_cond"),
        ({"predict_epsilon": True}, "predict_epsilon"),
    ],
)
def test_unsupported_options_named(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", dp_cfg(**override), build_parts()))


def test_non_ddpm_scheduler_and_transformer_model_named(tmp_path):
    cfg = dp_cfg()
    cfg["policy"]["noise_scheduler"]["_target_"] = "diffusers.schedulers.scheduling_ddim.DDIMScheduler"
    with pytest.raises(ValueError, match="DDIMScheduler"):
        load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", cfg, build_parts()))
    cfg = dp_cfg()
    cfg["policy"]["model"]["_target_"] = (
        "diffusion_policy.model.diffusion.transformer_for_diffusion.TransformerForDiffusion"
    )
    with pytest.raises(ValueError, match="TransformerForDiffusion"):
        load_dp_ckpt(save_ckpt(tmp_path / "b.ckpt", cfg, build_parts()))


def test_missing_keys_named(tmp_path):
    parts = build_parts()
    torch.save({"state_dicts": {}}, str(tmp_path / "nocfg.ckpt"))
    with pytest.raises(ValueError, match=r"lacks \['cfg'\]"):
        load_dp_ckpt(tmp_path / "nocfg.ckpt")
    torch.save({"some": "dict"}, str(tmp_path / "other.ckpt"))
    with pytest.raises(ValueError, match="cfg"):
        load_dp_ckpt(tmp_path / "other.ckpt")
    torch.save(parts[0].state_dict(), str(tmp_path / "bare_state_dict.ckpt"))
    with pytest.raises(ValueError, match="not a diffusion_policy workspace checkpoint"):
        load_dp_ckpt(tmp_path / "bare_state_dict.ckpt")
    # No normaliser in the policy state dict.
    path = save_ckpt(tmp_path / "nonorm.ckpt", dp_cfg(), parts)
    payload = torch.load(str(path), weights_only=False)
    for sd in (payload["state_dicts"]["model"], payload["state_dicts"]["ema_model"]):
        for k in [k for k in sd if k.startswith("normalizer.params_dict.action")]:
            del sd[k]
    torch.save(payload, str(path))
    with pytest.raises(ValueError, match=r"normalizer\.params_dict\.action\.scale"):
        load_dp_ckpt(path)


def test_cfg_disagreeing_with_weights_named(tmp_path):
    cfg = dp_cfg()
    cfg["policy"]["model"]["down_dims"] = [32, 64]
    with pytest.raises(ValueError, match="down_dims"):
        load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", cfg, build_parts()))


@pytest.mark.skipif(not HAVE_DILL, reason="dill not installed")
def test_dill_written_file_loads_with_dill_unimportable(tmp_path, monkeypatch):
    """The reader needs neither dill nor diffusion_policy: with both made unimportable, a dill-written file
    still loads."""
    import sys

    path = save_ckpt(tmp_path / "a.ckpt", dp_cfg(), build_parts(), "dill")
    for name in [m for m in sys.modules if m == "dill" or m.startswith("dill.")] + ["diffusion_policy"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import dill` now raises ImportError
    with pytest.raises(ImportError):
        import dill  # noqa: F401
    ck = load_dp_ckpt(path)
    assert ck.config["model"]["down_dims"] == [16, 32] and ck.config["weights"] == "ema_model"


def test_converts_to_our_format(tmp_path):
    """load -> save_policy_dir -> load_checkpoint keeps config, weights and normaliser."""
    from parapolicy.checkpoint import save_policy_dir

    ck = load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", dp_cfg(global_cond=False), build_parts(False)))
    out = save_policy_dir(tmp_path / "converted", ck.config, ck.model_state, ck.normalizer_state)
    back = load_checkpoint(out)
    assert back.source == "parapolicy"
    assert {k: v for k, v in back.config.items() if not k.startswith("format")} == ck.config
    assert all(torch.equal(back.model_state[k], v) for k, v in ck.model_state.items())
    assert all(torch.equal(back.normalizer_state[k], v) for k, v in ck.normalizer_state.items())


def test_non_finite_weights_or_normalizer_refused(tmp_path):
    model, ema, norm = build_parts()
    with torch.no_grad():
        ema.final_conv[1].weight[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN/inf in \['final_conv.1.weight'\]"):
        load_dp_ckpt(save_ckpt(tmp_path / "a.ckpt", dp_cfg(), (model, ema, norm)))
    model, ema, norm = build_parts()
    with torch.no_grad():
        norm.params_dict["action"]["scale"][0] = 0.0
    with pytest.raises(ValueError, match="normalizer 'action' has a zero or non-finite scale"):
        load_dp_ckpt(save_ckpt(tmp_path / "b.ckpt", dp_cfg(), (model, ema, norm)))


def test_legacy_non_zip_torch_format(tmp_path):
    """torch's pre-1.6 serialisation (no zip) goes through the same restricted unpickler."""
    model, ema, norm = build_parts()
    payload = {
        "cfg": OmegaConf.create(dp_cfg()),
        "state_dicts": {"model": policy_state(model, norm)},
        "pickles": {},
    }
    path = tmp_path / "old.ckpt"
    torch.save(payload, str(path), _use_new_zipfile_serialization=False)
    ck = load_dp_ckpt(path)
    assert ck.config["weights"] == "model"
    assert torch.equal(ck.model_state["final_conv.1.weight"], model.state_dict()["final_conv.1.weight"])
    payload["pickles"] = {"x": _Evil(tmp_path / "pwned")}
    torch.save(payload, str(path), _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafePickleError, match="system"):
        load_dp_ckpt(path)
    assert not (tmp_path / "pwned").exists()

"""The Hydra entry points as a user runs them: `python -m eval.run` (run dir, overrides, a bad value named),
a joblib multirun of 2 tiny jobs aggregated by `python -m eval.report`, and the launcher configs composing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from parapolicy.checkpoint import save_policy_dir
    from parapolicy.model import ConditionalUnet1D
    from parapolicy.normalizer import LinearNormalizer
    from parapolicy.train import TrainConfig, policy_config

    cfg = policy_config(TrainConfig(down_dims=(8, 16), n_groups=4, diffusion_step_embed_dim=16,
                                    num_train_timesteps=10), obs_dim=20, action_dim=2)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    norm = LinearNormalizer().fit({"obs": torch.rand(64, 20, generator=g) * 512,
                                   "action": 100 + torch.rand(64, 2, generator=g) * 300})
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_policy_dir(path, cfg, ConditionalUnet1D(**cfg["model"]).state_dict(), norm.state_dict())
    return str(path)


def run(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, HYDRA_FULL_ERROR="1", WANDB_SILENT="true")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


TINY = ["n_episodes=1", "n_envs=1", "max_steps=8", "num_threads=1", "progress=false", "probe_calls=1",
        "warmup_calls=0", "plots=false"]


def test_eval_run_cli_writes_results_and_prints_table(tiny_ckpt, tmp_path):
    out = tmp_path / "run"
    p = run(["-m", "eval.run", f"policy.path={tiny_ckpt}", *TINY, "wandb.mode=disabled", f"hydra.run.dir={out}",
             "samplers=[ddpm,{name:paraddpm,window:2,label:w2}]"])
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert list(res["samplers"]) == ["ddpm", "w2"] and res["samplers"]["w2"]["sampler_config"]["window"] == 2
    assert "| ddpm | 1 |" in p.stdout and "| w2 | 1 |" in p.stdout
    assert res["command"].startswith("python -m eval.run policy.path=") and "n_episodes=1" in res["command"]
    assert (out / ".hydra" / "config.yaml").exists()


def test_eval_run_cli_names_the_bad_key(tiny_ckpt, tmp_path):
    p = run(["-m", "eval.run", f"policy.path={tiny_ckpt}", *TINY, "sampler.window=0", f"hydra.run.dir={tmp_path}"])
    assert p.returncode != 0 and "samplers[0]" in p.stderr and "window" in p.stderr
    assert not (tmp_path / "episodes.jsonl").exists()


@pytest.mark.slow  # two worker processes each import torch: ~15 s on an idle 2-core CPU, minutes when loaded
def test_joblib_multirun_of_two_jobs_and_report(tiny_ckpt, tmp_path):
    sweep = tmp_path / "sweep"
    p = run(["-m", "eval.run", "-m", f"policy.path={tiny_ckpt}", *TINY, "wandb.mode=disabled",
             "samplers=[paraddpm]", "sampler.window=2,4", "hydra/launcher=local", f"hydra.sweep.dir={sweep}"],
            timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "JoblibLauncher" in p.stdout + p.stderr or "Joblib" in p.stdout + p.stderr
    jobs = sorted(d.name for d in sweep.iterdir() if (d / "results.json").exists())
    assert jobs == ["0", "1"]
    windows = {json.loads((sweep / j / "results.json").read_text())["samplers"]["paraddpm"]["sampler_config"]
               ["window"] for j in jobs}
    assert windows == {2, 4}
    r = run(["-m", "eval.report", str(sweep)])
    assert r.returncode == 0, r.stderr
    assert "sampler.window=2" in r.stdout and "sampler.window=4" in r.stdout
    rows = json.loads((sweep / "report.json").read_text())["rows"]
    assert len(rows) == 2 and (sweep / "report.png").exists() and (sweep / "report.md").exists()


def test_report_rejects_a_dir_without_results(tmp_path):
    r = run(["-m", "eval.report", str(tmp_path)])
    assert r.returncode != 0 and "no results.json" in r.stderr


def test_configs_compose_with_the_library_fields():
    from hydra import compose, initialize_config_dir

    from parapolicy.policy import SamplerConfig

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("eval", overrides=["sampler=warm", "hydra/launcher=local"], return_hydra_config=True)
    assert cfg.env.id == "parapolicy/PushT-v0" and cfg.policy.path == "pusht_keypoints"
    assert cfg.samplers == ["ddpm", "paraddpm"] and cfg.wandb.mode == "offline"
    fields = set(SamplerConfig.__dataclass_fields__) - {"name"}
    assert set(cfg.sampler) == fields and cfg.sampler.warm_start is True
    assert cfg.hydra.launcher.n_jobs == 2
    from eval.config import sampler_configs

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        fast = compose("eval", overrides=["sampler=fewest_rounds"])
    sc = sampler_configs(dict(fast.sampler), ["ddpm", "paraddpm"])
    assert sc["paraddpm"] == SamplerConfig("paraddpm", update="secant", start="zero", window=56, first_window=24,
                                           tol=0.03, atol="auto")
    assert sc["ddpm"].name == "ddpm"


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("eval", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 1


def test_eval_config_fields_are_the_hydra_keys():
    """One to one: every key of configs/eval.yaml is an EvalConfig field and back, and the sampler group's keys
    are SamplerConfig's knobs."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from eval.config import EvalConfig
    from parapolicy.sampler_config import SAMPLER_KNOBS

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("eval"), resolve=True)
    assert set(cfg) == EvalConfig.keys()
    assert set(cfg["sampler"]) == set(SAMPLER_KNOBS)
    ec = EvalConfig.from_dict(cfg)
    assert list(ec.sampler_configs) == cfg["samplers"]
    with pytest.raises(ValueError, match="config key 'n_envs'"):
        EvalConfig.from_dict(dict(cfg, n_envs=0))
    with pytest.raises(ValueError, match="config key 'n_epsiodes': unknown key"):
        EvalConfig.from_dict(dict(cfg, n_epsiodes=3))

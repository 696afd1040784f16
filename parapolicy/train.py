"""Train a low-dim Diffusion Policy (ConditionalUnet1D, global observation conditioning) on a replay buffer.

Diffusion Policy's recipe: epsilon-prediction DDPM loss, AdamW (lr 1e-4, betas (0.95, 0.999), weight decay
1e-6), cosine learning rate with 500 warm-up steps, EMA of the weights (power 0.75, max 0.9999) used for
evaluation, windows of `horizon` steps with pad_before = n_obs_steps - 1 and pad_after = n_action_steps - 1,
a 2% validation split (seed 42).

Run:  python -m parapolicy.train --out runs/pusht --max-steps 16000 --time-budget-min 100

The run directory holds `train_state.pt` (resumable: rerun the same command), `log.jsonl` (one line per
log interval) and `policy/` (our checkpoint format, EMA weights) rewritten atomically at each save.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from parapolicy.checkpoint import save_policy_dir
from parapolicy.data import (
    ReplayBuffer,
    find_pusht_zarr,
    pusht_keypoint_obs,
    sample_sequence,
    sequence_indices,
    validation_mask,
)
from parapolicy.model import ConditionalUnet1D
from parapolicy.normalizer import LinearNormalizer
from parapolicy.train_utils import (
    RunConfig,
    atomic_torch_save,
    ema_decay,
    ema_update,
    lr_lambda,
    parse_dataclass_args,
    raise_keyboard_interrupt,
)


@dataclass
class TrainConfig(RunConfig):
    """The low-dim run: the shared fields (`train_utils.RunConfig`, whose defaults are this run's) and these."""

    max_train_episodes: int | None = None
    """Diffusion Policy's pusht_lowdim keeps 90; None uses every training episode"""
    wandb: bool = False
    wandb_mode: str = "offline"

    def __post_init__(self):
        super().__post_init__()
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb_mode must be offline, online or disabled, got {self.wandb_mode!r}")


def make_windows(buffer: ReplayBuffer, cfg: TrainConfig, episode_mask: np.ndarray) -> dict[str, np.ndarray]:
    """All training windows: obs (N, n_obs_steps, 20), action (N, horizon, 2)."""
    idx = sequence_indices(buffer.episode_ends, cfg.horizon, pad_before=cfg.n_obs_steps - 1,
                           pad_after=cfg.n_action_steps - 1, episode_mask=episode_mask)
    obs_all, act_all = pusht_keypoint_obs(buffer), buffer.data["action"].astype(np.float32)
    obs = np.stack([sample_sequence(obs_all, i, cfg.horizon)[:cfg.n_obs_steps] for i in idx])
    act = np.stack([sample_sequence(act_all, i, cfg.horizon) for i in idx])
    return {"obs": obs, "action": act}


def policy_config(cfg: TrainConfig, obs_dim: int, action_dim: int) -> dict:
    return {
        "policy_type": "diffusion_unet_lowdim",
        "obs_keys": ["obs"],
        "obs_dims": {"obs": obs_dim},
        "action_start": cfg.n_obs_steps - 1,
        "action_dim": action_dim,
        "horizon": cfg.horizon,
        "n_obs_steps": cfg.n_obs_steps,
        "n_action_steps": cfg.n_action_steps,
        "obs_as_global_cond": True,
        "model": {"input_dim": action_dim, "local_cond_dim": None, "global_cond_dim": obs_dim * cfg.n_obs_steps,
                  "diffusion_step_embed_dim": cfg.diffusion_step_embed_dim, "down_dims": list(cfg.down_dims),
                  "kernel_size": cfg.kernel_size, "n_groups": cfg.n_groups, "cond_predict_scale": True},
        "scheduler": {"num_train_timesteps": cfg.num_train_timesteps, "beta_schedule": "squaredcos_cap_v2",
                      "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon"},
        "num_inference_steps": cfg.num_train_timesteps,
    }


def diffusion_loss(model, scheduler, obs_n, act_n, generator=None):
    """Epsilon-prediction loss on normalised data: obs_n (B, To, Do), act_n (B, H, Da)."""
    b = act_n.shape[0]
    noise = torch.randn(act_n.shape, generator=generator)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noisy = scheduler.add_noise(act_n, noise, t)
    pred = model(noisy, t, global_cond=obs_n.reshape(b, -1))
    return torch.nn.functional.mse_loss(pred, noise)


def train(cfg: TrainConfig) -> Path:
    from diffusers import DDPMScheduler

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    zpath = cfg.zarr or find_pusht_zarr()
    if zpath is None:
        raise FileNotFoundError("no Push-T replay buffer found; pass --zarr or set PARAPOLICY_PUSHT_ZARR")
    buffer = ReplayBuffer.load(zpath, keys=["state", "keypoint", "action"])
    val = validation_mask(buffer.n_episodes, cfg.val_ratio, cfg.seed)
    train_mask = ~val
    if cfg.max_train_episodes is not None:
        keep = np.flatnonzero(train_mask)
        rng = np.random.default_rng(cfg.seed)
        drop = rng.choice(keep, size=max(0, len(keep) - cfg.max_train_episodes), replace=False)
        train_mask[drop] = False
    tr, va = make_windows(buffer, cfg, train_mask), make_windows(buffer, cfg, val)
    obs_dim, act_dim = tr["obs"].shape[-1], tr["action"].shape[-1]

    pcfg = policy_config(cfg, obs_dim, act_dim)
    normalizer = LinearNormalizer().fit({"obs": torch.from_numpy(pusht_keypoint_obs(buffer)),
                                         "action": torch.from_numpy(buffer.data["action"])})
    tr_obs = normalizer.normalize(torch.from_numpy(tr["obs"]), "obs")
    tr_act = normalizer.normalize(torch.from_numpy(tr["action"]), "action")
    va_obs = normalizer.normalize(torch.from_numpy(va["obs"]), "obs")
    va_act = normalizer.normalize(torch.from_numpy(va["action"]), "action")

    torch.manual_seed(cfg.seed)
    model = ConditionalUnet1D(**pcfg["model"])
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.95, 0.999), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, cfg.max_steps))
    scheduler = DDPMScheduler(**pcfg["scheduler"])
    step, elapsed_before = 0, 0.0
    state_path = out / "train_state.pt"
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["lr_scheduler"])
        step, elapsed_before = st["step"], st.get("train_seconds", 0.0)
        torch.set_rng_state(st["torch_rng"])
        print(f"resumed from {state_path} at step {step}")
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=list))

    run = None
    if cfg.wandb:
        import wandb
        run = wandb.init(project="parapolicy", dir=str(out), mode=cfg.wandb_mode, config=dataclasses.asdict(cfg),
                         name=out.name, resume="allow", id=f"train-{out.name}")

    def save(final: bool = False):
        nonlocal elapsed_before
        total = elapsed_before + (time.time() - t_start)
        atomic_torch_save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                            "lr_scheduler": sched.state_dict(), "step": step, "train_seconds": total,
                            "torch_rng": torch.get_rng_state()}, state_path)
        meta = dict(pcfg, training={"steps": step, "train_seconds": round(total, 1), "batch_size": cfg.batch_size,
                                    "data": Path(zpath).name, "n_train_windows": int(len(tr_obs)),
                                    "command": cfg.extra.get("command", "")})
        save_policy_dir(out / "policy", meta, ema.state_dict(), normalizer.state_dict())

    gen = torch.Generator().manual_seed(cfg.seed + step)
    t_start = time.time()
    log_f = open(out / "log.jsonl", "a")
    losses = []
    model.train()
    try:
        while step < cfg.max_steps:
            idx = torch.randint(0, len(tr_obs), (cfg.batch_size,), generator=gen)
            loss = diffusion_loss(model, scheduler, tr_obs[idx], tr_act[idx], generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            d = ema_decay(step - 1, cfg.ema_power, cfg.ema_max)
            ema_update(ema, model, d)
            losses.append(loss.item())
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                rec = {"step": step, "loss": float(np.mean(losses)), "lr": sched.get_last_lr()[0],
                       "ema_decay": d, "seconds": round(elapsed_before + time.time() - t_start, 1)}
                if step % (cfg.log_every * 5) == 0 and len(va_obs):
                    with torch.no_grad():
                        g = torch.Generator().manual_seed(0)
                        rec["val_loss"] = float(diffusion_loss(ema, scheduler, va_obs, va_act, generator=g))
                losses = []
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                print(json.dumps(rec), flush=True)
                if run is not None:
                    run.log(rec, step=step)
            if step % cfg.save_every == 0:
                save()
            if cfg.time_budget_min and time.time() - t_start > cfg.time_budget_min * 60:
                print(f"time budget of {cfg.time_budget_min} min reached at step {step}; rerun to resume")
                break
    finally:
        save()
        log_f.close()
        if run is not None:
            run.finish()
    return out / "policy"


def parse_args(argv=None) -> TrainConfig:
    return parse_dataclass_args(TrainConfig, argv, description=__doc__, skip=("extra",))


def main(argv=None):
    import signal
    import sys

    # SIGTERM (and SIGINT, which a shell ignores for background jobs) stop training after a save.
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    cfg = parse_args(argv)
    cfg.extra["command"] = "python -m parapolicy.train " + " ".join(sys.argv[1:] if argv is None else argv)
    path = train(cfg)
    print(f"policy written to {path}")


if __name__ == "__main__":
    main()

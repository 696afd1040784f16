"""Train a small image Diffusion Policy on the Push-T demonstrations' 96x96 images, LeRobot's recipe at CPU size.

Architecture: LeRobot's DiffusionRgbEncoder family (ResNet-18 layout with GroupNorm, spatial softmax with
32 keypoints, Linear + ReLU; random 84x84 crop at training, centre crop at eval), here with `--width`
channels in the first stage (64 in resnet18) and `--blocks` BasicBlocks per stage (2 2 2 2 in resnet18), and
the ConditionalUnet1D conditioned on [agent_pos, image features] over n_obs_steps. Normalisation as LeRobot's
default mapping: image mean/std per channel (VISUAL: MEAN_STD), state and action to [-1, 1] (MIN_MAX).
Loss, AdamW, cosine schedule with warm-up and EMA as parapolicy.train.

Keys and units (the saved policy's predict_action): "observation.image" (B, To, 3, 96, 96) float in [0, 1],
"observation.state" (B, To, 2) agent position in pixels; actions in pixels.

Run:   python -m parapolicy.train_image --out runs/pusht_image --time-budget-min 80 --num-threads 1
Plan:  python -m parapolicy.train_image --out /tmp/plan --plan     (times a few steps, writes nothing else)

The run directory holds `train_state.pt` (model, EMA, optimiser, schedule, RNG; written atomically every
--save-every steps and on SIGTERM/SIGINT or the time budget), `log.jsonl` and `policy/` (our format, EMA
weights, loadable with `load_policy`). Rerunning the same command resumes, on another machine too (copy the
run directory).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from parapolicy.checkpoint import save_policy_dir
from parapolicy.data import ReplayBuffer, find_pusht_zarr, sample_sequence, sequence_indices, validation_mask
from parapolicy.image_cond import ImageConditioner
from parapolicy.model import ConditionalUnet1D
from parapolicy.normalizer import LinearNormalizer
from parapolicy.train_utils import (
    RunConfig,
    atomic_torch_save,
    ema_decay,
    ema_update,
    lr_lambda,
    parse_dataclass_args,
)

IMAGE, STATE = "observation.image", "observation.state"


@dataclass
class ImageTrainConfig(RunConfig):
    """The image run: the shared fields (`train_utils.RunConfig`) with this run's defaults where they differ,
    and the encoder's and --plan's."""

    out: str = "runs/pusht_image"
    """run directory; rerunning with the same directory resumes"""
    diffusion_step_embed_dim: int = 128
    batch_size: int = 32
    max_steps: int = 20000
    save_every: int = 250
    log_every: int = 50
    width: int = 16
    """channels of the first ResNet stage (resnet18: 64); stages have width, 2w, 4w, 8w"""
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    """BasicBlocks per stage (resnet18: 2 2 2 2)"""
    crop: int = 84
    num_kp: int = 32
    plan: bool = False
    """time --plan-steps optimiser steps and print the projected steps per budget; trains nothing"""
    plan_steps: int = 5

    def __post_init__(self):
        super().__post_init__()
        if self.width < 16 or self.width % 16:
            raise ValueError(f"width must be a multiple of 16 (GroupNorm uses C // 16 groups), got {self.width}")
        if len(self.blocks) != 4 or min(self.blocks) < 1:
            raise ValueError(f"blocks must be 4 counts >= 1, got {self.blocks}")
        if not 8 <= self.crop <= 96:
            raise ValueError(f"crop must be in [8, 96] (images are 96x96), got {self.crop}")


def vision_config(cfg: ImageTrainConfig) -> dict:
    return {"style": "lerobot", "encoder": "lerobot", "image_keys": [IMAGE],
            "image_shapes": {IMAGE: [3, 96, 96]}, "shared": True, "resize": None, "crop": [cfg.crop, cfg.crop],
            "imagenet_norm": False, "num_kp": cfg.num_kp, "width": cfg.width, "blocks": list(cfg.blocks),
            "norm": "group", "cond_order": [STATE, IMAGE]}


def policy_config(cfg: ImageTrainConfig) -> dict:
    feat = 2 * cfg.num_kp
    return {
        "policy_type": "image_unet_lerobot_style",
        "obs_keys": [STATE, IMAGE],
        "obs_dims": {STATE: 2, IMAGE: feat},
        "normalizer_keys": {STATE: "observation_state", "action": "action"},
        "action_start": cfg.n_obs_steps - 1, "action_dim": 2, "horizon": cfg.horizon,
        "n_obs_steps": cfg.n_obs_steps, "n_action_steps": cfg.n_action_steps, "obs_as_global_cond": True,
        "model": {"input_dim": 2, "local_cond_dim": None, "global_cond_dim": (2 + feat) * cfg.n_obs_steps,
                  "diffusion_step_embed_dim": cfg.diffusion_step_embed_dim, "down_dims": list(cfg.down_dims),
                  "kernel_size": cfg.kernel_size, "n_groups": cfg.n_groups, "cond_predict_scale": True},
        "scheduler": {"num_train_timesteps": cfg.num_train_timesteps, "beta_schedule": "squaredcos_cap_v2",
                      "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon"},
        "num_inference_steps": cfg.num_train_timesteps,
        "default_sampler": "ddpm",
        "vision": vision_config(cfg),
    }


def image_stats(img_u8: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean, std (3,) of images in [0, 1] over a random subset of frames (N, 96, 96, 3) uint8."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(img_u8), size=min(n, len(img_u8)), replace=False)
    x = torch.from_numpy(img_u8[np.sort(pick)]).float().div_(255).reshape(-1, 3)
    return x.mean(0), x.std(0)


class Windows:
    """Training windows of the replay buffer: images uint8 (N, 96, 96, 3), agent_pos, action."""

    def __init__(self, buffer: ReplayBuffer, cfg: ImageTrainConfig, mask: np.ndarray):
        self.idx = sequence_indices(buffer.episode_ends, cfg.horizon, pad_before=cfg.n_obs_steps - 1,
                                    pad_after=cfg.n_action_steps - 1, episode_mask=mask)
        self.cfg = cfg
        self.img = buffer.data["img_u8"]
        self.pos = buffer.data["state"][:, :2].astype(np.float32)
        self.act = buffer.data["action"].astype(np.float32)

    def __len__(self) -> int:
        return len(self.idx)

    def batch(self, rows) -> dict[str, torch.Tensor]:
        """-> {IMAGE: (B, To, 3, 96, 96) float [0, 1], STATE: (B, To, 2), "action": (B, H, 2)}."""
        to, h = self.cfg.n_obs_steps, self.cfg.horizon
        img = np.stack([sample_sequence(self.img, self.idx[r], h)[:to] for r in rows])
        pos = np.stack([sample_sequence(self.pos, self.idx[r], h)[:to] for r in rows])
        act = np.stack([sample_sequence(self.act, self.idx[r], h) for r in rows])
        img_t = torch.from_numpy(img).permute(0, 1, 4, 2, 3).float().div_(255)
        return {IMAGE: img_t, STATE: torch.from_numpy(pos), "action": torch.from_numpy(act)}


def load_buffer(zpath) -> ReplayBuffer:
    buf = ReplayBuffer.load(zpath, keys=["img", "state", "action"])
    img = buf.data.pop("img")
    buf.data["img_u8"] = np.clip(np.rint(img), 0, 255).astype(np.uint8)  # (N, 96, 96, 3); 4x less memory
    return buf


class _PolicyView(SimpleNamespace):
    """What ImageConditioner.condition reads from a policy."""


def loss_fn(unet, cond_net, view, scheduler, batch, generator, train=True):
    b = batch["action"].shape[0]
    feats = cond_net.encode({IMAGE: batch[IMAGE]}, train=train, generator=generator)[IMAGE]
    state = view.normalizer.normalize(batch[STATE], "observation_state")
    cond = torch.cat([state, feats], -1).reshape(b, -1)
    act = view.normalizer.normalize(batch["action"], "action")
    noise = torch.randn(act.shape, generator=generator)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    pred = unet(scheduler.add_noise(act, noise, t), t, global_cond=cond)
    return torch.nn.functional.mse_loss(pred, noise)


def train(cfg: ImageTrainConfig) -> Path:
    from diffusers import DDPMScheduler

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    zpath = cfg.zarr or find_pusht_zarr()
    if zpath is None:
        raise FileNotFoundError("no Push-T replay buffer found; pass --zarr or set PARAPOLICY_PUSHT_ZARR")
    buffer = load_buffer(zpath)
    val = validation_mask(buffer.n_episodes, cfg.val_ratio, cfg.seed)
    tr, va = Windows(buffer, cfg, ~val), Windows(buffer, cfg, val)
    pcfg = policy_config(cfg)
    normalizer = LinearNormalizer().fit({"observation_state": torch.from_numpy(tr.pos),
                                         "action": torch.from_numpy(tr.act)})
    mean, std = image_stats(buffer.data["img_u8"], seed=cfg.seed)
    pcfg["image_stats"] = {"mean": mean.tolist(), "std": std.tolist()}

    torch.manual_seed(cfg.seed)
    unet = ConditionalUnet1D(**pcfg["model"])
    cond_net = ImageConditioner(pcfg["vision"])
    with torch.no_grad():  # LeRobot MEAN_STD: (x - mean) / (std + 1e-8)
        cond_net.norm_scale_0.copy_((1 / (std + 1e-8)).reshape(3, 1, 1))
        cond_net.norm_offset_0.copy_((-mean / (std + 1e-8)).reshape(3, 1, 1))
    modules = torch.nn.ModuleDict({"unet": unet, "vision": cond_net})
    ema = copy.deepcopy(modules).requires_grad_(False)
    params = [p for p in modules.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.95, 0.999), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, cfg.max_steps))
    scheduler = DDPMScheduler(**pcfg["scheduler"])
    view = _PolicyView(normalizer=normalizer)
    gen = torch.Generator().manual_seed(cfg.seed)

    if cfg.plan:
        modules.train()
        times = []
        for _ in range(cfg.plan_steps + 1):
            t0 = time.perf_counter()
            rows = torch.randint(0, len(tr), (cfg.batch_size,), generator=gen).tolist()
            loss = loss_fn(unet, cond_net, view, scheduler, tr.batch(rows), gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        s = float(np.median(times[1:]))
        n_enc = sum(p.numel() for p in cond_net.parameters())
        n_unet = sum(p.numel() for p in unet.parameters())
        print(json.dumps({"seconds_per_step": round(s, 3), "batch_size": cfg.batch_size,
                          "images_per_step": cfg.batch_size * cfg.n_obs_steps, "encoder_params": n_enc,
                          "unet_params": n_unet, "threads": torch.get_num_threads(),
                          "steps_in_60_min": int(3600 / s), "steps_in_90_min": int(5400 / s)}))
        return out

    out.mkdir(parents=True, exist_ok=True)
    step, elapsed_before = 0, 0.0
    state_path = out / "train_state.pt"
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        modules.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["lr_scheduler"])
        step, elapsed_before = st["step"], st.get("train_seconds", 0.0)
        gen.set_state(st["gen_state"])
        print(f"resumed from {state_path} at step {step}")
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=list))
    t_start = time.time()

    def save():
        total = elapsed_before + (time.time() - t_start)
        atomic_torch_save({"model": modules.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                            "lr_scheduler": sched.state_dict(), "step": step, "train_seconds": total,
                            "gen_state": gen.get_state()}, state_path)
        meta = dict(pcfg, training={"steps": step, "train_seconds": round(total, 1), "batch_size": cfg.batch_size,
                                    "data": Path(zpath).name, "n_train_windows": len(tr),
                                    "command": cfg.extra.get("command", "")})
        save_policy_dir(out / "policy", meta, ema["unet"].state_dict(), normalizer.state_dict(),
                        encoder_state=ema["vision"].state_dict())

    log_f = open(out / "log.jsonl", "a")
    losses = []
    modules.train()
    try:
        while step < cfg.max_steps:
            rows = torch.randint(0, len(tr), (cfg.batch_size,), generator=gen).tolist()
            loss = loss_fn(unet, cond_net, view, scheduler, tr.batch(rows), gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            d = ema_decay(step - 1, cfg.ema_power, cfg.ema_max)
            ema_update(ema, modules, d)
            losses.append(loss.item())
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                rec = {"step": step, "loss": float(np.mean(losses)), "lr": sched.get_last_lr()[0], "ema_decay": d,
                       "seconds": round(elapsed_before + time.time() - t_start, 1)}
                if step % (cfg.log_every * 10) == 0 and len(va):
                    with torch.no_grad():
                        g = torch.Generator().manual_seed(0)
                        rows = torch.randint(0, len(va), (64,), generator=g).tolist()
                        ema.eval()
                        rec["val_loss"] = float(loss_fn(ema["unet"], ema["vision"], view, scheduler,
                                                        va.batch(rows), g, train=False))
                losses = []
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                print(json.dumps(rec), flush=True)
            if step % cfg.save_every == 0:
                save()
            if cfg.time_budget_min and time.time() - t_start > cfg.time_budget_min * 60:
                print(f"time budget of {cfg.time_budget_min} min reached at step {step}; rerun to resume")
                break
    finally:
        save()
        log_f.close()
    return out / "policy"


def parse_args(argv=None) -> ImageTrainConfig:
    return parse_dataclass_args(ImageTrainConfig, argv, description=__doc__, skip=("extra",))


def main(argv=None):
    import signal
    import sys

    from parapolicy.train_utils import raise_keyboard_interrupt

    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    cfg = parse_args(argv)
    cfg.extra["command"] = "python -m parapolicy.train_image " + " ".join(sys.argv[1:] if argv is None else argv)
    path = train(cfg)
    if not cfg.plan:
        print(f"policy written to {path}")


if __name__ == "__main__":
    main()

"""Pieces every training loop shares (train, train_image, distill, consistency): atomic checkpoint saves,
the EMA of the weights, the learning-rate schedule, the signal handler that turns SIGTERM into a
KeyboardInterrupt (so a killed run saves its state on the way out) and the CLI over a config dataclass; and
the config fields the two policy-training runs (train, train_image) share, `RunConfig`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class RunConfig:
    """What a policy-training run (`train.TrainConfig`, `train_image.ImageTrainConfig`) is configured by besides
    its observations: data, window sizes, UNet, optimiser, EMA, budget, logging. The defaults are the low-dim
    run's (Diffusion Policy's recipe); a subclass overrides its own by redeclaring the field."""

    out: str = "runs/pusht"
    """run directory (checkpoints, logs); rerunning with the same directory resumes"""
    zarr: str | None = None
    """Push-T replay buffer; default: ../shared/pusht/pusht_cchi_v7_replay.zarr (see parapolicy.data)"""
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    down_dims: tuple[int, ...] = (64, 128, 256)
    diffusion_step_embed_dim: int = 256
    kernel_size: int = 5
    n_groups: int = 8
    num_train_timesteps: int = 100
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    max_steps: int = 16000
    """optimizer steps in all (the cosine schedule spans them)"""
    time_budget_min: float | None = None
    """stop (after saving) when this session has trained this many minutes; rerun to resume"""
    val_ratio: float = 0.02
    ema_power: float = 0.75
    ema_max: float = 0.9999
    save_every: int = 500
    log_every: int = 100
    seed: int = 42
    num_threads: int | None = None
    extra: dict = field(default_factory=dict)
    """not a flag: what the run records beside the fields (main sets "command")"""

    def __post_init__(self):
        levels = 2 ** (len(self.down_dims) - 1)
        if self.horizon % levels:
            raise ValueError(f"horizon must be divisible by 2^(len(down_dims) - 1) = {levels} for the UNet, "
                             f"got {self.horizon}")
        if not 1 <= self.n_obs_steps <= self.horizon:
            raise ValueError(f"n_obs_steps must be in [1, horizon], got {self.n_obs_steps}")
        if self.batch_size < 1 or self.max_steps < 1:
            raise ValueError("batch_size and max_steps must be >= 1")


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a sibling temporary file, then rename it over `path` (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def ema_decay(step: int, power: float, max_value: float) -> float:
    """Diffusion Policy's EMA warm-up: 1 - (1 + step)^-power, clipped to [0, max_value]."""
    return float(min(max(1 - (1 + step) ** -power, 0.0), max_value))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """In place: every parameter p_ema <- decay * p_ema + (1 - decay) * p_model; buffers are copied.
    `ema` and `model` have the same architecture (ema is usually a deepcopy of model)."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def lr_lambda(warmup: int, total: int):
    """LambdaLR factor of step: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return f


def raise_keyboard_interrupt(signum, frame):
    """Signal handler (SIGTERM, SIGINT): raise KeyboardInterrupt, which the training loops catch to save."""
    raise KeyboardInterrupt(f"signal {signum}")


def parse_dataclass_args(cls, argv=None, description: str | None = None, skip: tuple[str, ...] = ("command",)):
    """A CLI over a config dataclass: one --flag-name per field (bool fields as --x / --no-x; tuple fields as
    one or more ints, --down-dims 64 128 256; int, float, else str), defaults from the dataclass. Returns
    cls(**parsed). Fields in `skip` are not exposed."""
    import argparse
    import dataclasses

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    tuples = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        typ = str(f.type)
        if typ == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif typ.startswith("tuple"):
            p.add_argument(flag, type=int, nargs="+", default=list(f.default))
            tuples.append(f.name)
        elif typ.startswith("int"):
            p.add_argument(flag, type=int, default=f.default)
        elif typ.startswith("float"):
            p.add_argument(flag, type=float, default=f.default)
        else:
            p.add_argument(flag, type=str, default=f.default)
    args = vars(p.parse_args(argv))
    for name in tuples:
        args[name] = tuple(args[name])
    return cls(**args)

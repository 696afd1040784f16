"""Pieces every training loop shares (train, train_image, distill, consistency): atomic checkpoint saves,
the EMA of the weights, the learning-rate schedule and the signal handler that turns SIGTERM into a
KeyboardInterrupt (so a killed run saves its state on the way out).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


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
    """A CLI over a config dataclass: one --flag-name per field (bool fields as --x / --no-x; int, float, else
    str), defaults from the dataclass. Returns cls(**parsed). Fields in `skip` are not exposed."""
    import argparse
    import dataclasses

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        typ = str(f.type)
        if typ == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif typ.startswith("int"):
            p.add_argument(flag, type=int, default=f.default)
        elif typ.startswith("float"):
            p.add_argument(flag, type=float, default=f.default)
        else:
            p.add_argument(flag, type=str, default=f.default)
    return cls(**vars(p.parse_args(argv)))

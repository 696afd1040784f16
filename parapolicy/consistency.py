"""Consistency distillation (LCM-style, Song et al. 2023 / Luo et al. 2023) of a DDPM epsilon policy into a
1-4 step student sampled by the `consistency` sampler. Math: parapolicy.consistency_math; docs/consistency.md.

One training step, on a batch of normalised (obs, action) windows:

    n ~ U{1..T}, m = max(n - k, 0)                       k = --skip (10 of 100)
    x_n = alpha_n x + sigma_n eps
    x_m = teacher ODE step n -> m (DDIM, or --solver heun), no gradient
    target = f_target(x_m, m), no gradient               (m = 0: x_m itself, f(x, 0) = x)
    loss = w(n) d(f_theta(x_n, n), target)               d = l2 (default) or pseudo-Huber
                                                         w = snr (default: eps-space) or uniform

f_target is an EMA of the student's weights with decay --target-ema (0.95, LCM's choice; 0 = the online weights
under stop-gradient, as improved consistency training and alexander-soare/consistency_policy do). The student
and the target start from the teacher's weights (the shipped checkpoint holds EMA weights). The saved student is
the target network (the online weights with --target-ema 0).

Run:   python -m parapolicy.consistency --teacher pusht_keypoints --out runs/consistency --steps 8000
Rerunning the same command resumes from out/train_state.pt (student, target, optimiser, lr schedule, step, RNG).
--plan times a few steps and prints the projected minutes (writes nothing). out/policy is an ordinary policy
directory (load_policy) whose default sampler is `consistency` at --sample-steps steps, rewritten at each save.
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

from parapolicy.checkpoint import LoadedCheckpoint, load_checkpoint, save_policy_dir
from parapolicy.consistency_math import (
    DISTANCES,
    SOLVERS,
    WEIGHTINGS,
    consistency_from_eps,
    distance,
    levels,
    loss_weight,
    sampling_levels,
    teacher_ode_step,
)
from parapolicy.ddim_teacher import DDIMTeacher
from parapolicy.distill_data import load_windows
from parapolicy.distill_math import scheduler_grid
from parapolicy.normalizer import LinearNormalizer
from parapolicy.schedule import per_row
from parapolicy.train_utils import atomic_torch_save, ema_update, lr_lambda, parse_dataclass_args


@dataclass
class ConsistencyConfig:
    teacher: str = "pusht_keypoints"
    """DDPM epsilon teacher: a built-in name or a checkpoint directory"""
    out: str = "runs/consistency"
    """run directory: train_state.pt, log.jsonl, policy/, summary.json"""
    steps: int = 8000
    """optimiser steps in all (the cosine schedule spans them); 0 writes the teacher's weights as a consistency
    student (the untrained baseline of the consistency sampler)"""
    batch_size: int = 256
    lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-6
    skip: int = 10
    """k: the teacher step goes from level n to n - k"""
    solver: str = "ddim"
    """teacher ODE step: ddim (one teacher call) or heun (two)"""
    target_ema: float = 0.95
    """EMA decay of the target network; 0 = online weights with stop-gradient"""
    distance: str = "l2"
    """l2 (mean squared error) or huber (pseudo-Huber)"""
    weighting: str = "snr"
    """per-level weight of the distance: snr (max(alpha, alpha_min)^2 / sigma^2: the l2 loss in eps space) or
    uniform (LCM)"""
    huber_c: float | None = None
    """pseudo-Huber c; None = 0.00054 sqrt(elements per sample)"""
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    alpha_min: float = 1 / 80
    """floor of alpha in the student's eps -> x0 conversion (changes only n = T on the shipped schedule)"""
    sample_steps: int = 2
    """the student's default consistency step count (its config's num_inference_steps)"""
    eval_every: int = 250
    """open-loop score every this many steps (0 = only at the end)"""
    eval_batch: int = 64
    """validation windows of the open-loop score"""
    log_every: int = 50
    save_every: int = 250
    seed: int = 0
    num_threads: int | None = None
    time_budget_min: float | None = None
    """stop (after saving) when this invocation has trained this long; rerun to resume"""
    zarr: str | None = None
    """Push-T replay buffer; default: the one parapolicy.data finds"""
    val_ratio: float = 0.02
    wandb: bool = False
    wandb_mode: str = "offline"
    command: str = ""
    """the command line, recorded in the student's config (set by main)"""

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be an integer >= 0 (0: the teacher's weights as a student), got "
                             f"{self.steps!r}")
        for key in ("batch_size", "skip", "sample_steps", "log_every", "save_every"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {v!r}")
        for key in ("warmup_steps", "eval_every", "eval_batch"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not 0 <= self.target_ema < 1:
            raise ValueError(f"target_ema must be in [0, 1), got {self.target_ema}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not (self.sigma_data > 0 and self.timestep_scaling > 0 and 0 <= self.alpha_min < 1):
            raise ValueError("sigma_data and timestep_scaling must be > 0 and alpha_min in [0, 1)")
        if self.time_budget_min is not None and self.time_budget_min < 0:
            raise ValueError(f"time_budget_min must be >= 0, got {self.time_budget_min}")


# ------------------------------------------------------------------------------------------------ pieces
class Teacher:
    """A DDPM epsilon policy's UNet with its schedule: eps(x (B,H,D), t (B,) long, cond (B,C)) -> (B,H,D)."""

    def __init__(self, ckpt: LoadedCheckpoint):
        d = DDIMTeacher.from_checkpoint(ckpt)
        if d.prediction_type != "epsilon":
            raise ValueError(f"consistency distillation needs an epsilon teacher, {ckpt.path or ckpt.source} "
                             f"predicts {d.prediction_type!r}")
        self.net = d.net.eval().requires_grad_(False)
        self.alphas_cumprod, self.clip = d.alphas_cumprod, d.clip_range
        self.T = int(self.alphas_cumprod.shape[0])


def student_f(net, x: torch.Tensor, n: torch.Tensor, cond: torch.Tensor, ac: torch.Tensor, cfg: ConsistencyConfig,
              clip: float | None) -> torch.Tensor:
    """f_theta(x (B,H,D), n (B,)) with the student's UNet (model timestep n - 1, clamped at 0 for n = 0)."""
    eps = net(x, (n - 1).clamp(min=0), global_cond=cond)
    return consistency_from_eps(x, eps, n, ac, cfg.sigma_data, cfg.timestep_scaling, cfg.alpha_min, clip)


def consistency_batch(student, target, teacher: Teacher, x0: torch.Tensor, cond: torch.Tensor,
                      cfg: ConsistencyConfig, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One consistency-distillation batch: x0 (B,H,D) normalised actions, cond (B,C) ->
    {"loss": (B,) distance (backpropagates into student), "n": (B,) levels}."""
    b = x0.shape[0]
    ac = teacher.alphas_cumprod
    n = torch.randint(1, teacher.T + 1, (b,), generator=generator)
    m = (n - cfg.skip).clamp(min=0)
    eps = torch.randn(x0.shape, generator=generator)
    a_n, s_n = levels(ac, n)
    x_n = (per_row(a_n, x0.to(torch.float64)) * x0.to(torch.float64) + per_row(s_n, eps) * eps.to(torch.float64)).to(x0.dtype)
    with torch.no_grad():
        x_m = teacher_ode_step(lambda x, t: teacher.net(x, t, global_cond=cond), x_n, n, m, ac, cfg.solver,
                               teacher.clip)
        tgt = student_f(target, x_m, m, cond, ac, cfg, teacher.clip)
    pred = student_f(student, x_n, n, cond, ac, cfg, None)
    w = loss_weight(n, ac, cfg.weighting, cfg.alpha_min).to(pred.dtype)
    return {"loss": w * distance(pred, tgt.to(pred.dtype), cfg.distance, cfg.huber_c), "n": n}


def student_config(teacher_cfg: dict, cfg: ConsistencyConfig, info: dict) -> dict:
    """The student's policy config: the teacher's, default_sampler "consistency" at cfg.sample_steps steps, and a
    `consistency` entry with what the sampler needs (skip, sigma_data, timestep_scaling, alpha_min) and how the
    student was made."""
    out = {k: v for k, v in teacher_cfg.items() if k not in ("training", "distillation", "consistency")}
    out.update(default_sampler="consistency", num_inference_steps=cfg.sample_steps,
               consistency=dict(info, skip=cfg.skip, sigma_data=cfg.sigma_data,
                                timestep_scaling=cfg.timestep_scaling, alpha_min=cfg.alpha_min, solver=cfg.solver,
                                target_ema=cfg.target_ema, distance=cfg.distance, weighting=cfg.weighting,
                                batch_size=cfg.batch_size,
                                lr=cfg.lr, total_steps=cfg.steps, command=cfg.command,
                                teacher_training=teacher_cfg.get("training", {})))
    return out


# ------------------------------------------------------------------------------------------ open-loop score
class OpenLoopScore:
    """Mean squared gaps (normalised action units) on validation windows from one fixed x_T and re-noising noise:
    gap_cm{1,2}: the student's 1- and 2-step consistency samples vs the teacher's DDIM-T (the ODE solution the
    student distils), next to gap_teacher_ddim2 (the teacher's own DDIM-2 vs DDIM-T); data_mse_*: each sample vs
    the demonstrated action window (a multimodal target, so the teacher's own level, data_mse_teacher_ddim, is
    the floor to compare with, not 0)."""

    def __init__(self, teacher: Teacher, ckpt: LoadedCheckpoint, cfg: ConsistencyConfig, val_obs, val_act):
        n = min(cfg.eval_batch, len(val_obs))
        self.cond = val_obs[:n]
        self.n = n
        g = torch.Generator().manual_seed(12345)
        shape = tuple(val_act[:n].shape)
        self.x_T = torch.randn(shape, generator=g)
        self.noise = torch.randn((2, *shape), generator=g)
        self.teacher, self.cfg = teacher, cfg
        sk = ckpt.config["scheduler"]
        self.sched_cfg = {"scheduler": sk, "num_inference_steps": 2,
                          "consistency": {"skip": cfg.skip, "sigma_data": cfg.sigma_data,
                                          "timestep_scaling": cfg.timestep_scaling, "alpha_min": cfg.alpha_min}}
        self.baseline = {}
        if n:
            d = DDIMTeacher.from_checkpoint(ckpt, net=teacher.net)
            full = scheduler_grid(dict(sk, timestep_spacing="leading", steps_offset=0), teacher.T)
            self.ref = d.sample(self.x_T, self.cond, full)
            two = scheduler_grid(dict(sk, timestep_spacing="leading", steps_offset=teacher.T // 2 - 1), 2)
            ddim2 = d.sample(self.x_T, self.cond, two)
            self.data = val_act[:n]
            self.baseline = {"gap_teacher_ddim2": float(((ddim2 - self.ref) ** 2).mean()),
                             "data_mse_teacher_ddim": float(((self.ref - self.data) ** 2).mean()),
                             "data_mse_teacher_ddim2": float(((ddim2 - self.data) ** 2).mean())}

    def __call__(self, net) -> dict[str, float]:
        from parapolicy.sampling.consistency import consistency_scheduler, sample_consistency

        if not self.n:
            return {}
        sch = consistency_scheduler(self.sched_cfg)
        was = net.training
        net.eval()
        out = dict(self.baseline)
        for k in (1, 2):
            x = sample_consistency(lambda x, t, c: net(x, t, global_cond=c), sch, self.x_T, noise=self.noise[:k],
                                   cond=self.cond, num_inference_steps=k)
            out[f"gap_cm{k}"] = float(((x - self.ref) ** 2).mean())
            out[f"data_mse_cm{k}"] = float(((x - self.data) ** 2).mean())
        net.train(was)
        return out


def load_data(cfg: ConsistencyConfig, ckpt: LoadedCheckpoint):
    return load_windows(cfg, ckpt.config, LinearNormalizer().load_flat_state(ckpt.normalizer_state))


# ---------------------------------------------------------------------------------------------- training
def train(cfg: ConsistencyConfig, data=None) -> dict | None:
    """Train (resumable) -> the summary (also out/summary.json), or None when the time budget stopped it first.
    data: optional ((obs (N, C), action (N, H, D)), (val_obs, val_act)) normalised; default the Push-T windows."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "consistency_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    ckpt = load_checkpoint(cfg.teacher)
    teacher = Teacher(ckpt)
    sampling_levels(teacher.T, cfg.skip, cfg.sample_steps)      # ValueError when the sampler could not run it
    (tr_obs, tr_act), (va_obs, va_act) = data if data is not None else load_data(cfg, ckpt)
    torch.manual_seed(cfg.seed)
    student = copy.deepcopy(teacher.net).requires_grad_(True).train()
    target = copy.deepcopy(teacher.net).requires_grad_(False).train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.95, 0.999), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, cfg.steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    step, seconds = 0, 0.0
    state_path = out / "train_state.pt"
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        student.load_state_dict(st["model"])
        target.load_state_dict(st["target"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["lr_scheduler"])
        gen.set_state(st["rng"])
        step, seconds = st["step"], st["train_seconds"]
        print(f"resumed at step {step}", flush=True)
    if step >= cfg.steps and (out / "summary.json").exists():
        print(f"already trained ({step} steps): {out / 'policy'}", flush=True)
        return json.loads((out / "summary.json").read_text())
    score = OpenLoopScore(teacher, ckpt, cfg, va_obs, va_act)
    final = target if cfg.target_ema > 0 else student
    info = {"teacher": ckpt.path or ckpt.source}
    run = None
    if cfg.wandb:
        import wandb
        run = wandb.init(project="parapolicy", dir=str(out), mode=cfg.wandb_mode, config=dataclasses.asdict(cfg),
                         name=f"consistency-{out.name}", resume="allow", id=f"consistency-{out.name}")
    t0 = time.time()
    deadline = t0 + cfg.time_budget_min * 60 if cfg.time_budget_min is not None else None
    print(f"consistency distillation: teacher {info['teacher']}, T={teacher.T}, skip {cfg.skip}, solver "
          f"{cfg.solver}, target_ema {cfg.target_ema}, {cfg.distance}; steps {step}/{cfg.steps}, batch "
          f"{cfg.batch_size}", flush=True)

    def elapsed() -> float:
        return seconds + time.time() - t0

    def save():
        atomic_torch_save({"model": student.state_dict(), "target": target.state_dict(),
                           "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(), "step": step,
                           "rng": gen.get_state(), "train_seconds": elapsed()}, state_path)
        meta = dict(info, train_steps=step, train_seconds=round(elapsed(), 1))
        save_policy_dir(out / "policy", student_config(ckpt.config, cfg, meta), final.state_dict(),
                        ckpt.normalizer_state)

    def log(rec: dict):
        log_f.write(json.dumps(rec) + "\n")
        log_f.flush()
        print(json.dumps(rec), flush=True)
        if run is not None:
            run.log(rec, step=rec["step"])

    bar = _progress(cfg.steps, step)
    losses: list[tuple[float, float, float]] = []
    try:
        with open(out / "log.jsonl", "a") as log_f:
            if step == 0 and cfg.eval_every:
                log({"step": 0, **score(final)})
            while step < cfg.steps:
                idx = torch.randint(0, len(tr_obs), (cfg.batch_size,), generator=gen)
                res = consistency_batch(student, target, teacher, tr_act[idx], tr_obs[idx], cfg, generator=gen)
                loss = res["loss"].mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                ema_update(target, student, cfg.target_ema)
                hi = (res["n"] > teacher.T // 2).to(res["loss"].dtype)
                losses.append((loss.item(), float((res["loss"].detach() * hi).sum()), float(hi.sum())))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3g}", refresh=False)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    a = np.asarray(losses)
                    n_hi = a[:, 2].sum()
                    n_lo = len(a) * cfg.batch_size - n_hi
                    rec = {"step": step, "loss": float(a[:, 0].mean()),
                           "loss_n_high": float(a[:, 1].sum() / max(n_hi, 1)),
                           "loss_n_low": float((a[:, 0].sum() * cfg.batch_size - a[:, 1].sum()) / max(n_lo, 1)),
                           "lr": sched.get_last_lr()[0], "seconds": round(elapsed(), 1),
                           "sec_per_step": round(elapsed() / step, 3),
                           "eta_min": round(elapsed() / step * (cfg.steps - step) / 60, 1)}
                    losses = []
                    if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                        rec.update(score(final))
                    log(rec)
                if step % cfg.save_every == 0:
                    save()
                if deadline is not None and time.time() > deadline and step < cfg.steps:
                    save()
                    print(f"time budget reached at step {step}; rerun the same command to resume", flush=True)
                    return None
            save()
    finally:
        if bar is not None:
            bar.close()
        if run is not None:
            run.finish()
    summary = dict(info, policy=str(out / "policy"), train_steps=step, batch_size=cfg.batch_size,
                   train_seconds=round(elapsed(), 1), command=cfg.command, **score(final))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    return summary


def _progress(total: int, done: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, desc="consistency", mininterval=10, dynamic_ncols=True)


def plan(cfg: ConsistencyConfig, data=None, n_steps: int = 3) -> dict:
    """Time n_steps training steps (after one warm-up step) at cfg.batch_size without writing anything; print and
    return sec_per_step, the projected minutes for cfg.steps, and the steps that fit in 60 / 75 minutes."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    ckpt = load_checkpoint(cfg.teacher)
    teacher = Teacher(ckpt)
    (obs, act), _ = data if data is not None else load_data(cfg, ckpt)
    student = copy.deepcopy(teacher.net).requires_grad_(True).train()
    target = copy.deepcopy(teacher.net).requires_grad_(False).train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    times, losses = [], []
    for _ in range(n_steps + 1):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(obs), (cfg.batch_size,), generator=gen)
        loss = consistency_batch(student, target, teacher, act[idx], obs[idx], cfg, generator=gen)["loss"].mean()
        losses.append(round(loss.item(), 4))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    sps = float(np.median(times[1:]))
    res = {"batch_size": cfg.batch_size, "threads": torch.get_num_threads(), "solver": cfg.solver,
           "sec_per_step": round(sps, 3), "steps": cfg.steps, "projected_min": round(sps * cfg.steps / 60, 1),
           "steps_in_60_min": int(3600 / sps), "steps_in_75_min": int(4500 / sps), "losses": losses}
    print(json.dumps(res), flush=True)
    return res


def parse_args(argv=None) -> ConsistencyConfig:
    return parse_dataclass_args(ConsistencyConfig, argv, description=__doc__)


def main(argv=None):
    import sys
    args = sys.argv[1:] if argv is None else list(argv)
    if "--plan" in args:
        args.remove("--plan")
        plan(parse_args(args))
        return
    cfg = parse_args(args)
    cfg.command = "python -m parapolicy.consistency " + " ".join(args)
    s = train(cfg)
    if s is not None:
        print(f"consistency student at {s['policy']} ({s['train_steps']} steps, {s['train_seconds']} s); "
              f"gap vs DDIM-T: 1 step {s.get('gap_cm1', float('nan')):.3g}, 2 steps {s.get('gap_cm2', float('nan')):.3g} "
              f"(teacher DDIM-2: {s.get('gap_teacher_ddim2', float('nan')):.3g})")


if __name__ == "__main__":
    main()

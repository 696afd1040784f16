"""Progressive distillation (Salimans & Ho, ICLR 2022) of a discrete-time DDPM policy into few-step DDIM students.

Notation (discrete DDPM schedule, T = num_train_timesteps, alphas_cumprod = abar from the teacher's scheduler):

    alpha_t = sqrt(abar[t]),  sigma_t = sqrt(1 - abar[t])          t = 0 .. T-1
    alpha = 1, sigma = 0 for the clean end (t < 0), as diffusers' DDIMScheduler with set_alpha_to_one=True
    z_t = alpha_t x + sigma_t eps,   v = alpha_t eps - sigma_t x   (paper, sec. 4)
    DDIM (eta = 0) from t to s:  z_s = alpha_s x_hat + sigma_s eps_hat     (Song et al. 2021, eq. 12)

A round distils a teacher sampled with DDIM on a grid of N timesteps into a student that takes one DDIM step
for every two of the teacher's (Algorithm 2). For a student step t -> t'' over the teacher's t -> t' -> t'':

    z_t'' = teacher DDIM(teacher DDIM(z_t, t -> t'), t' -> t'')
    x_tilde = (z_t'' - (sigma_t''/sigma_t) z_t) / (alpha_t'' - (sigma_t''/sigma_t) alpha_t)   (Algorithm 2)

x_tilde is the x that one student DDIM step t -> t'' must predict to land on z_t''. The student predicts x
("sample") or v ("v_prediction"); the loss is w(t) * ||x_hat - x_tilde||^2 with w = max(SNR, 1) ("truncated
SNR") or SNR + 1 (sec. 4), SNR = alpha_t^2 / sigma_t^2, computed in the student's own parameterisation.

The discrete grid. A grid is N descending integer timesteps with constant stride s and offset o = its last
element, o < s, so that its last DDIM step lands on the clean end. These are exactly the grids diffusers'
DDIMScheduler reproduces with timestep_spacing="leading", steps_offset=o, N inference steps, because its step
goes from t to t - T // N; so a student checkpoint needs no new config field. Halving keeps the teacher's
grid points of odd index counted from the clean end (1, 3, 5, ...): every student step covers exactly two
teacher steps, the last one ends on the clean sample, and when N is odd the teacher's first (noisiest) point
is dropped, so the student starts from Gaussian noise one teacher step lower. With T = 100:

    100 (99..0)  ->  50 (99, 97, .., 1)  ->  25 (99, 95, .., 3)  ->  12 (95, 87, .., 7)  ->  6 (95, 79, .., 15)

and 6 -> 3 is refused: stride 32 != 100 // 3, which diffusers' DDIM cannot represent (see docs/distill.md).

Run:  python -m parapolicy.distill --teacher runs/pusht_keypoints/policy --out runs/distill --rounds 4
Rerunning the same command resumes (round directories hold `train_state.pt`; finished rounds `round.json`).
Add --plan to time a few training steps and print the projected minutes per round (writes nothing).

Code: the math and the grids in parapolicy.distill_math, the teacher in parapolicy.ddim_teacher, the data in
parapolicy.distill_data, the scores in parapolicy.distill_score; here the batch, the rounds and the CLI.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from parapolicy.checkpoint import LoadedCheckpoint, load_checkpoint, save_policy_dir
from parapolicy.ddim_teacher import DDIMTeacher
from parapolicy.distill_data import load_windows
from parapolicy.distill_math import (
    PARAMETERIZATIONS,
    WEIGHTINGS,
    check_grid,
    distill_target_x,
    grid_scheduler_fields,
    halve_grid,
    halving_schedule,
    loss_weight,
    pred_to_x,
    scheduler_grid,
    x_to_v,
)
from parapolicy.distill_score import run_score_cmd, sample_gaps
from parapolicy.normalizer import LinearNormalizer
from parapolicy.schedule import alpha_sigma, per_row
from parapolicy.train_utils import atomic_torch_save, ema_decay, ema_update, lr_lambda, parse_dataclass_args


# -------------------------------------------------------------------------------------------- one batch
def distill_batch(student: torch.nn.Module, teacher: DDIMTeacher, x0: torch.Tensor, cond: torch.Tensor,
                  student_grid: tuple[int, ...], teacher_stride: int, parameterization: str, weighting: str,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Algorithm 2 on one batch: x0 (B,H,D) normalised actions, cond (B,C) ->
    {"loss": (B,) weighted squared error (backpropagates), "t": (B,) long,
     "landing": (B,) no-grad mean squared distance of the student's one DDIM step from the teacher's z_t''}.

    t uniform on the student grid, z_t = alpha_t x + sigma_t eps; two teacher DDIM steps t -> t - s -> t - 2s
    (s = teacher stride; below 0 is the clean end); target in the student's parameterisation."""
    b = x0.shape[0]
    grid = torch.as_tensor(student_grid)
    t = grid[torch.randint(0, len(grid), (b,), generator=generator)]
    t_mid, t_end = t - teacher_stride, t - 2 * teacher_stride
    eps = torch.randn(x0.shape, generator=generator)
    ac = teacher.alphas_cumprod
    a_t, s_t = alpha_sigma(ac, t)
    a_e, s_e = alpha_sigma(ac, t_end)
    z64 = per_row(a_t, x0) * x0.to(torch.float64) + per_row(s_t, x0) * eps.to(torch.float64)
    z = z64.to(x0.dtype)
    z64 = z.to(torch.float64)
    with torch.no_grad():
        z_end = teacher.step(teacher.step(z, t, t_mid, cond), t_mid, t_end, cond)
        x_tilde = distill_target_x(z64, z_end.to(torch.float64), a_t, s_t, a_e, s_e)
        target = x_to_v(x_tilde, z64, a_t, s_t) if parameterization == "v" else x_tilde
        w = loss_weight(a_t, s_t, weighting, parameterization)
    out = student(z, t, global_cond=cond)
    err = ((out - target.to(out.dtype)) ** 2).flatten(1).mean(1)
    with torch.no_grad():  # z_t'' error of the student's step = (alpha'' - (sigma''/sigma) alpha) (x_hat - x~)
        x_hat = pred_to_x(out.detach().to(torch.float64), z64, a_t, s_t, PARAMETERIZATIONS[parameterization])
        k = a_e - s_e / s_t * a_t
        landing = (per_row(k, x_hat) * (x_hat - x_tilde)).pow(2).flatten(1).mean(1)
    return {"loss": w.to(err.dtype) * err, "t": t, "landing": landing}


# ------------------------------------------------------------------------------------------ the training
@dataclass
class DistillConfig:
    teacher: str = "runs/pusht_keypoints/policy"
    """teacher checkpoint: our directory or a built-in name (its DDIM grid at its num_inference_steps is round
    1's teacher grid)"""
    out: str = "runs/distill"
    """run directory: round<r>/ per round (train_state.pt, log.jsonl, policy/, round.json), students.json"""
    rounds: int = 4
    """halvings (100 -> 50 -> 25 -> 12 -> 6 for four)"""
    steps_per_round: int = 2000
    """optimizer steps per round"""
    first_round_steps: int | None = None
    """optimizer steps of round 1 (None = steps_per_round); round 1 also switches the epsilon teacher to the
    student's parameterisation and is the hardest"""
    batch_size: int = 256
    lr: float = 1e-4
    warmup_steps: int = 100
    """linear warm-up, then cosine decay to 0 over the round (parapolicy.train.lr_lambda); Adam restarts each round"""
    weight_decay: float = 1e-6
    parameterization: str = "v"
    """student output: v (v_prediction) or x (sample)"""
    weighting: str = "truncated_snr"
    """truncated_snr = max(SNR, 1) or snr_plus_one = SNR + 1, of the x-space error"""
    student_clip_sample: bool = False
    """clip x_hat to [-1, 1] in the student's sampler; off by default, because Algorithm 2's target assumes an
    unclipped DDIM step (the final step's target, the teacher's clipped output, is in range anyway)"""
    use_ema: bool = True
    """save (and use as the next teacher) the EMA of the student's weights"""
    ema_power: float = 0.75
    ema_max: float = 0.9999
    zarr: str | None = None
    """Push-T replay buffer; default: the one parapolicy.data finds"""
    val_ratio: float = 0.02
    eval_batch: int = 256
    """validation windows for the end-of-round sample gap (student vs teacher from the same noise)"""
    save_every: int = 250
    log_every: int = 50
    seed: int = 0
    num_threads: int | None = None
    time_budget_min: float | None = None
    """stop (after saving) when this invocation has trained this long; rerun to resume"""
    score_cmd: str | None = None
    """optional command run after each round with {policy} (the student) and {out} (round<r>/score) replaced,
    e.g. 'python -m eval.run policy.path={policy} samplers=[ddim] n_episodes=50 hydra.run.dir={out}';
    its results.json (or last JSON stdout line) goes into round.json as `score`"""
    wandb: bool = False
    wandb_mode: str = "offline"
    command: str = ""
    """the command line, recorded in the student's config (set by main)"""

    def __post_init__(self):
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {tuple(PARAMETERIZATIONS)}, got "
                             f"{self.parameterization!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.rounds < 1 or self.steps_per_round < 1 or self.batch_size < 1 or (self.first_round_steps or 1) < 1:
            raise ValueError("rounds, steps_per_round, first_round_steps and batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb_mode must be offline, online or disabled, got {self.wandb_mode!r}")

    def round_steps(self, round_index: int) -> int:
        """Optimizer steps of round `round_index` (1-based)."""
        return self.first_round_steps if round_index == 1 and self.first_round_steps else self.steps_per_round


def student_config(teacher_cfg: dict, grid: tuple[int, ...], cfg: DistillConfig, info: dict) -> dict:
    """The student's checkpoint config: the teacher's, with the student's prediction type, clipping, grid
    (timestep_spacing/steps_offset) and step count, default_sampler "ddim" (what it was trained for);
    `distillation` records how it was made."""
    sk = dict(teacher_cfg["scheduler"])
    t_train = int(sk.get("num_train_timesteps", 1000))
    sk.update(prediction_type=PARAMETERIZATIONS[cfg.parameterization], clip_sample=cfg.student_clip_sample,
              **grid_scheduler_fields(grid, t_train))
    out = {k: v for k, v in teacher_cfg.items() if k not in ("training", "distillation")}
    hist = dict(teacher_cfg.get("distillation", {}).get("teacher_training", {})) or teacher_cfg.get("training", {})
    out.update(scheduler=sk, num_inference_steps=len(grid), default_sampler="ddim",
               distillation=dict(info, timesteps=list(grid), sampler="ddim", parameterization=cfg.parameterization,
                                 weighting=cfg.weighting, teacher_training=hist))
    return out


def distill_round(teacher_ckpt: LoadedCheckpoint, train_data, val_data, cfg: DistillConfig, round_dir: Path,
                  round_index: int, deadline: float | None = None, log: Callable[[dict], None] | None = None,
                  original: tuple[LoadedCheckpoint, tuple[int, ...]] | None = None):
    """One round: teacher on its DDIM grid -> student on the halved grid, saved to round_dir/policy.

    train_data, val_data: (obs (N, C), action (N, H, D)) normalised. Resumes from round_dir/train_state.pt.
    original: round 1's teacher and grid, to also measure the student's distance from it (rounds > 1).
    Returns the round summary (also round_dir/round.json) or None when the deadline stopped it first."""
    tcfg = teacher_ckpt.config
    t_train = int(tcfg["scheduler"].get("num_train_timesteps", 1000))
    t_grid = scheduler_grid(tcfg["scheduler"], int(tcfg["num_inference_steps"]))
    s_grid = halve_grid(t_grid, t_train)
    t_stride = check_grid(t_grid, t_train)
    teacher = DDIMTeacher.from_checkpoint(teacher_ckpt)
    teacher.net.eval().requires_grad_(False)
    round_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed + round_index)
    student = copy.deepcopy(teacher.net).requires_grad_(True).train()
    ema = copy.deepcopy(student).requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.95, 0.999), weight_decay=cfg.weight_decay)
    n_steps = cfg.round_steps(round_index)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, n_steps))
    step, seconds = 0, 0.0
    state_path = round_dir / "train_state.pt"
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        student.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["lr_scheduler"])
        step, seconds = st["step"], st["train_seconds"]
        print(f"round {round_index}: resumed at step {step}", flush=True)
    tr_obs, tr_act = train_data
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * round_index + step)
    t0, losses = time.time(), []
    info = {"round": round_index, "teacher": teacher_ckpt.path, "teacher_steps": len(t_grid),
            "student_steps": len(s_grid), "command": cfg.command}
    print(f"round {round_index}: teacher DDIM-{len(t_grid)} {list(t_grid[:3])}.. -> student DDIM-{len(s_grid)} "
          f"{list(s_grid)}", flush=True)

    def save_state():
        atomic_torch_save({"model": student.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                            "lr_scheduler": sched.state_dict(), "step": step,
                            "train_seconds": seconds + time.time() - t0}, state_path)

    with open(round_dir / "log.jsonl", "a") as log_f:
        while step < n_steps:
            idx = torch.randint(0, len(tr_obs), (cfg.batch_size,), generator=gen)
            res = distill_batch(student, teacher, tr_act[idx], tr_obs[idx], s_grid, t_stride, cfg.parameterization,
                                cfg.weighting, generator=gen)
            loss = res["loss"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            d = ema_decay(step - 1, cfg.ema_power, cfg.ema_max) if cfg.use_ema else 0.0
            ema_update(ema, student, d)
            hi = (res["t"] >= t_train // 2).to(res["loss"].dtype)
            losses.append((loss.item(), float((res["loss"].detach() * hi).sum()), float(hi.sum()),
                           float(res["landing"].mean())))
            if step % cfg.log_every == 0 or step == n_steps:
                el = seconds + time.time() - t0
                a = np.asarray(losses)
                n_hi, n_all = a[:, 2].sum(), len(a) * cfg.batch_size
                rec = {"round": round_index, "student_steps": len(s_grid), "step": step,
                       "loss": float(a[:, 0].mean()),
                       "loss_t_high": float(a[:, 1].sum() / max(n_hi, 1)),
                       "loss_t_low": float((a[:, 0].sum() * cfg.batch_size - a[:, 1].sum()) / max(n_all - n_hi, 1)),
                       "landing_mse": float(a[:, 3].mean()),
                       "lr": sched.get_last_lr()[0], "seconds": round(el, 1),
                       "sec_per_step": round(el / step, 3),
                       "eta_min": round(el / step * (n_steps - step) / 60, 1)}
                losses = []
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                print(json.dumps(rec), flush=True)
                if log:
                    log(rec)
            if step % cfg.save_every == 0:
                save_state()
            if deadline is not None and time.time() > deadline and step < n_steps:
                save_state()
                print(f"round {round_index}: time budget reached at step {step}; rerun to resume", flush=True)
                return None
        save_state()

    final = ema if cfg.use_ema else student
    final.eval()
    va_obs, va_act = val_data
    n = min(cfg.eval_batch, len(va_obs))
    summary = dict(info, train_steps=step, batch_size=cfg.batch_size, train_seconds=round(seconds + time.time() - t0, 1))
    if n:
        g = torch.Generator().manual_seed(12345)
        with torch.no_grad():
            res = distill_batch(final, teacher, va_act[:n], va_obs[:n], s_grid, t_stride, cfg.parameterization,
                                cfg.weighting, generator=g)
        summary["val_loss"], summary["val_landing_mse"] = float(res["loss"].mean()), float(res["landing"].mean())
        stu = DDIMTeacher(final, PARAMETERIZATIONS[cfg.parameterization],
                       1.0 if cfg.student_clip_sample else None, teacher.alphas_cumprod)
        shape = tuple(va_act[:n].shape)
        summary.update(sample_gaps((teacher, t_grid), {"gap_student": (stu, s_grid),
                                                       "gap_teacher_same_steps": (teacher, s_grid)}, va_obs[:n], shape))
        if original is not None and round_index > 1:
            orig = (DDIMTeacher.from_checkpoint(original[0]), original[1])
            orig[0].net.eval()
            summary.update(sample_gaps(orig, {"gap_student_vs_original": (stu, s_grid),
                                              "gap_original_same_steps": (orig[0], s_grid)}, va_obs[:n], shape))
    policy_dir = save_policy_dir(round_dir / "policy", student_config(tcfg, s_grid, cfg, summary),
                                 final.state_dict(), teacher_ckpt.normalizer_state)
    summary["policy"] = str(policy_dir)
    if cfg.score_cmd:
        summary["score"] = run_score_cmd(cfg.score_cmd, policy_dir, round_dir / "score")
    (round_dir / "round.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    if log:
        rec = {f"round_{k}": v for k, v in summary.items() if isinstance(v, (int, float))}
        for name, m in (summary.get("score") or {}).items():
            if isinstance(m, dict) and isinstance(m.get("mean_score"), (int, float)):
                rec[f"round_mean_score_{name}"] = m["mean_score"]
        log(rec)
    return summary


def distill(cfg: DistillConfig, data=None) -> list[dict]:
    """All rounds (resumable). data: optional ((obs, act), (val_obs, val_act)) normalised; default Push-T.
    Returns the finished rounds' summaries (also out/students.json)."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    teacher = load_checkpoint(cfg.teacher)
    t_train = int(teacher.config["scheduler"].get("num_train_timesteps", 1000))
    grid0 = scheduler_grid(teacher.config["scheduler"], int(teacher.config["num_inference_steps"]))
    grids = halving_schedule(grid0, t_train, cfg.rounds)
    original = (teacher, grid0)
    print(f"student step counts: {[len(g) for g in grids]}", flush=True)
    if data is None:
        data = load_windows(cfg, teacher.config, LinearNormalizer().load_flat_state(teacher.normalizer_state))
    run = None
    if cfg.wandb:
        import wandb
        run = wandb.init(project="parapolicy", dir=str(out), mode=cfg.wandb_mode, config=dataclasses.asdict(cfg),
                         name=f"distill-{out.name}", resume="allow", id=f"distill-{out.name}")
    deadline = time.time() + cfg.time_budget_min * 60 if cfg.time_budget_min is not None else None
    done = []
    try:
        for r in range(1, cfg.rounds + 1):
            rdir = out / f"round{r}"
            if (rdir / "round.json").exists():
                done.append(json.loads((rdir / "round.json").read_text()))
            else:
                s = distill_round(teacher, data[0], data[1], cfg, rdir, r, deadline=deadline, original=original,
                                  log=(lambda rec: run.log(rec)) if run is not None else None)
                if s is None:
                    break
                done.append(s)
            teacher = load_checkpoint(rdir / "policy")
            (out / "students.json").write_text(json.dumps(
                [{"steps": d["student_steps"], "round": d["round"], "policy": d["policy"]} for d in done], indent=2))
    finally:
        if run is not None:
            run.finish()
    return done


def plan(cfg: DistillConfig, data=None, n_steps: int = 5) -> dict:
    """Time `n_steps` training steps (after one warm-up step) of round 1 at cfg.batch_size without writing
    anything; print and return sec_per_step and the projected minutes per round and for all rounds."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    ck = load_checkpoint(cfg.teacher)
    t_train = int(ck.config["scheduler"].get("num_train_timesteps", 1000))
    t_grid = scheduler_grid(ck.config["scheduler"], int(ck.config["num_inference_steps"]))
    grids = halving_schedule(t_grid, t_train, cfg.rounds)
    if data is None:
        data = load_windows(cfg, ck.config, LinearNormalizer().load_flat_state(ck.normalizer_state))
    (obs, act), _ = data
    teacher = DDIMTeacher.from_checkpoint(ck)
    teacher.net.eval().requires_grad_(False)
    student = copy.deepcopy(teacher.net).requires_grad_(True).train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(n_steps + 1):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(obs), (cfg.batch_size,), generator=gen)
        loss = distill_batch(student, teacher, act[idx], obs[idx], grids[0], check_grid(t_grid, t_train),
                             cfg.parameterization, cfg.weighting, generator=gen)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    sps = float(np.median(times[1:]))
    res = {"batch_size": cfg.batch_size, "threads": torch.get_num_threads(), "sec_per_step": round(sps, 3),
           "min_per_round": [round(sps * cfg.round_steps(r) / 60, 1) for r in range(1, cfg.rounds + 1)],
           "min_all_rounds": round(sps * sum(cfg.round_steps(r) for r in range(1, cfg.rounds + 1)) / 60, 1),
           "student_steps": [len(g) for g in grids]}
    print(json.dumps(res), flush=True)
    return res


def parse_args(argv=None) -> DistillConfig:
    return parse_dataclass_args(DistillConfig, argv, description=__doc__)


def main(argv=None):
    import sys
    args = sys.argv[1:] if argv is None else list(argv)
    if "--plan" in args:
        args.remove("--plan")
        plan(parse_args(args))
        return
    cfg = parse_args(args)
    cfg.command = "python -m parapolicy.distill " + " ".join(args)
    done = distill(cfg)
    for d in done:
        print(f"round {d['round']}: DDIM-{d['student_steps']} student at {d['policy']} "
              f"({d['train_steps']} steps, {d['train_seconds']} s, val_loss {d.get('val_loss', float('nan')):.4g}, "
              f"gap {d.get('gap_student', float('nan')):.3g} vs undistilled {d.get('gap_teacher_same_steps', float('nan')):.3g})")


if __name__ == "__main__":
    main()

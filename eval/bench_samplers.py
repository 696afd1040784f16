"""Benchmark of the samplers on one policy denoiser (not a test): rounds, NFE, CPU latency, error.

    python -m eval.bench_samplers [--policy runs/pusht_keypoints/policy] [--repeats 3] [--conds 3]

Per sampler it prints parallel rounds (sequential denoiser calls), NFE (denoiser evaluations per sample),
wall-clock seconds per action chunk at batch 1 (median over conds x repeats runs, after one warm-up run),
the ratio against sequential DDPM, and the max abs error against the sequential sampler of the same
scheduler and step count fed the same noise. Observations come from the Push-T demonstrations when found
(normalised with the checkpoint's normaliser), else uniform in [-1, 1]. Without --policy it uses a
random-weight UNet of the Diffusion Policy Push-T size (down_dims 64,128,256, kernel 5, dsed 256,
global_cond_dim 40, horizon 16, action dim 2): rounds and errors then say little, latency is still real.

Sections: (1) samplers table; (2) window="auto": measured latency curve, chosen window, predicted vs
measured latency; (3) warm start: rounds per chunk along demonstration episodes (consecutive chunks
n_action_steps apart, same x_T and noise every chunk) cold vs warm-started ("naive" and "signal" shifts).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def load_denoiser(policy: str | None):
    """-> (denoiser, scheduler DDPMScheduler, config dict, normalizer or None, description)."""
    from diffusers import DDPMScheduler

    from parapolicy.model import ConditionalUnet1D

    if policy:
        from parapolicy.checkpoint import load_policy_dir
        from parapolicy.normalizer import LinearNormalizer

        cfg, model_state, norm_state = load_policy_dir(policy)
        unet = ConditionalUnet1D(**cfg["model"])
        unet.load_state_dict(model_state)
        norm = LinearNormalizer().load_flat_state(norm_state) if norm_state else None
        desc = f"checkpoint {policy} (trained steps: {cfg.get('training', {}).get('steps', '?')})"
    else:
        cfg = {"model": dict(input_dim=2, global_cond_dim=40, diffusion_step_embed_dim=256,
                             down_dims=[64, 128, 256], kernel_size=5, n_groups=8, cond_predict_scale=True),
               "scheduler": dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                 variance_type="fixed_small", clip_sample=True, prediction_type="epsilon"),
               "horizon": 16, "n_obs_steps": 2, "n_action_steps": 8, "action_dim": 2}
        torch.manual_seed(0)
        unet = ConditionalUnet1D(**cfg["model"])
        norm = None
        desc = "random-weight UNet (no --policy given)"
    unet.eval()
    n_par = sum(p.numel() for p in unet.parameters())

    def denoiser(x, t, c):
        return unet(x, t, global_cond=c)

    return denoiser, DDPMScheduler(**cfg["scheduler"]), cfg, norm, f"{desc}, {n_par / 1e6:.2f}M parameters"


def load_conds(cfg, norm, n: int, seed: int = 0, data: str | None = None):
    """-> (episodes: list of (T, C) normalised observation windows, or None; (n, C) conditions; source)."""
    C = cfg["model"]["global_cond_dim"]
    To = cfg.get("n_obs_steps", 2)
    try:
        from pathlib import Path

        from parapolicy.data import ReplayBuffer, find_pusht_zarr, pusht_keypoint_obs

        path = Path(data) if data else find_pusht_zarr()
        if path is None or norm is None or "obs" not in norm.keys():
            raise FileNotFoundError
        buf = ReplayBuffer.load(path)
        obs = norm.normalize(torch.from_numpy(pusht_keypoint_obs(buf)), "obs")
        eps = []
        for e in range(buf.n_episodes):
            sl = buf.episode_slice(e)
            o = obs[sl]
            win = torch.stack([o[max(0, i - To + 1):i + 1] if i >= To - 1 else
                               torch.cat([o[:1].expand(To - 1 - i, -1), o[:i + 1]]) for i in range(len(o))])
            eps.append(win.reshape(len(o), -1))
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(eps), size=n, replace=len(eps) < n)
        conds = torch.stack([eps[i][rng.integers(len(eps[i]))] for i in pick])
        return eps, conds, f"Push-T demonstrations ({path.name}), normalised"
    except (FileNotFoundError, ImportError, KeyError, ValueError):
        g = torch.Generator().manual_seed(seed)
        return None, torch.rand(n, C, generator=g) * 2 - 1, "uniform [-1, 1] (no demonstrations found)"


def make_sched(kind: str, base):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    cfg = dict(base.config)
    if kind == "ddpm":
        return base
    if kind == "ddim":
        return DDIMScheduler.from_config(cfg)
    return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2,
                                                   variance_type=None)


def run_rows(den, base_sched, cfg, conds, args):
    from parapolicy.sampling import sample_picard, sample_sequential

    H, Da = cfg["horizon"], cfg["action_dim"]
    rows = [("ddpm", 100, None, None), ("paraddpm", 100, args.window, "none/noroll")]
    rows += [("paraddpm", 100, args.window, a) for a in ("none", "anderson", "taa")]
    rows += [("paraddpm", 100, 100, "none/noroll"), ("paraddpm", 100, 100, "taa")]
    for n in args.steps:
        rows += [("ddim", n, None, None), ("paraddim", n, min(args.window, n), "none"),
                 ("paraddim", n, min(args.window, n), "taa")]
    for n in args.steps:
        rows += [("dpmsolver", n, None, None), ("paradpmsolver", n, min(args.window, n), "none"),
                 ("paradpmsolver", n, min(args.window, n), "taa")]
    ddpm_steps = base_sched.config.num_train_timesteps
    rows[0] = ("ddpm", ddpm_steps, None, None)
    rows = [(a, ddpm_steps if b == 100 and a.endswith("ddpm") else b, c, d) for a, b, c, d in rows]
    results, ref_cache, base_time = [], {}, None
    for name, n, window, accel in rows:
        kind = name.replace("para", "")
        sched = make_sched(kind, base_sched)
        nis = None if kind == "ddpm" else n
        times, cpus, rounds, nfes, errs = [], [], [], [], []
        for ci in range(len(conds)):
            g = torch.Generator().manual_seed(1000 + ci)
            x_T = torch.randn(1, H, Da, generator=g)
            noise = torch.randn(n, 1, H, Da, generator=g)
            cond = conds[ci:ci + 1]
            key = (kind, n, ci)
            if key not in ref_cache:
                ref_cache[key] = sample_sequential(den, sched, x_T, noise=noise, cond=cond,
                                                   num_inference_steps=nis)
            for r in range(args.repeats + (1 if ci == 0 else 0)):
                t0, c0 = time.perf_counter(), time.process_time()
                if window is None:
                    x0 = sample_sequential(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=nis)
                    it, nfe = n, n
                else:
                    x0, st = sample_picard(den, sched, x_T, noise=noise, cond=cond, num_inference_steps=nis,
                                           window=window, tol=args.tol, accel=accel.split("/")[0],
                                           guess="none" if accel.endswith("noroll") else "auto")
                    it, nfe = st.iterations, st.nfe
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if ci == 0 and r == 0:
                    continue                                       # warm-up run
                times.append(dt)
                cpus.append(dc)
            rounds.append(it)
            nfes.append(nfe)
            errs.append(float((x0 - ref_cache[key]).abs().max()))
        med = statistics.median(times)
        if base_time is None:
            base_time = med
        results.append(dict(sampler=name, steps=n, window=window or "-", accel=accel or "-",
                            rounds=statistics.mean(rounds), nfe=statistics.mean(nfes), time=med,
                            cpu=statistics.median(cpus),
                            ratio=med / base_time, err=max(errs)))
        r = results[-1]
        print(f"{r['sampler']:<14}{r['steps']:>6}{str(r['window']):>7}{r['accel']:>12}{r['rounds']:>8.1f}"
              f"{r['nfe']:>8.1f}{r['time'] * 1e3:>10.1f}{r['ratio']:>8.2f}{r['cpu'] * 1e3:>10.1f}"
              f"{r['err']:>11.2e}", flush=True)
    return results


def auto_section(den, base_sched, cfg, conds, args):
    from parapolicy.sampling import sample_picard
    from parapolicy.sampling.cost import CostModel, cached_latency, choose_window, predict

    H, Da = cfg["horizon"], cfg["action_dim"]
    S = base_sched.config.num_train_timesteps
    x = torch.zeros(1, H, Da)
    curve = cached_latency(den, x, conds[:1], S)
    print("measured denoiser latency (fastest of 5 interleaved calls, made non-decreasing; cost.measure_latency), batch: ms  "
          + "  ".join(f"{b}: {s * 1e3:.1f}" for b, s in curve.items()))
    # measured advance per window from the benchmark's own solves of the first condition
    adv = {}
    for p in sorted({2, 4, 8, 16, 32, args.window}):
        g = torch.Generator().manual_seed(1000)
        x_T, noise = torch.randn(1, H, Da, generator=g), torch.randn(S, 1, H, Da, generator=g)
        _, st = sample_picard(den, base_sched, x_T, noise=noise, cond=conds[:1], window=p, tol=args.tol)
        adv[p] = S / st.iterations
    print("measured mean advance (steps accepted per round) by window: "
          + "  ".join(f"{p}: {a:.2f}" for p, a in adv.items()))
    for label, cm in (("default saturating advance model", CostModel(curve)),
                      ("measured advance", CostModel(curve, advance=adv))):
        p, pred = choose_window(den, x, conds[:1], S, cost_model=cm)
        times = []
        g = torch.Generator().manual_seed(1000)
        x_T, noise = torch.randn(1, H, Da, generator=g), torch.randn(S, 1, H, Da, generator=g)
        for r in range(args.repeats + 1):
            t0 = time.perf_counter()
            _, st = sample_picard(den, base_sched, x_T, noise=noise, cond=conds[:1], window=p,
                                  tol=args.tol)
            if r:
                times.append(time.perf_counter() - t0)
        pr_rounds = predict(cm, S, p, 1)[1]
        print(f"auto window ({label}): window {p}, predicted {pred * 1e3:.0f} ms / {pr_rounds} rounds, "
              f"measured {statistics.median(times) * 1e3:.0f} ms / {st.iterations} rounds")


def warm_section(den, base_sched, cfg, episodes, conds, args):
    from parapolicy.sampling import sample_picard, shift_trajectory

    H, Da, n_act = cfg["horizon"], cfg["action_dim"], cfg.get("n_action_steps", 8)
    S = base_sched.config.num_train_timesteps
    if episodes is not None:
        seqs = [ep[::n_act][:args.warm_chunks] for ep in episodes[:args.warm_episodes]]
        src = f"{len(seqs)} demonstration episodes, first {args.warm_chunks} chunks each"
    else:
        g = torch.Generator().manual_seed(7)
        seqs = [conds[:1] + 0.05 * torch.randn(args.warm_chunks, conds.shape[1], generator=g).cumsum(0)]
        src = f"a random walk of {args.warm_chunks} conditions (no demonstrations)"
    res = {"cold": [], "naive": [], "signal": []}
    g = torch.Generator().manual_seed(99)
    x_T, noise = torch.randn(1, H, Da, generator=g), torch.randn(S, 1, H, Da, generator=g)
    for seq in seqs:
        prev = {"naive": None, "signal": None}
        for c in seq:
            cond = c[None]
            _, st = sample_picard(den, base_sched, x_T, noise=noise, cond=cond, window=args.window,
                                  tol=args.tol)
            res["cold"].append(st.iterations)
            for mode in ("naive", "signal"):
                init = None
                if prev[mode] is not None:
                    init = shift_trajectory(prev[mode], n_act, base_sched, mode=mode)
                _, stw = sample_picard(den, base_sched, x_T, noise=noise, cond=cond, window=args.window,
                                       tol=args.tol, init=init)
                if init is not None:
                    res[mode].append(stw.iterations)
                prev[mode] = stw.trajectory
    print(f"warm start over {src}, window {args.window}, tol {args.tol}, same x_T and noise every chunk:")
    for k, v in res.items():
        if v:
            print(f"  {k:<7} mean rounds per chunk {statistics.mean(v):.2f} (n={len(v)})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=None, help="checkpoint dir (config.json + model.safetensors)")
    ap.add_argument("--data", default=None, help="Push-T replay zarr for observations (default: searched)")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--steps", default="10,25", help="DDIM / DPM-Solver++ step counts, comma separated")
    ap.add_argument("--conds", type=int, default=3, help="observation/noise draws per sampler")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per draw (after one warm-up run)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: robust on a busy machine)")
    ap.add_argument("--warm-episodes", type=int, default=3)
    ap.add_argument("--warm-chunks", type=int, default=6)
    ap.add_argument("--skip", default="", help="comma list of sections to skip: table,auto,warm")
    args = ap.parse_args(argv)
    args.steps = [int(s) for s in args.steps.split(",") if s]
    skip = set(args.skip.split(","))
    torch.set_num_threads(args.threads)
    den, sched, cfg, norm, desc = load_denoiser(args.policy)
    episodes, conds, src = load_conds(cfg, norm, args.conds, data=args.data)
    print(f"# bench_samplers: {desc}")
    print(f"# observations: {src}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU, batch 1, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"# ms = median wall-clock per chunk (time.perf_counter) over {args.conds} draws x {args.repeats} "
          "runs after 1 warm-up;")
    print("# ratio = ms / sequential DDPM ms; cpu ms = median process CPU time (robust to other load);")
    print("# rounds/NFE = mean over draws; max err = max |x0 - sequential x0|, same scheduler/steps/noise")
    print(f"# Picard: tol {args.tol}, window {args.window} (capped at the step count); accel none/anderson/"
          "taa with the default rollout start, '/noroll' = plain ParaDiGMS start (x_T everywhere)")
    t0 = time.perf_counter()
    if "table" not in skip:
        print(f"{'sampler':<14}{'steps':>6}{'window':>7}{'accel':>12}{'rounds':>8}{'NFE':>8}{'ms':>10}"
              f"{'ratio':>8}{'cpu ms':>10}{'max err':>11}")
        run_rows(den, sched, cfg, conds, args)
    if "auto" not in skip:
        auto_section(den, sched, cfg, conds, args)
    if "warm" not in skip:
        warm_section(den, sched, cfg, episodes, conds, args)
    print(f"# total benchmark time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

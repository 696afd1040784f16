"""Where Picard's rounds go (not a test): rounds, NFE, sampler CPU time and error against sequential DDPM for
several Picard variants on one policy, batch 1, the same observation windows and noise for every variant.

    python -m eval.bench_rounds                                  # shipped policy, eager UNet, 8 windows
    python -m eval.bench_rounds --obs 16 --variants 'w16,w16/window,w16/none,w32,w16/atol=1e-3'
    python -m eval.bench_rounds --policy PATH --fast fp32 --json runs/bench_rounds.json
    python -m eval.bench_rounds --device cuda --variants 'w16,w56/secant/zero/tol=0.03/atol=auto/first=24'

A variant is `w<window>` followed by optional `/`-separated options: a guess mode (frontier, window, none),
`taa` (triangular Anderson; implies guess window), `parareal` / `secant` (the updates of eq. 2' / 2'' in
sampling/picard.py), `zero` (start from a zero data prediction), `first=<n>` (the first round's window),
`tol=<x>`, `atol=<x>` or `atol=auto` (the floor tol * sqrt(smallest noisy-step variance)). Rounds and NFE
do not depend on the machine; the CPU time (process time, one torch thread) does, so compare it within one
run only. With more threads (`--threads 2`), and on a GPU (`--device cuda`, the device synchronised before
the clock is read), the time column is wall-clock. The error column is the largest difference of the executed
actions from sequential DDPM's on the same noise, in env units (pixels on Push-T).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from eval.variants import parse_variant  # noqa: F401  (the variant syntax; re-exported)


def run(args) -> dict:
    import parapolicy
    from eval.bench_chunk import device_name, observation_windows, speedup_clock
    from parapolicy.sampling import sample_picard, sample_sequential

    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    policy = parapolicy.load_policy(args.policy, device=device, fast=args.fast)

    clock = "CPU" if speedup_clock(device, torch.get_num_threads()) == "cpu" else "wall"

    def now() -> float:  # process CPU time on one CPU thread; else wall-clock after the device's queue is done
        if clock == "CPU":
            return time.process_time()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    wins, where = observation_windows(policy, args.obs)
    sch = policy.scheduler("ddpm")
    S = len(sch.timesteps)
    variants = [(v, parse_variant(v)) for v in args.variants.split(",")]
    rows = {v: {"rounds": [], "nfe": [], "cpu_ms": [], "err": []} for v, _ in variants}
    seq_ms = []
    s, n = policy.action_start, policy.n_action_steps

    def actions(x0):
        a = policy.normalizer.unnormalize(x0[..., :policy.action_dim], policy._norm_key["action"])
        return a[:, s:s + n]

    for i, obs in enumerate(wins):
        g = torch.Generator().manual_seed(1000 + i)
        x_T = torch.randn(1, policy.horizon, policy.input_dim, generator=g).to(device)
        z = torch.randn(S, 1, policy.horizon, policy.input_dim, generator=g).to(device)
        cond = policy.normalized_condition(obs)
        c0 = now()
        ref = actions(sample_sequential(policy.denoiser, sch, x_T, noise=z, cond=cond))
        seq_ms.append(1e3 * (now() - c0))
        for v, kw in variants:
            c0 = now()
            x0, st = sample_picard(policy.denoiser, sch, x_T, noise=z, cond=cond, **kw)
            rows[v]["cpu_ms"].append(1e3 * (now() - c0))
            rows[v]["rounds"].append(st.iterations)
            rows[v]["nfe"].append(st.nfe)
            rows[v]["err"].append(float((actions(x0) - ref).abs().max()))
    print(f"# eval.bench_rounds: {policy.path or args.policy} ({policy.inference} UNet), {len(wins)} windows "
          f"from {where}; batch 1, {torch.get_num_threads()} torch thread(s), {device_name(device)}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"sequential DDPM: {S} rounds, {clock} ms p50 {statistics.median(seq_ms):.1f}")
    print(f"| variant | rounds mean / max | NFE mean | {clock} ms p50 | speed-up vs DDPM ({clock}) "
          "| action err p50 / max |")
    print("|---|---|---|---|---|---|")
    out = {"policy": str(args.policy), "inference": policy.inference, "windows": len(wins), "source": where,
           "threads": torch.get_num_threads(), "device": device_name(device), "clock": clock,
           "sequential_cpu_ms_p50": statistics.median(seq_ms), "variants": {}}
    for v, _ in variants:
        r = rows[v]
        med = statistics.median(r["cpu_ms"])
        out["variants"][v] = {"rounds_mean": statistics.mean(r["rounds"]), "rounds_max": max(r["rounds"]),
                              "nfe_mean": statistics.mean(r["nfe"]), "cpu_ms_p50": med, "max_err": max(r["err"]),
                              "err_p50": statistics.median(r["err"]), "err_per_window": r["err"],
                              "rounds_per_window": r["rounds"]}
        print(f"| {v} | {statistics.mean(r['rounds']):.1f} / {max(r['rounds'])} | {statistics.mean(r['nfe']):.1f} "
              f"| {med:.1f} | {statistics.median(seq_ms) / med:.2f}x | {statistics.median(r['err']):.3f} / "
              f"{max(r['err']):.3f} |")
    if args.json:
        from eval.outputs import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=2))
    return out


def main(argv=None):
    from eval.bench_chunk import device_arg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="pusht_keypoints")
    ap.add_argument("--fast", default="eager", help="UNet path: eager, fp32, bf16")
    ap.add_argument("--obs", type=int, default=8, help="observation windows")
    ap.add_argument("--variants", default="w16/none,w16/window,w16,w32,w16/atol=1e-3")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--device", type=device_arg, default="cpu",
                    help="cpu or cuda[:N]; on a GPU the time column is wall-clock")
    ap.add_argument("--json", default=None)
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()

"""Batch-latency curves of the UNet denoiser: eager vs the fast path (float32, bf16, optionally compiled).

    python -m eval.bench_denoiser                       # default: ~4 min or less on an idle 2-core CPU
    python -m eval.bench_denoiser --full                # batches 1..128 (powers of 2), + compiled variants
    python -m eval.bench_denoiser --models shipped --batches 1,16 --variants eager,fast32 --threads 1
    python -m eval.bench_denoiser --models shipped,lerobot --batches 1,2,4,8,16,32,64 --threads 1
                                                        # is the big UNet's curve flatter; does Picard gain more?

Variants: eager; fast32 / fastbf16 (parapolicy.fast, conv_impl="auto"); fast32-im2col / fastbf16-im2col (every
residual-block conv as an im2col matmul); compiled32 / compiledbf16 (torch.compile + freezing).

Models (random weights; timing does not depend on the values):
    shipped   down_dims (64,128,256), kernel 5, step embedding 256, global_cond 40, FiLM scale+bias
              (cond_predict_scale), horizon 16, action 2: the shipped policy's UNet, 5.4M parameters
    full      down_dims (256,512,1024), the full-size Diffusion Policy UNet (65.8M), same other sizes
    lerobot   the UNet of LeRobot's Push-T image policy (lerobot/diffusion_pusht): down_dims (512,1024,2048),
              kernel 5, step embedding 128, FiLM scale+bias, global_cond 132 = 2 observation steps x (64 image
              features: 32 spatial-softmax keypoints x 2 + 2 agent state), 251.5M parameters (about 3 s to
              build and 1 GB in float32; the fast variants copy the weights: about 3.5 GB with fp32 + bf16)

Picard table (after each model's curves): for each variant, the window `window="auto"` picks from that
variant's measured curve (parapolicy.sampling.cost.choose_window with a CostModel of the curve, batch 1,
`--steps` steps; rows beyond the largest measured batch are extrapolated with the curve's last slope), the
predicted rounds and seconds of a ParaDDPM solve (cost.predict, the default advance model fitted to the
shipped Push-T policy: random weights give no convergence data), and the predicted speed-up over
sequential DDPM = steps x t(1). A final table puts every model side by side.

How it measures: `parapolicy.fast.compare_latency`, which uses the sampler's own measurer
(parapolicy.sampling.cost.time_denoisers): `--warmup` untimed repetitions, then `--repeats` timed repetitions,
each calling every batch size and, at each size, every variant once in turn (interleaved) with
time.perf_counter; per variant and batch the fastest call is printed, made non-decreasing in the batch size
(cost.fastest_curve). Interleaving keeps ratios meaningful on a loaded machine: background load falls on all
variants alike, while absolute milliseconds move with the load (the load average is printed). Each call's
process CPU time is recorded as well and summarised the same way: with `--threads 1` on a shared machine it
estimates the wall time the call would take on an otherwise idle core.
Compiled variants are built once per model (torch.compile + freezing, cached); their compile seconds (first
call of each new input shape) are printed separately and are not part of the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import torch

MODELS = {
    "shipped": dict(input_dim=2, global_cond_dim=40, down_dims=(64, 128, 256), kernel_size=5,
                    diffusion_step_embed_dim=256, n_groups=8, cond_predict_scale=True),
    "full": dict(input_dim=2, global_cond_dim=40, down_dims=(256, 512, 1024), kernel_size=5,
                 diffusion_step_embed_dim=256, n_groups=8, cond_predict_scale=True),
    "lerobot": dict(input_dim=2, global_cond_dim=2 * (32 * 2 + 2), down_dims=(512, 1024, 2048), kernel_size=5,
                    diffusion_step_embed_dim=128, n_groups=8, cond_predict_scale=True),
}
HORIZON = 16
VARIANTS = ("eager", "fast32", "fastbf16", "compiled32", "compiledbf16", "fast32-im2col", "fastbf16-im2col")
DEFAULT_VARIANTS = ("eager", "fast32", "fastbf16")
DEFAULT_BATCHES = (1, 4, 16, 64)
FULL_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


def build_variants(model, names, compile_dynamic):
    """-> {name: callable}; also returns the FastDenoiser objects of compiled variants."""
    from parapolicy.fast import optimize_denoiser

    out, compiled = {}, {}
    for name in names:
        if name == "eager":
            out[name] = model
            continue
        dtype = torch.bfloat16 if "bf16" in name else torch.float32
        impl = "im2col" if name.endswith("-im2col") else "auto"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fast = optimize_denoiser(model, dtype=dtype, compile=name.startswith("compiled"),
                                     dynamic=compile_dynamic, conv_impl=impl)
        for w in caught:
            if issubclass(w.category, RuntimeWarning):  # our bf16 / prepack fallbacks, not torch noise
                print(f"  [{name}] warning: {w.message}")
        out[name] = fast
        if fast.compiled:
            compiled[name] = fast
    return out, compiled


def check_equivalence(model, fast, cfg, device="cpu"):
    from parapolicy.fast.latency import make_inputs

    inp = make_inputs(4, HORIZON, cfg["input_dim"], cfg["global_cond_dim"], seed=1, device=device)
    with torch.no_grad():
        ref = model(inp["sample"], inp["timestep"], global_cond=inp["global_cond"])
    out = fast(inp["sample"], inp["timestep"], global_cond=inp["global_cond"])
    return ((out - ref).abs().max() / ref.abs().max()).item()


def picard_table(curves: dict, steps: int) -> dict:
    """Per variant, from its {batch: seconds} curve: the window window="auto" picks at batch 1 and the
    predicted ParaDDPM solve against sequential DDPM (`steps` calls at batch 1).

    -> {variant: {window, rounds, paraddpm_s, ddpm_s, speedup}}."""
    from parapolicy.sampling.cost import CostModel, choose_window, predict

    out = {}
    x = torch.zeros(1, HORIZON, 2)  # only its batch size (1) is read when a cost model is given
    for name, curve in curves.items():
        cost = CostModel({int(b): float(t) for b, t in curve.items()})
        window, secs = choose_window(None, x, None, steps, cost_model=cost)
        _, rounds = predict(cost, steps, window, 1)
        ddpm = steps * cost.t(1)
        out[name] = dict(window=window, rounds=rounds, paraddpm_s=secs, ddpm_s=ddpm, speedup=ddpm / secs)
    return out


def print_picard(table: dict, steps: int, indent: str = "  ") -> None:
    print(f"{indent}{'variant':>15} {'window':>6} {'rounds':>6} {'ParaDDPM ms':>12} {f'DDPM-{steps} ms':>12} "
          f"{'speed-up':>8}")
    for name, r in table.items():
        print(f"{indent}{name:>15} {r['window']:>6} {r['rounds']:>6} {r['paraddpm_s'] * 1e3:>12.1f} "
              f"{r['ddpm_s'] * 1e3:>12.1f} {r['speedup']:>7.2f}x")


def run(args) -> dict:
    from eval.bench_chunk import device_name
    from parapolicy.fast import compare_latency, has_fast_bf16
    from parapolicy.model import ConditionalUnet1D
    from parapolicy.sampling.cost import fastest_curve

    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    print("bench_denoiser: eager ConditionalUnet1D vs parapolicy.fast (random weights, horizon 16)")
    print(f"  torch {torch.__version__}, {device_name(device)}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, fast bf16: {has_fast_bf16('cpu')}, "
          f"threads {torch.get_num_threads()}, load average at start {os.getloadavg()[0]:.2f}")
    print(f"  method: {args.warmup} warm-up repetitions, then {args.repeats} interleaved repetitions; "
          f"fastest per-call wall time (perf_counter), made non-decreasing in the batch")
    results: dict = {"meta": dict(torch=torch.__version__, threads=torch.get_num_threads(),
                                  device=device_name(device),
                                  warmup=args.warmup, repeats=args.repeats,
                                  load_start=os.getloadavg()[0]), "models": {}}
    for mname in args.models:
        cfg = MODELS[mname]
        torch.manual_seed(0)
        model = ConditionalUnet1D(**cfg).eval().to(device)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"\n== {mname}: down_dims {cfg['down_dims']}, {n_params / 1e6:.1f}M parameters ==")
        t0 = time.perf_counter()
        variants, compiled = build_variants(model, args.variants, args.dynamic)
        print(f"  built fast variants in {time.perf_counter() - t0:.2f} s")
        for name, f in variants.items():
            if name != "eager":
                t0 = time.perf_counter()
                err = check_equivalence(model, f, cfg, device)
                secs = time.perf_counter() - t0
                note = f" (first call incl. compile {secs:.1f} s)" if name in compiled else ""
                if name in compiled and not f.compiled:
                    note = " (COMPILE FAILED: timings below are the uncompiled fallback)"
                print(f"  {name}: max |fast - eager| / max |eager| = {err:.2e} at batch 4{note}")
        samples: dict = {}
        curves = compare_latency(variants, horizon=HORIZON, action_dim=cfg["input_dim"],
                                 global_cond_dim=cfg["global_cond_dim"], batch_sizes=args.batches,
                                 warmup=args.warmup, repeats=args.repeats, samples=samples, device=device)
        cpu_curves = {n: fastest_curve({b: samples[n][b]["process"] for b in args.batches}) for n in curves}
        for name, f in compiled.items():
            secs = ", ".join(f"B={k[0][0]}: {v:.1f}" for k, v in f.compile_seconds.items())
            print(f"  {name} compile seconds per shape: {secs}")
        names = list(variants)
        for title, table in (("wall-clock per call (fastest, non-decreasing)", curves),
                             ("process CPU time per call (all torch threads; fastest, non-decreasing)", cpu_curves)):
            print(f"  {title}:")
            print(f"  {'batch':>5} " + " ".join(f"{n + ' ms':>17}" for n in names))
            for b in args.batches:
                row = f"  {b:>5} "
                for n in names:
                    cell = f"{table[n][b] * 1e3:.1f}"
                    if n != "eager" and "eager" in table:
                        cell += f" ({table['eager'][b] / table[n][b]:.2f}x)"
                    row += f" {cell:>17}"
                print(row)
        scaling = {n: {b: curves[n][b] / curves[n][args.batches[0]] for b in args.batches} for n in names}
        print(f"  batch scaling, wall (latency / latency at batch {args.batches[0]}):")
        for n in names:
            print(f"    {n:>13}: " + ", ".join(f"B={b}: {s:.2f}" for b, s in scaling[n].items()))
        compile_secs = {n: [[list(k[0]), v] for k, v in f.compile_seconds.items()]
                        for n, f in compiled.items()}
        picard = picard_table(curves, args.steps)
        print(f"  window=\"auto\" from each wall-clock curve, {args.steps}-step ParaDDPM vs DDPM at batch 1 "
              f"(predicted by the cost model):")
        print_picard(picard, args.steps, indent="    ")
        results["models"][mname] = {"config": cfg, "params": n_params, "seconds": curves,
                                    "process_seconds": cpu_curves,
                                    "compile_seconds": compile_secs, "picard": picard}
    results["meta"]["load_end"] = os.getloadavg()[0]
    b0, b1 = args.batches[0], args.batches[-1]
    print(f"\n== side by side: batch curve t({b1}) / t({b0}) and predicted {args.steps}-step ParaDDPM speed-up ==")
    print(f"  {'model':>8} {'params':>8} {'variant':>15} {f't({b0}) ms':>9} {f't({b1})/t({b0})':>10} {'window':>6} "
          f"{'rounds':>6} {'speed-up':>8}")
    for mname, res in results["models"].items():
        for n, r in res["picard"].items():
            c = res["seconds"][n]
            print(f"  {mname:>8} {res['params'] / 1e6:>7.1f}M {n:>15} {c[b0] * 1e3:>9.2f} {c[b1] / c[b0]:>10.2f} "
                  f"{r['window']:>6} {r['rounds']:>6} {r['speedup']:>7.2f}x")
    print(f"\n  load average at end {os.getloadavg()[0]:.2f}. Speed-ups (x) are eager / variant from the "
          f"same round-robin run; absolute ms depend on machine load.")
    return results


def parse_args(argv=None):
    from eval.bench_chunk import device_arg

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="shipped,full", help="comma list of: " + ", ".join(MODELS))
    p.add_argument("--batches", default=None, help="comma list of batch sizes (default 1,4,16,64)")
    p.add_argument("--variants", default=None, help="comma list of: " + ", ".join(VARIANTS))
    p.add_argument("--full", action="store_true", help="batches 1..128 and all variants incl. compiled")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--steps", type=int, default=100, help="denoising steps of the Picard table (default 100)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dynamic", default="none", choices=["none", "true", "false"],
                   help="torch.compile dynamic= for compiled variants")
    p.add_argument("--device", type=device_arg, default="cpu",
                   help="cpu or cuda[:N] (a GPU's batch curve: flat or not?)")
    p.add_argument("--json", default=None, help="also write the measured curves to this JSON file")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    args.batches = ([int(b) for b in args.batches.split(",")] if args.batches
                    else list(FULL_BATCHES if args.full else DEFAULT_BATCHES))
    args.variants = (args.variants.split(",") if args.variants
                     else list(VARIANTS if args.full else DEFAULT_VARIANTS))
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    args.dynamic = {"none": None, "true": True, "false": False}[args.dynamic]
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    results = run(args)
    print(f"  total benchmark time {time.perf_counter() - t0:.0f} s")
    if args.json:
        from eval.outputs import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=1, default=str))
        print(f"  wrote {args.json}")


if __name__ == "__main__":
    main()

"""Per-chunk latency of sequential DDPM and ParaDDPM with each UNet path, in one run (not a test).

    python -m eval.bench_chunk                       # shipped policy, eager / fp32 / bf16 x ddpm / paraddpm
    python -m eval.bench_chunk --obs 16 --repeats 3 --json runs/bench_chunk.json
    python -m eval.bench_chunk --policy runs/distill/round3/policy --samplers ddim,paraddim
    python -m eval.bench_chunk --policy runs/pusht_image/policy --paths fp32      # an image policy
    python -m eval.bench_chunk --paths fp32 --samplers 'ddpm,paraddpm,paraddpm:w48/secant/zero/tol=0.03'
    python -m eval.bench_chunk --device cuda --paths eager,fp32 --threads 0      # a GPU: wall-clock speed-ups

What one measurement is: `policy.predict_action(obs, sampler)` for one robot (batch 1), i.e. normalising the
observation window, the whole reverse process (100 DDPM steps, or Picard rounds) and unnormalising the
chunk. Observation windows come from the Push-T demonstrations (consecutive frames at evenly spaced steps
of the data) when `../shared/pusht` is found, else from seeded env resets. Every (path, sampler) pair gets
the same windows and the same noise, so ParaDDPM's actions can be compared to DDPM's. An image policy reads
the demonstrations' recorded 96x96 frames (and needs them); its encoder runs once per call, and the table
splits each call's wall time into encoder (condition: image encoder + normalisation) and denoising.

How it times: after one untimed warm-up call of each pair, the pairs are timed round-robin (one call of
each per window, `--repeats` passes over the windows), so background load on a shared machine falls on
all of them alike; the table gives the median wall-clock time, the median process CPU time (with one torch
thread, an estimate of the time on an otherwise idle core), rounds and NFE per chunk, the speed-up over
eager DDPM (from the CPU-time medians), the largest action difference from eager DDPM in env pixels, and
the time spent inside the denoiser calls (UNet ms): the ratio of those times, the UNet-only speed-up, is what
the pair would reach if the sampler's own work (schedule arithmetic, cumulative sums, rollouts) cost nothing.
With more than one torch thread the process CPU time sums the threads' work, and on a GPU (`--device cuda`;
every call ends with a device synchronisation, `predict_action` waits for the stream) it says nothing about
the device: there the speed-ups are ratios of wall-clock medians instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

PATHS = ("eager", "fp32", "bf16")


def observation_windows(policy, n: int, seed: int = 0) -> tuple[list[dict], str]:
    """n observation windows {key: (1, n_obs_steps, dim)} in env units, and where they came from."""
    To = policy.n_obs_steps
    if getattr(policy, "vision", None) is not None:
        return image_windows(policy, n)
    if policy.obs_keys == ["obs"] and policy.obs_dims["obs"] == 20:
        try:
            from parapolicy.data import ReplayBuffer, find_pusht_zarr, pusht_keypoint_obs

            path = find_pusht_zarr()
            if path is not None:
                obs = pusht_keypoint_obs(ReplayBuffer.load(path))
                starts = np.linspace(0, len(obs) - To - 1, n).astype(int)
                wins = [{"obs": torch.from_numpy(obs[s:s + To].copy())[None]} for s in starts]
                return wins, f"Push-T demonstrations ({path}), {n} windows evenly spaced over {len(obs)} steps"
        except ImportError:
            pass
    import gymnasium as gym

    import envs  # noqa: F401  registers parapolicy/PushT-v0

    env = gym.make("parapolicy/PushT-v0", obs_type="keypoints")
    wins = []
    for i in range(n):
        o, _ = env.reset(seed=100000 + seed + i)
        frame = torch.as_tensor(o, dtype=torch.float32)
        wins.append({"obs": frame.expand(To, -1).clone()[None]})
    env.close()
    return wins, f"Push-T env resets, seeds {100000 + seed}..{100000 + seed + n - 1}"


def image_windows(policy, n: int) -> tuple[list[dict], str]:
    """n windows of an image policy from the demonstrations' 96x96 images (`data/img`) and agent positions, in
    the policy's own keys (`eval.rollout.image_obs`); image policies need the shared replay buffer."""
    from eval.rollout import image_obs
    from parapolicy.data import ReplayBuffer, find_pusht_zarr

    path = find_pusht_zarr()
    if path is None:
        raise SystemExit("bench_chunk: an image policy needs the Push-T demonstrations' images (../shared/pusht)")
    buf = ReplayBuffer.load(path, keys=["img", "state"])
    To = policy.n_obs_steps
    starts = np.linspace(0, buf.n_steps - To - 1, n).astype(int)
    wins = []
    for s in starts:
        img = buf.data["img"][s:s + To].astype(np.float32).reshape(To, -1)   # (To, 96*96*3) 0-255 as the env
        flat = np.concatenate([img, buf.data["state"][s:s + To, :2].astype(np.float32)], axis=-1)
        wins.append(image_obs(policy, flat[None]))
    return wins, f"Push-T demonstrations' images ({path}), {n} windows evenly spaced over {buf.n_steps} steps"


def build_paths(policy, names) -> dict:
    """{path name: denoiser module or None (eager)}; bf16 falls back to fp32 (and says so) without AMX."""
    from parapolicy.fast import optimize_denoiser

    out = {}
    for name in names:
        if name == "eager":
            out[name] = None
            continue
        fast = optimize_denoiser(policy.model, dtype=torch.bfloat16 if name == "bf16" else torch.float32)
        if name == "bf16" and fast.dtype != torch.bfloat16:
            print("  note: no fast bf16 on this CPU; the bf16 row runs the float32 fast path")
        out[name] = fast
    return out


def sampler_spec(text: str, config_cls):
    """"paraddpm" or "paraddpm:w48/secant/zero/tol=0.03" (a bench_rounds variant: window and options)."""
    from eval.variants import parse_variant

    name, _, variant = text.partition(":")
    return config_cls(name=name, **(parse_variant(variant) if variant else {}))


def speedup_clock(device: torch.device, threads: int) -> str:
    """Which time the speed-ups compare: process CPU time estimates the latency on an idle core only for one
    thread on a CPU; with more threads it sums their work, and it says nothing of a GPU's, so wall-clock."""
    return "cpu" if device.type == "cpu" and threads == 1 else "wall"


def run(args) -> dict:
    from parapolicy.fast import has_fast_bf16
    from parapolicy.policy import SamplerConfig, load_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    policy = load_policy(args.policy, device=device, fast="eager")
    paths = build_paths(policy, args.paths)
    samplers = {spec: sampler_spec(spec, SamplerConfig) for spec in args.samplers}
    wins, source = observation_windows(policy, args.obs)
    steps = len(policy.scheduler(samplers[args.samplers[0]].family).timesteps)
    g = torch.Generator().manual_seed(args.seed)
    noise = []
    for _ in wins:
        shape = (1, policy.horizon, policy.input_dim)
        noise.append((torch.randn(shape, generator=g), torch.randn((steps,) + shape, generator=g)))
    print(f"bench_chunk: {args.policy}, batch 1, {len(wins)} observation windows x {args.repeats} passes")
    print(f"  torch {torch.__version__}, {device_name(device)}, threads "
          f"{torch.get_num_threads()}, fast bf16: {has_fast_bf16('cpu')}, load average "
          f"{os.getloadavg()[0]:.2f}; observations: {source}")

    pairs = [(p, s) for p in args.paths for s in args.samplers]

    clock = speedup_clock(device, torch.get_num_threads())
    timed = {p: TimedDenoiser(policy.model if net is None else net, clock, device) for p, net in paths.items()}

    def call(path, sampler, i):
        policy.use_denoiser(timed[path], name=path)
        timed[path].reset()
        x_T, z = noise[i]
        return policy.predict_action(wins[i], sampler=samplers[sampler], init_noise=x_T, step_noise=z)

    for p, s in pairs:  # warm-up: first calls allocate, and build oneDNN primitives
        call(p, s, 0)
    rec = {pair: {"wall": [], "cpu": [], "rounds": [], "nfe": [], "err": [], "enc": [], "den": [], "unet": []}
           for pair in pairs}
    ref_name = (args.paths[0], args.samplers[0])
    t_start = time.perf_counter()
    for _ in range(args.repeats):
        for i in range(len(wins)):
            ref = None
            for pair in pairs:
                t0, c0 = time.perf_counter(), time.process_time()
                out = call(*pair, i)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                r = rec[pair]
                r["wall"].append(wall)
                r["cpu"].append(cpu)
                r["enc"].append(out["timing"]["encoder_s"])
                r["den"].append(out["timing"]["denoise_s"])
                r["unet"].append(timed[pair[0]].seconds())
                st = out["stats"]
                r["rounds"].append(st.iterations if st is not None else steps)
                r["nfe"].append(st.nfe if st is not None else steps)
                if pair == ref_name:
                    ref = out["action"]
                r["err"].append(float((out["action"] - ref).abs().max()))
    total = time.perf_counter() - t_start
    base = statistics.median(rec[ref_name][clock])
    unet = {pair: statistics.median(r["unet"]) for pair, r in rec.items()}
    rows = []
    for p, s in pairs:
        r = rec[(p, s)]
        row = {"path": p, "sampler": s, "wall_ms_p50": 1e3 * statistics.median(r["wall"]),
               "cpu_ms_p50": 1e3 * statistics.median(r["cpu"]), "cpu_ms_p95": 1e3 * float(np.percentile(r["cpu"], 95)),
               "rounds": statistics.fmean(r["rounds"]), "nfe": statistics.fmean(r["nfe"]),
               "speedup": base / statistics.median(r[clock]), "speedup_clock": clock,
               "max_action_diff_px": max(r["err"]),
               "encoder_wall_ms_p50": 1e3 * statistics.median(r["enc"]),
               "denoise_wall_ms_p50": 1e3 * statistics.median(r["den"]), "calls": len(r["cpu"]),
               "unet_ms_p50": 1e3 * unet[(p, s)], "unet_only_speedup": unet[ref_name] / unet[(p, s)]}
        rows.append(row)
    ref_label = f"{ref_name[0]} {ref_name[1]}"
    print(f"\n| UNet path | sampler | CPU ms p50 | CPU ms p95 | wall ms p50: encoder / denoising | rounds | NFE "
          f"| speed-up ({clock} time) vs {ref_label} | max action diff vs {ref_label} [px] "
          f"| UNet ms | UNet-only speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['sampler']} | {r['cpu_ms_p50']:.1f} | {r['cpu_ms_p95']:.1f} | "
              f"{r['wall_ms_p50']:.1f}: {r['encoder_wall_ms_p50']:.1f} / {r['denoise_wall_ms_p50']:.1f} | "
              f"{r['rounds']:.1f} | {r['nfe']:.1f} | {r['speedup']:.2f}x | {r['max_action_diff_px']:.2f} | "
              f"{r['unet_ms_p50']:.1f} | {r['unet_only_speedup']:.2f}x |")
    print(f"\n  {sum(len(r['cpu']) for r in rec.values())} timed calls in {total:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.2f}. Speed-ups are ratios of {clock}-time medians from this one run.")
    print(f"  UNet ms: time inside the denoiser calls per chunk, median ({clock} time; device time on a GPU); "
          f"UNet-only speed-up: the ratio of those times, i.e. the speed-up if the samplers' own work cost nothing: "
          f"the most a faster sampler loop could reach with these rounds and batches.")
    return {"policy": args.policy, "device": device_name(device), "observations": source, "repeats": args.repeats,
            "windows": len(wins),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "fast_bf16": has_fast_bf16("cpu"),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}


class TimedDenoiser:
    """The denoiser, adding up the time spent inside its calls since `reset()`: on a CPU on `clock` ("cpu":
    process time, "wall": wall-clock); on a GPU the device time between CUDA events recorded around each call
    (read after the chunk, so the host is not made to wait for every call)."""

    def __init__(self, net, clock: str, device: torch.device):
        self.net, self.cuda = net, device.type == "cuda"
        self._now = time.process_time if clock == "cpu" else time.perf_counter
        self.reset()

    def reset(self) -> None:
        self._host, self._events = 0.0, []

    def __call__(self, *args, **kwargs):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.net(*args, **kwargs)
            end.record()
            self._events.append((start, end))
            return out
        t0 = self._now()
        out = self.net(*args, **kwargs)
        self._host += self._now() - t0
        return out

    def seconds(self) -> float:
        if self._events:
            self._events[-1][1].synchronize()
        return self._host + sum(a.elapsed_time(b) for a, b in self._events) / 1e3


def device_name(device: torch.device) -> str:
    """The machine a benchmark ran on, for its header: the CPU, or the GPU's name."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return platform.processor() or platform.machine()


def device_arg(text: str) -> torch.device:
    """argparse `type=` of the benchmarks' --device: a cpu or cuda device that can run here; otherwise argparse
    prints what is wrong with it (`eval.config.device_problem`) and exits."""
    from eval.config import device_problem

    problem = device_problem(text, kinds=("cpu", "cuda"))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return torch.device(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="pusht_keypoints", help="built-in name or checkpoint path")
    p.add_argument("--paths", default="eager,fp32,bf16", help="comma list of: " + ", ".join(PATHS))
    p.add_argument("--samplers", default="ddpm,paraddpm",
                   help="comma list of sampler names, or name:variant as in eval.bench_rounds "
                        "(paraddpm:w48/secant/zero/tol=0.03); the first, on the first path, is the reference")
    p.add_argument("--obs", type=int, default=8, help="observation windows")
    p.add_argument("--repeats", type=int, default=2, help="passes over the windows")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--device", type=device_arg, default="cpu",
                   help="cpu or cuda[:N]; on a GPU speed-ups are wall-clock ratios")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the table to this JSON file")
    args = p.parse_args(argv)
    args.paths = [x for x in args.paths.split(",") if x]
    args.samplers = [x for x in args.samplers.split(",") if x]
    bad = [x for x in args.paths if x not in PATHS]
    if bad:
        p.error(f"unknown UNet path(s) {bad}; choose from {list(PATHS)}")
    from parapolicy.policy import SAMPLERS, SamplerConfig

    bad = [x for x in args.samplers if x.partition(":")[0] not in SAMPLERS]
    if bad:
        p.error(f"unknown sampler(s) {bad}; choose from {list(SAMPLERS)}")
    for spec in args.samplers:
        try:
            sampler_spec(spec, SamplerConfig)
        except ValueError as e:
            p.error(f"sampler {spec!r}: {e}")
    if args.obs < 1 or args.repeats < 1:
        p.error("--obs and --repeats must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    results = run(args)
    if args.json:
        from eval.outputs import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=1))
        print(f"  wrote {args.json}")


if __name__ == "__main__":
    main()

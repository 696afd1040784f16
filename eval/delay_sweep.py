"""Delay sweep through the runtime `Runner`: reward and smoothness against a fixed inference delay, per overlap
mode (docs/realtime.md).

    python -m eval.delay_sweep --out docs/results/delay_sweep                      # 0,2,4,6 x 4 modes, 100 seeds
    python -m eval.delay_sweep --n-episodes 4 --max-steps 60 --out /tmp/sweep     # a smoke run

Each (mode, delay) runs `--n-episodes` Push-T episodes (seeds seed_start..) in simulated time, the protocol of
real-time chunking (Black et al. 2025): every chunk takes `delay` control steps; the Runner executes up to
`--n-action-steps` (default 15, the whole 16-step horizon after the current observation) and requests the next
chunk when `--refill-at` (default 8) actions are left, so a chunk is requested every 15 - 8 = 7 ticks
whatever the delay (the lock-step loop replans every 8) and arrives with 8 - delay of the old chunk's actions
still queued: "replace" drops them, "blend" / "aggregate" mix them with the new chunk's, "inpaint" has fixed
the delay actions that executed meanwhile as the new chunk's prefix (d from the Runner's latency estimate)
and continues from them. Delays above refill_at hold.
Episodes of a block run in lock-step, one Runner each, one batched policy call per tick
(`eval.realtime`). Same per-(seed, chunk) noise in every cell.

Writes into --out: episodes.jsonl (one line per episode; rerunning resumes), delay_sweep.json (per cell:
mean_score with a 95% CI, success, holds, smoothness means), delay_sweep.md (the table) and delay_sweep.png
(mean score against delay, one line per mode).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

MODES = ("replace", "blend", "aggregate", "inpaint")
SMOOTH = ("switch_jump_max", "switch_jump_mean", "within_jump_mean", "switch_jerk_mean", "within_jerk_mean")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.delay_sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="pusht_keypoints")
    p.add_argument("--sampler", default="paraddpm", help="a SamplerConfig name")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--tol", type=float, default=0.1)
    p.add_argument("--delays", type=int, nargs="+", default=[0, 2, 4, 6])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--n-episodes", type=int, default=100)
    p.add_argument("--seed-start", type=int, default=100000)
    p.add_argument("--n-envs", type=int, default=50, help="episodes run side by side (one batched call per tick)")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--refill-at", type=int, default=8, help="request the next chunk when this many actions are left")
    p.add_argument("--n-action-steps", type=int, default=15, help="actions of a chunk the Runner may execute (at "
                   "most horizon - n_obs_steps + 1; the checkpoint's own is 8); 0 = the checkpoint's")
    p.add_argument("--fast", default="auto")
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--report-only", action="store_true", help="rewrite json/md/png from episodes.jsonl")
    a = p.parse_args(argv)
    if any(d < 0 for d in a.delays) or a.n_episodes < 1 or a.n_envs < 1 or a.max_steps < 1:
        p.error("delays must be >= 0; n-episodes, n-envs, max-steps >= 1")
    return a


def run(a: argparse.Namespace) -> None:
    import torch

    from eval import outputs
    from eval.realtime import rollout_runner
    from eval.rollout import CallCounter
    from eval.run import make_env_factory
    from parapolicy.policy import load_policy
    from parapolicy.sampler_config import SamplerConfig

    torch.set_num_threads(a.num_threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ep_path = out / "episodes.jsonl"
    policy = load_policy(a.policy, fast=a.fast)
    if a.n_action_steps:
        if not 1 <= a.n_action_steps <= policy.horizon - policy.action_start:
            raise SystemExit(f"--n-action-steps must be in 1..{policy.horizon - policy.action_start}")
        policy.n_action_steps = a.n_action_steps
    sc = SamplerConfig(name=a.sampler, window=a.window, tol=a.tol)
    done = {(r["mode"], r["delay"], r["seed"]) for r in outputs.read_jsonl(ep_path) if r.get("status") == "ok"}
    seeds = list(range(a.seed_start, a.seed_start + a.n_episodes))
    make_env = make_env_factory({"id": "parapolicy/PushT-v0", "obs_type": "keypoints"}, a.max_steps)
    envs = [make_env() for _ in range(min(a.n_envs, len(seeds)))]
    counter = CallCounter(0)
    t0 = time.time()
    for b in range(0, len(seeds), a.n_envs):
        for delay in a.delays:
            for mode in a.modes:
                todo = [s for s in seeds[b:b + a.n_envs] if (mode, delay, s) not in done]
                trigger = min(a.refill_at, policy.n_action_steps - 1)
                if not todo:
                    continue

                def on_episode(res, frames, mode=mode, delay=delay, trigger=trigger):
                    rec = res.to_dict()
                    rec.pop("probe_obs", None)
                    rec.pop("rewards", None)
                    rec.update(mode=mode, delay=delay, sampler_config=dataclasses.asdict(sc), policy=a.policy,
                               refill_at=trigger, n_action_steps=policy.n_action_steps)
                    outputs.append_jsonl(ep_path, rec)

                t = time.time()
                rollout_runner(policy, sc, f"{mode}@{delay}", envs, todo, a.max_steps, counter, control_hz=10,
                               fixed_delay=delay, trigger=trigger, overlap=mode, on_episode=on_episode)
                print(f"{mode} delay {delay}: {len(todo)} episodes in {time.time() - t:.0f} s "
                      f"(total {time.time() - t0:.0f} s)", file=sys.stderr)
    for e in envs:
        e.close()


def aggregate(records: list[dict]) -> dict:
    """episodes -> {"cells": [{mode, delay, n, mean_score {mean, lo, hi}, success, holds, smoothness...}]}"""
    from eval.metrics import mean_ci, paired_difference
    from eval.run import smoothness_summary

    cells = {}
    for r in records:
        if r.get("status") == "ok":
            cells.setdefault((r["mode"], r["delay"]), []).append(r)
    rows = []
    for (mode, delay), eps in sorted(cells.items(), key=lambda kv: (MODES.index(kv[0][0]), kv[0][1])):
        rows.append({"mode": mode, "delay": delay, "n": len(eps),
                     "mean_score": mean_ci([e["max_reward"] for e in eps], bounds=(0.0, 1.0)),
                     "success": sum(bool(e["success"]) for e in eps) / len(eps),
                     "holds_per_episode": sum(e["held_steps"] for e in eps) / len(eps),
                     "smoothness": smoothness_summary(eps)})
    by_seed = {k: {e["seed"]: e["max_reward"] for e in eps} for k, eps in cells.items()}
    for row in rows:  # paired by seed (same noise) against replace at the same delay
        ref = by_seed.get(("replace", row["delay"]))
        if ref is not None and row["mode"] != "replace":
            d = paired_difference(ref, by_seed[(row["mode"], row["delay"])], bounds=(-1.0, 1.0))
            d.pop("seeds")
            row["vs_replace"] = d
    return {"cells": rows}


def markdown(res: dict, command: str) -> str:
    def f(x, fmt="{:.1f}"):
        return "-" if x is None else fmt.format(x)

    def ci(m, fmt="{:.3f}"):
        return f"{fmt.format(m['mean'])} [{f(m['lo'], fmt)}, {f(m['hi'], fmt)}]"

    lines = ["| mode | delay (steps) | n | mean_score (95% CI) | d vs replace (paired) | success | holds/ep | "
             "max jump at switch (px) | mean jump: switch / within | mean jerk: switch / within |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        s = c["smoothness"]
        d = ci(c["vs_replace"], "{:+.3f}") if c.get("vs_replace") else "-"
        lines.append(f"| {c['mode']} | {c['delay']} | {c['n']} | {ci(c['mean_score'])} | {d} | "
                     f"{100 * c['success']:.0f}% | "
                     f"{c['holds_per_episode']:.1f} | {f(s['switch_jump_max'])} | "
                     f"{f(s['switch_jump_mean'])} / {f(s['within_jump_mean'])} | "
                     f"{f(s['switch_jerk_mean'])} / {f(s['within_jerk_mean'])} |")
    lines += ["", "d vs replace: mean per-seed difference of max reward from replace at the same delay (same seeds "
              "and noise), 95% t-interval. max jump: the largest |a_k - a_{k-1}| at a chunk switch per episode, "
              "averaged over episodes; jerk: |a_k - 3a_{k-1} + 3a_{k-2} - a_{k-3}| over 4-tick windows containing a switch / inside one chunk.",
              "", f"`{command}`"]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.outputs import _save

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in MODES:
        cs = [c for c in res["cells"] if c["mode"] == mode]
        if not cs:
            continue
        x = [c["delay"] for c in cs]
        y = [c["mean_score"]["mean"] for c in cs]
        lo = [c["mean_score"]["lo"] if c["mean_score"]["lo"] is not None else y_ for c, y_ in zip(cs, y)]
        hi = [c["mean_score"]["hi"] if c["mean_score"]["hi"] is not None else y_ for c, y_ in zip(cs, y)]
        ax.plot(x, y, marker="o", label=mode)
        ax.fill_between(x, lo, hi, alpha=0.15)
    ax.set_xlabel("inference delay (control steps of 0.1 s)")
    ax.set_ylabel("mean score (max coverage)")
    ax.set_title("Push-T through the Runner: reward vs delay")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def main(argv=None) -> int:
    from eval import outputs

    a = parse(argv)
    if not a.report_only:
        run(a)
    out = Path(a.out)
    res = aggregate(outputs.read_jsonl(out / "episodes.jsonl"))
    command = "python -m eval.delay_sweep " + " ".join(sys.argv[1:] if argv is None else argv)
    res.update(command=command, date_utc=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    outputs.write_json(out / "delay_sweep.json", res)
    md = markdown(res, command)
    outputs.atomic_write_text(out / "delay_sweep.md", md)
    if res["cells"]:
        plot(res, out / "delay_sweep.png")
    print(md)
    print(json.dumps({"cells": len(res["cells"])}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

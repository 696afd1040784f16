"""Closed-loop evaluation of samplers on one policy: `python -m eval.run [hydra overrides]`.

    python -m eval.run                                   # ddpm vs paraddpm, shipped Push-T policy
    python -m eval.run samplers=[ddpm,paraddpm,paraddim] n_episodes=50 n_envs=10
    python -m eval.run realtime=true n_envs=1            # latency-aware mode (the runtime Runner, measured latency)
    python -m eval.run realtime=true realtime_delay=4 realtime_overlap=inpaint   # fixed delay, envs batched
    python -m eval.run -m sampler.window=4,8,16 hydra/launcher=joblib   # a sweep, then python -m eval.report DIR

Outputs go to the Hydra run dir (see configs/eval.yaml): episodes.jsonl, results.json, results.md, *.png,
wandb/ (offline by default). Rerunning with the same `hydra.run.dir` resumes: finished episodes are skipped.
Every sampler in a run sees the same episode seeds and the same per-(seed, chunk) noise (eval.rollout).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from eval.config import EvalConfig, key_error, validate


# ---------------------------------------------------------------------------------------------- helpers
def make_env_factory(env_cfg: dict, max_steps: int, render: bool = False):
    """-> a function making one env: gymnasium.make(id, max_episode_steps=max_steps, **kwargs); ids in the
    parapolicy/ namespace import `envs` first (registration)."""
    kwargs = {k: v for k, v in env_cfg.items() if k not in ("id", "control_hz")}
    if render:
        kwargs["render_mode"] = "rgb_array"

    def make():
        import gymnasium as gym
        if env_cfg["id"].startswith("parapolicy/"):
            import envs  # noqa: F401 - registers parapolicy/PushT-v0
        return gym.make(env_cfg["id"], max_episode_steps=max_steps, **kwargs)

    return make


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_keys(ec: EvalConfig, samplers: dict, policy) -> dict:
    """{label: key}: an episode recorded under the same key is the same experiment (resume skips it)."""
    common = {"policy": ec.policy.get("path"), "policy_config": _hash(policy.config), "env": ec.env,
              "max_steps": ec.max_steps, "realtime": ec.realtime, "noise": ec.noise, "fast": policy.inference,
              "rt": (["runner", ec.latency_scale, ec.realtime_trigger, ec.realtime_delay, ec.realtime_overlap,
                      ec.realtime_inpaint_steps] if ec.realtime else None)}
    return {label: _hash({**common, "sampler": sampler_key(sc)}) for label, sc in samplers.items()}


# The SamplerConfig fields of the first results format; a field added later enters an experiment's key only
# when it differs from its default, so adding a knob never invalidates recorded episodes.
_KEY_FIELDS = ("name", "num_inference_steps", "window", "tol", "max_iters", "accel", "warm_start")


def sampler_key(sc) -> dict:
    """The part of a SamplerConfig that identifies an experiment (see _KEY_FIELDS)."""
    from parapolicy.sampler_config import SamplerConfig

    full, default = dataclasses.asdict(sc), dataclasses.asdict(SamplerConfig(name=sc.name))
    return {k: v for k, v in full.items() if k in _KEY_FIELDS or v != default[k]}


def versions() -> dict:
    import numpy
    import torch

    out = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "numpy": numpy.__version__}
    for mod in ("diffusers", "gymnasium", "pymunk", "hydra", "wandb"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    try:
        from importlib.metadata import version
        out["parapolicy"] = version("parapolicy")
    except Exception:  # noqa: BLE001
        import parapolicy
        out["parapolicy"] = getattr(parapolicy, "__version__", None)
    return out


def reference_label(samplers: dict) -> str:
    """The sampler paired differences are taken against: the first sequential one, else the first."""
    return next((k for k, s in samplers.items() if not s.parallel), next(iter(samplers)))


# ---------------------------------------------------------------------------------------------- results
def aggregate(ec: EvalConfig, samplers: dict, keys: dict, records: list[dict], probe_out: dict | None,
              extra: dict) -> tuple[dict, dict]:
    """Per-sampler metrics and paired differences from the episode records -> (results, latencies {label: ms})."""
    from eval.metrics import paired_difference, sampler_metrics, summary

    latest = {}
    for r in records:  # the last record of an episode wins (a retried error is replaced by its rerun)
        if r.get("key") == keys.get(r.get("sampler")):
            latest[(r["sampler"], r["seed"])] = r
    seeds = set(range(ec.seed_start, ec.seed_start + ec.n_episodes))
    per, lat_all, scores, succ = {}, {}, {}, {}
    for label in samplers:
        eps = [r for (lab, s), r in sorted(latest.items()) if lab == label and s in seeds]
        ok = [e for e in eps if e["status"] == "ok"]
        calls = [c for e in ok for c in e["calls"]]
        rollout_lat = [c["ms"] for c in calls if not c["warmup"] and c["batch"] == 1]
        if ec.n_envs == 1 and rollout_lat:
            lat, source = rollout_lat, "rollout (every batch-1 call, warm-up excluded)"
        elif probe_out and probe_out.get(label, {}).get("latency_ms"):
            lat, source = probe_out[label]["latency_ms"], (
                f"probe ({len(probe_out[label]['latency_ms'])} batch-1 calls on recorded observations)")
        else:
            lat, source = [], "none"
        lat_all[label] = lat
        err = probe_out.get(label, {}).get("max_action_error") if probe_out else None
        m = sampler_metrics(ok, lat, source, [c["rounds"] for c in calls], [c["nfe"] for c in calls],
                            sum(e.get("wall_s", 0.0) for e in eps), err)
        m["n_errors"] = len(eps) - len(ok)
        m["errors"] = [{"seed": e["seed"], "error": e["error"]} for e in eps if e["status"] != "ok"][:10]
        m["vectorised_call_ms"] = summary([c["ms"] for c in calls if not c["warmup"]])
        # latency split of one call (batch 1, same source as latency_ms): condition (image encoders) / sampler
        for part in ("encoder_ms", "denoise_ms"):
            if source.startswith("rollout"):
                vals = [c.get(part) for c in calls if not c["warmup"] and c["batch"] == 1]
            else:
                vals = (probe_out or {}).get(label, {}).get(part, [])
            m[part] = summary([v for v in vals if v is not None])
        if ec.realtime:
            m["held_steps_per_episode"] = sum(e["held_steps"] for e in ok) / max(1, len(ok))
            m["dropped_actions_per_episode"] = sum(e["dropped_actions"] for e in ok) / max(1, len(ok))
            m["smoothness"] = smoothness_summary(ok)
            m["runner_chunks_per_episode"] = sum(e.get("runner", {}).get("n_chunks", 0) for e in ok) / max(1, len(ok))
        m["sampler_config"] = dataclasses.asdict(samplers[label])
        per[label] = m
        scores[label] = {e["seed"]: e["max_reward"] for e in ok}
        succ[label] = {e["seed"]: 100.0 if e["success"] else 0.0 for e in ok}
    ref = reference_label(samplers)
    paired = {label: {"max_reward": paired_difference(scores[ref], scores[label], bounds=(-1.0, 1.0)),
                      "success": paired_difference(succ[ref], succ[label], bounds=(-100.0, 100.0))}
              for label in samplers if label != ref}
    for p in paired.values():
        for v in p.values():
            v.pop("seeds", None)
    results = {"samplers": per, "reference": ref, "paired": paired, **extra}
    return results, lat_all


def smoothness_summary(episodes: list[dict]) -> dict:
    """Per-episode switch smoothness (`eval.realtime.switch_smoothness`) -> the mean over episodes of each entry
    (NaN entries skipped; switch_jump_max is also maxed over episodes as switch_jump_max_all)."""
    import math

    rows = [e.get("smoothness") or {} for e in episodes]
    out = {}
    for k in ("switch_jump_max", "switch_jump_mean", "within_jump_max", "within_jump_mean", "switch_jerk_mean",
              "within_jerk_mean", "n_switches"):
        vals = [r[k] for r in rows if k in r and r[k] is not None and not math.isnan(r[k])]
        out[k] = sum(vals) / len(vals) if vals else None
    jm = [r["switch_jump_max"] for r in rows if r.get("switch_jump_max") is not None
          and not math.isnan(r["switch_jump_max"])]
    out["switch_jump_max_all"] = max(jm) if jm else None
    return out


def _probe_windows(records: list[dict], label: str, key: str, n: int) -> list[tuple[int, int, list]]:
    pool = [(r["seed"], c, w) for r in records if r.get("sampler") == label and r.get("key") == key
            and r["status"] == "ok" for c, w in r.get("probe_obs", [])]
    if len(pool) <= n:
        return pool
    idx = [round(i * (len(pool) - 1) / (n - 1)) for i in range(n)] if n > 1 else [0]
    return [pool[i] for i in idx]


def evaluate(raw_cfg: dict, out_dir: str | os.PathLike, command: str | None = None) -> dict:
    """Run (or resume) an evaluation into out_dir and write every output. Returns the results dict.
    command: the command line that started it (recorded in results.json and results.md)."""
    ec, samplers = validate(raw_cfg)
    import numpy as np
    import torch

    from eval import outputs
    from eval.realtime import rollout_runner
    from eval.rollout import CallCounter, probe, rollout_block
    from parapolicy.policy import load_policy

    if ec.num_threads:
        torch.set_num_threads(ec.num_threads)
    try:
        policy = load_policy(ec.policy["path"], device=ec.device, fast=ec.fast_denoiser)
    except (FileNotFoundError, ValueError) as e:
        raise key_error("policy.path", str(e)) from None
    if getattr(policy, "vision", None) is not None and ec.env.get("obs_type") != "pixels":
        # the env observation type follows the policy: an image policy reads the pixel env
        print(f"policy {ec.policy['path']} reads images: env.obs_type {ec.env.get('obs_type')!r} -> 'pixels'",
              file=sys.stderr)
        ec.env = dict(ec.env, obs_type="pixels")
    make_env = make_env_factory(ec.env, ec.max_steps)
    try:
        probe_env = make_env()
        probe_env.close()
    except Exception as e:  # noqa: BLE001
        raise key_error("env.id", f"cannot make {ec.env.get('id')!r}: {type(e).__name__}: {e}") from None

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ep_path = out / "episodes.jsonl"
    keys = run_keys(ec, samplers, policy)
    if not ec.resume and ep_path.exists():
        ep_path.rename(out / f"episodes.{int(time.time())}.jsonl.bak")
    records = outputs.read_jsonl(ep_path)
    done = {(r["sampler"], r["seed"]) for r in records if r.get("status") == "ok" and r.get("key") == keys.get(
        r.get("sampler"))}
    seeds = list(range(ec.seed_start, ec.seed_start + ec.n_episodes))
    ref = reference_label(samplers)
    video_seeds = set(seeds[:ec.videos])
    probe_every = max(1, ec.max_steps // policy.n_action_steps // 4)  # ~4 windows per episode
    image_policy = getattr(policy, "vision", None) is not None
    keep_probe_episodes = -(-(ec.probe_calls + ec.warmup_calls) // 4) + 1
    counter = CallCounter(ec.warmup_calls)
    config_record = {**dataclasses.asdict(ec), "samplers_resolved": {k: dataclasses.asdict(v)
                                                                      for k, v in samplers.items()},
                     "policy_source": policy.source, "policy_resolved_path": policy.path, "out_dir": str(out)}

    total = len(seeds) * len(samplers)
    bar = None
    if ec.progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=len([d for d in done if d[1] in seeds]), desc="episodes", unit="ep",
                   file=sys.stderr, dynamic_ncols=True)

    def on_episode(label: str):
        def f(res, frames):
            rec = res.to_dict()
            rec.update(key=keys[label], time=time.time())
            if label != ref or (image_policy and res.seed >= ec.seed_start + keep_probe_episodes):
                rec["probe_obs"] = []  # image windows are ~0.3 MB of JSON each: keep only what the probe uses
            outputs.append_jsonl(ep_path, rec)
            records.append(rec)
            if frames:
                try:
                    outputs.write_gif(frames, out / f"episode_{label}_{res.seed}.gif")
                except Exception as e:  # noqa: BLE001 - a video never costs the episode
                    print(f"warning: gif for {label} seed {res.seed} failed: {e}", file=sys.stderr)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{label} seed {res.seed} max_reward {res.max_reward:.2f}")
        return f

    # one untimed call per sampler on a real first observation: imports, scheduler set-up and first-call
    # allocations then count in no episode's time (the warm-up calls are excluded from latency as well)
    todo_any = [label for label in samplers if any((label, s) not in done for s in seeds)]
    if todo_any:
        from eval.rollout import _reset, predict_chunk
        env = make_env()
        window = np.stack(list(_reset(env, seeds[0], policy.n_obs_steps)))
        env.close()
        for label in todo_any:
            predict_chunk(policy, samplers[label], [seeds[0]], [0], [window] * 1)

    interrupted = False
    t0 = time.time()
    envs_cache: dict = {}
    try:
        for b in range(0, len(seeds), ec.n_envs):
            block = seeds[b:b + ec.n_envs]
            for label, sc in samplers.items():  # samplers interleaved per block: fair under CPU drift
                todo = [s for s in block if (label, s) not in done]
                if not todo:
                    continue
                render = bool(video_seeds & set(todo))
                if render not in envs_cache:
                    envs_cache[render] = [make_env_factory(ec.env, ec.max_steps, render)()
                                          for _ in range(min(ec.n_envs, len(seeds)))]
                envs = envs_cache[render]
                frames_for = video_seeds & set(todo) if render else None
                if ec.realtime:  # the runtime Runner on a simulated clock (eval.realtime)
                    rollout_runner(policy, sc, label, envs, todo, ec.max_steps, counter,
                                   control_hz=ec.env.get("control_hz", 10), latency_scale=ec.latency_scale,
                                   fixed_delay=ec.realtime_delay, trigger=ec.realtime_trigger,
                                   overlap=ec.realtime_overlap, inpaint_steps=ec.realtime_inpaint_steps,
                                   same_noise_all_chunks=ec.noise == "episode", record_frames=frames_for,
                                   on_episode=on_episode(label))
                else:
                    def on_cycle(step, running, label=label):
                        if bar is not None:
                            bar.set_postfix_str(f"{label}: step {step}/{ec.max_steps}, {running} running")
                    rollout_block(policy, sc, label, envs, todo, ec.max_steps, counter, probe_every,
                                  frames_for, on_episode(label), on_cycle,
                                  same_noise_all_chunks=ec.noise == "episode", relay=ec.noise == "relay")
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: writing results of the finished episodes", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
        for envs in envs_cache.values():
            for e in envs:
                try:
                    e.close()
                except Exception:  # noqa: BLE001
                    pass
    run_s = time.time() - t0

    probe_out = None
    if not interrupted and ec.probe_calls > 0:
        windows = _probe_windows(records, ref, keys[ref], ec.probe_calls + ec.warmup_calls)
        try:
            if windows:
                probe_out = probe(policy, samplers, windows, warmup=min(ec.warmup_calls, len(windows) - 1))
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted during the latency probe: writing results without it", file=sys.stderr)
    extra = {"command": command, "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "config": config_record, "versions": versions(), "interrupted": interrupted,
             "denoiser": policy.inference,
             "run_seconds_this_process": run_s, "keys": keys,
             "probe": {k: {kk: vv for kk, vv in v.items() if kk not in ("latency_ms", "encoder_ms", "denoise_ms")}
                       for k, v in (probe_out or {}).items()}}
    results, latencies = aggregate(ec, samplers, keys, records, probe_out, extra)
    outputs.write_json(out / "results.json", results)
    md = outputs.results_markdown(results)
    outputs.atomic_write_text(out / "results.md", md)
    episodes = [r for r in records if r.get("key") == keys.get(r.get("sampler"))]
    plots = []
    if ec.plots:
        try:
            plots = outputs.make_plots(results, episodes, latencies, out)
        except Exception as e:  # noqa: BLE001
            print(f"warning: plots failed: {e}", file=sys.stderr)
    if interrupted:
        print(md)
        raise KeyboardInterrupt
    from eval.wandb_log import log_results

    wb = dict(ec.wandb)
    wb.setdefault("name", out.name)
    results["wandb"] = log_results(results, episodes, latencies, plots, wb, str(out))
    outputs.write_json(out / "results.json", results)
    print(md)
    if results["wandb"]["status"] == "failed":
        print(f"warning: wandb logging failed ({results['wandb']['error']}); local results are complete",
              file=sys.stderr)
    return results


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    @hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
    def _main(cfg) -> float | None:
        raw = OmegaConf.to_container(cfg, resolve=True)
        hc = HydraConfig.get()
        command = " ".join(["python -m eval.run", *hc.overrides.task,  # + where it wrote (resume needs it)
                            *[o for o in hc.overrides.hydra if o.startswith("hydra.run.dir=")]])
        res = evaluate(raw, hc.runtime.output_dir, command=command)
        ref = res["samplers"][res["reference"]]
        return ref["mean_score"]

    _main()


if __name__ == "__main__":
    main()

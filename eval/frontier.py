"""The speed/reward frontier: every "act faster" option on the same seeds, one table and one plot.

    python -m eval.frontier                                   # 50 seeds, n_envs=10, shipped teacher
    python -m eval.frontier n_episodes=2 frontier.steps=[5] frontier.students=none   # a small smoke run
    python -m eval.frontier hydra.run.dir=runs/frontier/<time>                       # resume / add entries
    python -m eval.frontier frontier.plan=true                # list the entries and what is left, run nothing

Entries (configs/frontier.yaml, `frontier.*`), each a row of the table:

* the teacher's DDPM at its own step count S (100 for Diffusion Policy) and ParaDDPM-S, cold start;
* `few_step` samplers (ddim, paraddim, dpmsolver, paradpmsolver) at every k in `steps`;
* with `warm_start`, a second group with one noise draw per episode (`noise=episode`, what warm start needs):
  DDPM-S, ParaDDPM-S cold and ParaDDPM-S warm start, so the warm start is compared with its fair pairs;
* the distilled students listed in a students.json (`parapolicy.distill`), each with `student_samplers`
  (ddim, paraddim) at its own step count;
* a consistency student (`parapolicy.consistency`, `frontier.consistency`) with its own `consistency` sampler at
  every k in `consistency_steps` (one group: same seeds and per-chunk noise for every k).

Entries that share a policy and a noise mode form a group that `eval.run.evaluate` runs in `<out>/<group>/`
(same seeds, same per-(seed, chunk) noise, samplers interleaved, one batch-1 latency probe), so every eval.run
key (n_episodes, n_envs, fast_denoiser, sampler.window, ...) applies to every entry. A finished group leaves
`frontier_group.json` holding a fingerprint of its config: rerunning the same command skips it, a changed or
added entry reruns its group, where eval.run skips the episodes already recorded. The table is rewritten
(atomically) after every group, so a crash keeps what finished. Outputs: frontier.md, frontier.json,
frontier.csv, frontier.png (eval.frontier_report) and a wandb run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FEW_STEP = ("ddim", "paraddim", "dpmsolver", "paradpmsolver")
STUDENT_SAMPLERS = ("ddim", "paraddim")
FRONTIER_KEYS = ("steps", "few_step", "paraddpm", "warm_start", "students", "student_samplers", "consistency",
                 "consistency_steps", "plan")
AUTO_STUDENTS = ("runs/distill_long", "runs/distill")
AUTO_CONSISTENCY = "runs/consistency"
# per-row fields read from the results (None until the entry has run); eval.frontier_report documents them
RESULT_FIELDS = ("window", "tol", "accel", "n_episodes", "n_errors", "mean_score", "mean_score_ci95", "pc_success",
                 "pc_success_ci95", "latency_p50_ms", "latency_p95_ms", "latency_source", "latency_cold_probe_p50_ms",
                 "rounds_mean", "nfe_mean", "rounds_mean_probe_batch1", "max_action_error", "episodes_per_min",
                 "interrupted", "d_score", "d_score_ci95", "d_success", "d_success_ci95", "n_pairs")
# eval.run keys that do not change what an entry measures: left out of a group's fingerprint
NOT_FINGERPRINTED = ("progress", "plots", "videos", "resume", "wandb")


@dataclass(frozen=True)
class Entry:
    """One row of the frontier: a policy sampled by one sampler under one noise mode."""

    label: str
    """unique row name, e.g. "paraddim-10", "paraddpm-100-warm (episode noise)", "student r3 ddim-12\""""
    family: str
    """plot family: "sequential", "picard", "student" or "consistency\""""
    group: str
    """subdirectory of the entries run together by eval.run (same policy, same noise mode)"""
    policy: str
    """checkpoint path or built-in name"""
    policy_name: str
    """"teacher" or "student r<round>\""""
    noise: str
    """eval.run's noise mode: chunk (fresh noise per chunk) or episode (one noise per episode)"""
    sampler: dict
    """the eval.run `samplers` entry: name, label (unique in the group), SamplerConfig fields"""
    steps: int
    """reverse steps of the sampler (its step noise length, its rounds when sequential)"""
    reference: str | None
    """label of the entry paired differences are taken against (same seeds); None for the reference itself"""


def _err(key: str, msg: str) -> ValueError:
    return ValueError(f"config key '{key}': {msg}")


# --------------------------------------------------------------------------------------------- config
def check_frontier(raw: dict) -> dict:
    """Validate the `frontier` node and the eval.run keys the frontier sets itself -> the frontier node.
    Raises ValueError naming the key."""
    fr = dict(raw.get("frontier") or {})
    unknown = sorted(set(fr) - set(FRONTIER_KEYS))
    if unknown:
        raise _err(f"frontier.{unknown[0]}", f"unknown key; known: {', '.join(FRONTIER_KEYS)}")
    fr = {"steps": [5, 10, 20], "few_step": list(FEW_STEP), "paraddpm": True, "warm_start": True,
          "students": "auto", "student_samplers": ["ddim"], "consistency": "auto", "consistency_steps": [1, 2, 3, 4],
          "plan": False, **fr}
    for key in ("samplers", "noise"):
        if raw.get(key) is not None:
            raise _err(key, "the frontier sets it per entry; choose entries with frontier.* "
                            f"(got {raw[key]!r})")
    sampler = raw.get("sampler") or {}
    if sampler.get("num_inference_steps") is not None:
        raise _err("sampler.num_inference_steps", "the frontier sets the step count per entry "
                                                  "(frontier.steps); leave it null")
    if sampler.get("warm_start"):
        raise _err("sampler.warm_start", "warm start runs in its own episode-noise group "
                                         "(frontier.warm_start=true); leave it false")
    for key in ("paraddpm", "warm_start", "plan"):
        if not isinstance(fr[key], bool):
            raise _err(f"frontier.{key}", f"must be true or false, got {fr[key]!r}")
    for key, allowed in (("few_step", FEW_STEP), ("student_samplers", STUDENT_SAMPLERS)):
        names = fr[key] if fr[key] is not None else []
        if not isinstance(names, list | tuple):
            raise _err(f"frontier.{key}", f"must be a list of sampler names, got {names!r}")
        for i, name in enumerate(names):
            if name not in allowed:
                raise _err(f"frontier.{key}[{i}]", f"unknown sampler {name!r}; choose from {', '.join(allowed)}")
        fr[key] = list(dict.fromkeys(names))
    steps = fr["steps"] if fr["steps"] is not None else []
    if not isinstance(steps, list | tuple) or (fr["few_step"] and not steps):
        raise _err("frontier.steps", f"must be a non-empty list of step counts (k >= 1), got {steps!r}")
    for i, k in enumerate(steps):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise _err(f"frontier.steps[{i}]", f"must be an integer k >= 1, got {k!r}")
    fr["steps"] = list(dict.fromkeys(steps))
    cs = fr["consistency_steps"] if fr["consistency_steps"] is not None else []
    if not isinstance(cs, list | tuple) or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in cs):
        raise _err("frontier.consistency_steps", f"must be a list of step counts (k >= 1), got {cs!r}")
    fr["consistency_steps"] = list(dict.fromkeys(cs))
    cm = fr["consistency"]
    if cm is False or (isinstance(cm, str) and cm.lower() in ("none", "")):
        fr["consistency"] = None
    elif cm is not None and not isinstance(cm, str):
        raise _err("frontier.consistency", f"must be auto, none or a path, got {cm!r}")
    st = fr["students"]
    if st is False or (isinstance(st, str) and st.lower() in ("none", "")):
        fr["students"] = None
    elif st is not None and not isinstance(st, str):
        raise _err("frontier.students", f"must be auto, none or a path, got {st!r}")
    return fr


def find_students(spec: str | None, cwd: str | os.PathLike = ".") -> tuple[list[dict], str]:
    """Students to evaluate -> ([{"steps", "round", "policy" (resolved path)}], a note saying where they came from).

    spec: None (none), "auto" (the first of runs/distill_long, runs/distill below cwd that has a students.json;
    none found is not an error), or a students.json / a `parapolicy.distill` out dir (missing: an error).
    A student's policy path is looked up as the distill run lays it out (<dir>/round<r>/policy), then as written
    (absolute, or relative to cwd), then relative to the students.json's directory."""
    cwd = Path(cwd)
    if spec is None:
        return [], "students: none (frontier.students=none)"
    if spec == "auto":
        found = [cwd / d / "students.json" for d in AUTO_STUDENTS if (cwd / d / "students.json").exists()]
        if not found:
            return [], (f"students: none found ({' and '.join(d + '/students.json' for d in AUTO_STUDENTS)} do "
                        f"not exist below {cwd.resolve()}); set frontier.students=PATH to add them")
        path = found[0]
    else:
        path = Path(spec)
        if not path.is_absolute():
            path = cwd / path
        if path.is_dir():
            path = path / "students.json"
        if not path.exists():
            raise _err("frontier.students", f"no students file at {path} (give a students.json or a "
                                            "parapolicy.distill out dir, or none)")
    try:
        listed = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise _err("frontier.students", f"cannot read {path}: {e}") from None
    if not isinstance(listed, list):
        raise _err("frontier.students", f"{path} must hold a list of {{steps, round, policy}}, got "
                                        f"{type(listed).__name__}")
    out = []
    for i, s in enumerate(listed):
        if not isinstance(s, dict) or not isinstance(s.get("steps"), int) or not s.get("policy"):
            raise _err("frontier.students", f"{path} entry {i} needs integer 'steps' and 'policy', got {s!r}")
        rnd = s.get("round", i + 1)
        cands = [path.parent / f"round{rnd}" / "policy", Path(s["policy"]), cwd / s["policy"],
                 path.parent / s["policy"]]
        hit = next((c for c in cands if (c / "config.json").exists() or c.is_file()), None)
        if hit is None:
            raise _err("frontier.students", f"student {i} of {path}: no checkpoint at any of "
                                            f"{', '.join(str(c) for c in cands)}")
        out.append({"steps": s["steps"], "round": rnd, "policy": str(hit.resolve())})
    return out, f"students: {len(out)} from {path.absolute()}"


def find_consistency(spec: str | None, cwd: str | os.PathLike = ".") -> tuple[str | None, str]:
    """The consistency student to evaluate -> (its policy directory resolved, or None; a note).

    spec: None (none), "auto" (runs/consistency/policy below cwd if it exists; none is not an error), or a
    `parapolicy.consistency` out dir or its policy dir (missing, or not a consistency student: an error)."""
    if spec is None:
        return None, "consistency: none (frontier.consistency=none)"
    cwd = Path(cwd)
    if spec == "auto":
        hit = cwd / AUTO_CONSISTENCY / "policy"
        if not (hit / "config.json").exists():
            return None, (f"consistency: none found ({AUTO_CONSISTENCY}/policy does not exist below {cwd.resolve()}); "
                          "set frontier.consistency=PATH to add one")
    else:
        path = Path(spec) if Path(spec).is_absolute() else cwd / spec
        hit = next((c for c in (path / "policy", path) if (c / "config.json").exists()), None)
        if hit is None:
            raise _err("frontier.consistency", f"no consistency student at {path} (give a parapolicy.consistency "
                                               "out dir or its policy dir, or none)")
    try:
        cfg = json.loads((hit / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise _err("frontier.consistency", f"cannot read {hit / 'config.json'}: {e}") from None
    if "consistency" not in cfg:
        raise _err("frontier.consistency", f"{hit} is not a consistency student (its config has no 'consistency')")
    return str(hit.resolve()), f"consistency: {hit.resolve()}"


def build_entries(fr: dict, teacher: str, teacher_steps: int, students: list[dict],
                  consistency: str | None = None) -> list[Entry]:
    """The frontier's entries from the validated `frontier` node. Pure.

    teacher: the teacher's checkpoint; teacher_steps: its own step count S (DDPM-S is the reference).
    students: [{"steps", "round", "policy"}] (find_students); consistency: a consistency student's policy dir
    (find_consistency) or None."""
    s = teacher_steps
    ref = f"ddpm-{s}"
    teach = dict(policy=teacher, policy_name="teacher")

    def seq_or_picard(name: str) -> str:
        return "picard" if name.startswith("para") else "sequential"

    out = [Entry(ref, "sequential", "teacher", noise="chunk", sampler={"name": "ddpm", "label": ref}, steps=s,
                 reference=None, **teach)]
    if fr["paraddpm"]:
        out.append(Entry(f"paraddpm-{s}", "picard", "teacher", noise="chunk", steps=s, reference=ref,
                         sampler={"name": "paraddpm", "label": f"paraddpm-{s}"}, **teach))
    for name in fr["few_step"]:
        for k in fr["steps"]:
            out.append(Entry(f"{name}-{k}", seq_or_picard(name), "teacher", noise="chunk", steps=k, reference=ref,
                             sampler={"name": name, "num_inference_steps": k, "label": f"{name}-{k}"}, **teach))
    if fr["warm_start"]:
        ep_ref = f"{ref} (episode noise)"
        for name, warm in (("ddpm", False), ("paraddpm", False), ("paraddpm", True)):
            label = f"{name}-{s}" + ("-warm" if warm else "")
            sampler = {"name": name, "label": label, **({"warm_start": True} if warm else {})}
            out.append(Entry(f"{label} (episode noise)", seq_or_picard(name), "teacher_episode_noise",
                             noise="episode", sampler=sampler, steps=s,
                             reference=None if name == "ddpm" else ep_ref, **teach))
    for st in students:
        for name in fr["student_samplers"]:
            label = f"{name}-{st['steps']}"
            out.append(Entry(f"student r{st['round']} {label}", "student", f"student_r{st['round']}_{st['steps']}",
                             policy=st["policy"], policy_name=f"student r{st['round']}", noise="chunk",
                             sampler={"name": name, "label": label}, steps=st["steps"], reference=ref))
    for k in (fr.get("consistency_steps") or []) if consistency else []:
        label = f"consistency-{k}"
        out.append(Entry(f"student {label}", "consistency", "consistency", policy=consistency,
                         policy_name="consistency student", noise="chunk",
                         sampler={"name": "consistency", "num_inference_steps": k, "label": label}, steps=k,
                         reference=ref))
    labels = [e.label for e in out]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup:
        raise _err("frontier", f"entry {dup!r} appears twice (two students with the same round and steps?)")
    return out


def groups(entries: list[Entry]) -> dict[str, list[Entry]]:
    """{group: entries} in first-appearance order."""
    out: dict[str, list[Entry]] = {}
    for e in entries:
        out.setdefault(e.group, []).append(e)
    return out


def group_config(raw: dict, entries: list[Entry]) -> dict:
    """eval.run's config for one group: the pass-through keys of `raw`, this group's policy, samplers and noise,
    wandb off (the frontier logs one run of its own)."""
    cfg = {k: v for k, v in raw.items() if k not in ("frontier", "hydra")}
    cfg["policy"] = dict(raw.get("policy") or {}, path=entries[0].policy)
    cfg["samplers"] = [dict(e.sampler) for e in entries]
    cfg["noise"] = entries[0].noise
    cfg["wandb"] = {"mode": "disabled"}
    return cfg


def fingerprint(cfg: dict) -> str:
    kept = {k: v for k, v in cfg.items() if k not in NOT_FINGERPRINTED}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare(raw: dict, cwd: str | os.PathLike = ".") -> tuple[dict, list[Entry], str, dict]:
    """Check everything before any episode -> (frontier node, entries, students note, resolved config: eval.run's
    keys with their defaults filled in, plus `frontier`). Loads the teacher's and the students' checkpoint
    configs; every group's config goes through eval.run.validate."""
    from eval.run import validate
    from parapolicy.checkpoint import load_checkpoint

    fr = check_frontier(raw)
    path = (raw.get("policy") or {}).get("path")
    if not path:
        raise _err("policy.path", "the teacher's checkpoint path or built-in name is required")
    try:
        tcfg = load_checkpoint(path).config
    except (FileNotFoundError, ValueError) as e:
        raise _err("policy.path", str(e)) from None
    n_train = int(tcfg["scheduler"].get("num_train_timesteps", 1000))
    for i, k in enumerate(fr["steps"]):
        if fr["few_step"] and k > n_train:
            raise _err(f"frontier.steps[{i}]", f"k={k} exceeds the teacher's {n_train} training timesteps")
    students, note = find_students(fr["students"], cwd)
    for st in students:
        try:
            scfg = load_checkpoint(st["policy"]).config
        except (FileNotFoundError, ValueError) as e:
            raise _err("frontier.students", f"student r{st['round']}: {e}") from None
        if int(scfg["num_inference_steps"]) != st["steps"]:
            raise _err("frontier.students", f"student r{st['round']} at {st['policy']} samples "
                                            f"{scfg['num_inference_steps']} steps, its students.json says "
                                            f"{st['steps']}")
    if students and not fr["student_samplers"]:
        note += " (not run: frontier.student_samplers is empty)"
    cm_path, cm_note = find_consistency(fr["consistency"], cwd)
    if cm_path is not None:
        from parapolicy.sampling.consistency import consistency_scheduler

        cm_cfg = load_checkpoint(cm_path).config
        for i, k in enumerate(fr["consistency_steps"]):
            try:
                consistency_scheduler(cm_cfg, k)
            except ValueError as e:
                raise _err(f"frontier.consistency_steps[{i}]", str(e)) from None
        if not fr["consistency_steps"]:
            cm_note += " (not run: frontier.consistency_steps is empty)"
    note += "; " + cm_note
    entries = build_entries(fr, path, int(tcfg["num_inference_steps"]), students, cm_path)
    resolved = None
    for name, ents in groups(entries).items():
        try:
            ec, _ = validate(group_config(raw, ents))
        except ValueError as e:
            raise ValueError(f"{e} (frontier group {name!r})") from None
        if resolved is None:
            resolved = {k: v for k, v in asdict(ec).items() if k not in ("samplers", "noise", "wandb")}
            resolved |= {"policy": raw["policy"], "wandb": raw.get("wandb"), "frontier": fr}
    return fr, entries, note, resolved


# ------------------------------------------------------------------------------------------------ run
def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def group_done(group_dir: Path, fp: str) -> bool:
    """Whether group_dir holds a finished run of the config with fingerprint fp."""
    marker, res = group_dir / "frontier_group.json", group_dir / "results.json"
    if not (marker.exists() and res.exists()):
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fp
    except (OSError, json.JSONDecodeError):
        return False


def run_group(raw: dict, name: str, entries: list[Entry], out: Path, command: str | None) -> str:
    """Run (or resume) one group with eval.run.evaluate unless it is done -> "done earlier" or "ran"."""
    from eval.outputs import write_json
    from eval.run import evaluate

    cfg = group_config(raw, entries)
    fp = fingerprint(cfg)
    gdir = out / name
    if group_done(gdir, fp):
        print(f"[frontier] {name}: done earlier ({len(entries)} entries), skipped", file=sys.stderr)
        return "done earlier"
    print(f"[frontier] {name}: {len(entries)} entries on {entries[0].policy} (noise={entries[0].noise}): "
          f"{', '.join(e.sampler['label'] for e in entries)}", file=sys.stderr)
    load0, t0 = _load(), time.time()
    evaluate(cfg, gdir, command=f"{command or 'eval.frontier'} [group {name}]")
    write_json(gdir / "frontier_group.json", {
        "fingerprint": fp, "entries": [e.label for e in entries], "seconds": time.time() - t0,
        "load_before": load0, "load_after": _load(),
        "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    return "ran"


def seed_scores(records: list[dict], label: str, key: str | None, seeds: set) -> tuple[dict, dict]:
    """({seed: max_reward}, {seed: 100 or 0 success}) of the finished episodes of `label` recorded under `key`
    (the last record of a seed wins, as in eval.run.aggregate)."""
    latest = {}
    for r in records:
        if r.get("sampler") == label and r.get("key") == key and r.get("seed") in seeds:
            latest[r["seed"]] = r
    ok = {s: r for s, r in latest.items() if r.get("status") == "ok"}
    return ({s: float(r["max_reward"]) for s, r in ok.items()},
            {s: 100.0 if r["success"] else 0.0 for s, r in ok.items()})


def collect_rows(raw: dict, entries: list[Entry], out: Path, seeds: set) -> list[dict]:
    """One row per entry from the groups' results.json and episodes.jsonl on disk (the eval.frontier_report
    docstring lists the fields). status: "done" (its group finished with the current config), "partial" (results of
    an interrupted or older run), "missing" (not run yet)."""
    from eval.metrics import paired_difference
    from eval.outputs import read_jsonl

    by_group = groups(entries)
    res, recs, status = {}, {}, {}
    for name, ents in by_group.items():
        gdir = out / name
        try:
            res[name] = json.loads((gdir / "results.json").read_text())
        except (OSError, json.JSONDecodeError):
            res[name] = None
        recs[name] = read_jsonl(gdir / "episodes.jsonl") if res[name] else []
        done = group_done(gdir, fingerprint(group_config(raw, ents)))
        status[name] = "done" if done else ("partial" if res[name] else "missing")
    scores = {}
    for e in entries:
        r = res[e.group]
        key = (r or {}).get("keys", {}).get(e.sampler["label"])
        scores[e.label] = seed_scores(recs[e.group], e.sampler["label"], key, seeds) if key else ({}, {})
    labels = {e.label: e for e in entries}
    rows = []
    for e in entries:
        r = res[e.group]
        m = (r or {}).get("samplers", {}).get(e.sampler["label"])
        row = dict.fromkeys(RESULT_FIELDS)
        row |= {"label": e.label, "family": e.family, "policy_name": e.policy_name, "policy": e.policy,
               "sampler": e.sampler["name"], "steps": e.steps, "noise": e.noise,
               "warm_start": bool(e.sampler.get("warm_start")), "group": e.group,
               "status": status[e.group] if m else "missing", "reference": e.reference}
        if m:
            sc = m.get("sampler_config", {})
            lat, probe = m.get("latency_ms") or {}, (r.get("probe") or {}).get(e.sampler["label"], {})
            cold_probe = row["warm_start"] and m.get("latency_source", "").startswith("probe")
            row.update({
                "window": sc.get("window") if e.sampler["name"].startswith("para") else None,
                "tol": sc.get("tol") if e.sampler["name"].startswith("para") else None,
                "accel": sc.get("accel"),
                "n_episodes": m["n_episodes"], "n_errors": m.get("n_errors", 0),
                "mean_score": m["mean_score"], "mean_score_ci95": m["mean_score_ci95"],
                "pc_success": m["pc_success"], "pc_success_ci95": m.get("pc_success_ci95"),
                # the probe runs Picard cold, so for a warm-start entry it measures the cold sampler: kept apart
                "latency_p50_ms": None if cold_probe else lat.get("p50"),
                "latency_p95_ms": None if cold_probe else lat.get("p95"),
                "latency_source": m.get("latency_source"),
                "latency_cold_probe_p50_ms": lat.get("p50") if cold_probe else None,
                "rounds_mean": (m.get("rounds_per_call") or {}).get("mean"),
                "nfe_mean": (m.get("nfe_per_call") or {}).get("mean"),
                "rounds_mean_probe_batch1": None if cold_probe else _mean(probe.get("rounds")),
                "max_action_error": None if cold_probe else m.get("max_action_error"),
                "episodes_per_min": m.get("episodes_per_min"),
                "interrupted": bool(r.get("interrupted")),
            })
        ref = labels.get(e.reference) if e.reference else None
        if m and ref is not None and scores[ref.label][0]:
            d = paired_difference(scores[ref.label][0], scores[e.label][0], bounds=(-1.0, 1.0))
            ds = paired_difference(scores[ref.label][1], scores[e.label][1], bounds=(-100.0, 100.0))
            row.update({"d_score": d["mean"], "d_score_ci95": [d["lo"], d["hi"]], "d_success": ds["mean"],
                        "d_success_ci95": [ds["lo"], ds["hi"]], "n_pairs": d["n"]})
        rows.append(row)
    return rows


def _mean(xs) -> float | None:
    return sum(xs) / len(xs) if xs else None


def machine_info() -> dict:
    from eval.run import versions

    info = {"versions": versions(), "load_avg": _load(), "cpu_model": None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def group_info(entries: list[Entry], out: Path) -> list[dict]:
    """Per group: policy, noise, entries and the timing/load recorded when it ran."""
    info = []
    for name, ents in groups(entries).items():
        try:
            marker = json.loads((out / name / "frontier_group.json").read_text())
        except (OSError, json.JSONDecodeError):
            marker = {}
        info.append({"group": name, "policy": ents[0].policy, "noise": ents[0].noise,
                     "entries": [e.label for e in ents], "seconds": marker.get("seconds"),
                     "load_before": marker.get("load_before"), "load_after": marker.get("load_after"),
                     "finished_utc": marker.get("finished_utc")})
    return info


def write_report(raw: dict, entries: list[Entry], out: Path, meta: dict) -> tuple[list[dict], dict]:
    """Rows from disk -> frontier.json, frontier.csv, frontier.md, frontier.png (all written atomically)."""
    from eval import frontier_report

    cfg = meta["config"]
    rows = collect_rows(raw, entries, out, set(range(cfg["seed_start"], cfg["seed_start"] + cfg["n_episodes"])))
    meta = {**meta, "groups": group_info(entries, out),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    frontier_report.write_all(out, rows, meta)
    return rows, meta


def plan_text(raw: dict, entries: list[Entry], out: Path, note: str, cfg: dict) -> str:
    """What a run would do: every entry, its group, and whether the group is done or left to run.
    cfg: the resolved config (prepare)."""
    n, n_envs = cfg["n_episodes"], cfg["n_envs"]
    lines = [f"frontier plan: {len(entries)} entries x {n} episodes (n_envs={n_envs}) into {out}", note, "",
             "| entry | family | group | sampler | steps | noise | group status |", "|---|---|---|---|---|---|---|"]
    for name, ents in groups(entries).items():
        done = group_done(out / name, fingerprint(group_config(raw, ents)))
        for e in ents:
            lines.append(f"| {e.label} | {e.family} | {name} | {e.sampler['name']} | {e.steps} | {e.noise} "
                         f"| {'done, skipped' if done else 'to run'} |")
    todo = [e for name, ents in groups(entries).items()
            if not group_done(out / name, fingerprint(group_config(raw, ents))) for e in ents]
    seq = sum(e.steps for e in todo if not e.sampler["name"].startswith("para"))
    lines += ["", f"left to run: {len(todo)} entries ({len(todo) * n} episodes, fewer where eval.run finds them "
              f"already recorded with the same config). Cost: per chunk the sequential ones make {seq} "
              f"denoiser rounds in all at batch {min(n, n_envs)}; each Picard entry makes its rounds at batch up to "
              f"{min(n, n_envs)} x window; every group adds a batch-1 latency probe. docs/frontier.md has measured "
              "times."]
    return "\n".join(lines) + "\n"


def run_frontier(raw: dict, out_dir: str | os.PathLike, command: str | None = None,
                 cwd: str | os.PathLike = ".") -> dict:
    """Run (or resume) every entry into out_dir/<group>/ and write the frontier files.
    -> {"rows": [...], **meta} (what frontier.json holds). With frontier.plan=true only prints the plan."""
    fr, entries, note, resolved = prepare(raw, cwd)
    out = Path(out_dir)
    print(f"[frontier] {note}", file=sys.stderr)
    if fr["plan"]:
        text = plan_text(raw, entries, out, note, resolved)
        print(text)
        return {"plan": text, "entries": [asdict(e) for e in entries]}
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "students_note": note, "machine_start": machine_info(),
            "config": resolved, "interrupted": False, "ran": {}}
    try:
        for name, ents in groups(entries).items():
            meta["ran"][name] = run_group(raw, name, ents, out, command)
            write_report(raw, entries, out, meta)
    except KeyboardInterrupt:
        meta["interrupted"] = True
        write_report(raw, entries, out, meta)
        print("\n[frontier] interrupted: frontier files written from the finished groups", file=sys.stderr)
        raise
    meta["machine_end"] = machine_info()
    rows, meta = write_report(raw, entries, out, meta)
    from eval.frontier_report import log_wandb

    meta["wandb"] = log_wandb(rows, meta, dict(raw.get("wandb") or {"mode": "offline"}), out)
    rows, meta = write_report(raw, entries, out, meta)
    print((out / "frontier.md").read_text())
    if meta["wandb"].get("status") == "failed":
        print(f"warning: wandb logging failed ({meta['wandb']['error']}); local files are complete", file=sys.stderr)
    return {"rows": rows, **meta}


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    @hydra.main(config_path="../configs", config_name="frontier", version_base="1.3")
    def _main(cfg) -> None:
        raw = OmegaConf.to_container(cfg, resolve=True)
        hc = HydraConfig.get()
        command = " ".join(["python -m eval.frontier", *hc.overrides.task,  # + where it wrote (resume needs it)
                            *[o for o in hc.overrides.hydra if o.startswith("hydra.run.dir=")]])
        run_frontier(raw, hc.runtime.output_dir, command=command)

    _main()


if __name__ == "__main__":
    main()

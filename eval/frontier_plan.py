"""Planning a frontier run (eval.frontier): which entries, in which groups, and which groups are done.

Pure or read-only: the `frontier` config node is validated (`check_frontier`), students and a consistency
student are found on disk (`find_students`, `find_consistency`), the entries are built (`build_entries`) and grouped
(`groups`: entries that share a policy and a noise mode run together in one eval.run call), each group gets its
eval.run config (`group_config`) and a fingerprint of it (`fingerprint`, for resuming: `group_done`), and
`prepare` checks all of it before any episode. `plan_text` is what `frontier.plan=true` prints.
See eval/frontier.py for the entries themselves and how a run proceeds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FEW_STEP = ("ddim", "paraddim", "dpmsolver", "paradpmsolver")
STUDENT_SAMPLERS = ("ddim", "paraddim")
FRONTIER_KEYS = ("steps", "few_step", "paraddpm", "warm_start", "students", "student_samplers", "consistency",
                 "consistency_steps", "plan")
AUTO_STUDENTS = ("runs/distill_long", "runs/distill")
AUTO_CONSISTENCY = "runs/consistency"
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
    from eval.config import validate
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


# ----------------------------------------------------------------------------------------- resume, plan
def group_done(group_dir: Path, fp: str) -> bool:
    """Whether group_dir holds a finished run of the config with fingerprint fp."""
    marker, res = group_dir / "frontier_group.json", group_dir / "results.json"
    if not (marker.exists() and res.exists()):
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fp
    except (OSError, json.JSONDecodeError):
        return False


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

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

Modules: eval.frontier_plan (config checks, entries, groups, fingerprints, the plan), this module (running the
groups), eval.frontier_report (rows from the groups' results, the files).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

# The plan (entries, groups, fingerprints) lives in eval.frontier_plan, the rows and files in eval.frontier_report;
# the names below are re-exported so that `eval.frontier` stays the one entry point.
from eval.frontier_plan import (  # noqa: F401
    AUTO_CONSISTENCY,
    AUTO_STUDENTS,
    FEW_STEP,
    FRONTIER_KEYS,
    NOT_FINGERPRINTED,
    STUDENT_SAMPLERS,
    Entry,
    build_entries,
    check_frontier,
    find_consistency,
    find_students,
    fingerprint,
    group_config,
    group_done,
    groups,
    plan_text,
    prepare,
)
from eval.frontier_report import RESULT_FIELDS, collect_rows, log_wandb, write_report  # noqa: F401


# ------------------------------------------------------------------------------------------------ run
def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


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
    load0, t0 = load_average(), time.time()
    evaluate(cfg, gdir, command=f"{command or 'eval.frontier'} [group {name}]")
    write_json(gdir / "frontier_group.json", {
        "fingerprint": fp, "entries": [e.label for e in entries], "seconds": time.time() - t0,
        "load_before": load0, "load_after": load_average(),
        "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    return "ran"


def machine_info() -> dict:
    from eval.run import versions

    info = {"versions": versions(), "load_avg": load_average(), "cpu_model": None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


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

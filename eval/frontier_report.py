"""Rows and files of a frontier run (eval.frontier): frontier.md, frontier.json, frontier.csv, frontier.png, wandb.

`collect_rows` reads one row per entry from the groups' results on disk; the rest are pure functions from the
rows (one dict per entry, fields below) and a meta dict (command, machine, groups) to text and a figure;
`write_report` writes every file to a temp file and renames it into place.

Row fields: label, family (sequential / picard / student / consistency), policy_name, policy, sampler, steps, noise
(chunk / episode), warm_start, group, status (done / partial / missing), reference (the entry paired differences
are taken against), window, tol, accel, n_episodes, n_errors, mean_score, mean_score_ci95 [lo, hi], pc_success,
pc_success_ci95, latency_p50_ms, latency_p95_ms (batch 1), latency_source, latency_cold_probe_p50_ms
(warm-start entries: the probe ran cold), rounds_mean, nfe_mean (per chunk, rollouts), rounds_mean_probe_batch1,
max_action_error (px), episodes_per_min, interrupted, d_score, d_score_ci95, d_success, d_success_ci95,
n_pairs (paired per-seed differences entry - reference).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

from eval.frontier_plan import Entry, fingerprint, group_config, group_done, groups
from eval.outputs import fmt_ci, fmt_value

# per-row fields read from the results (None until the entry has run); the module docstring documents them
RESULT_FIELDS = ("window", "tol", "accel", "n_episodes", "n_errors", "mean_score", "mean_score_ci95", "pc_success",
                 "pc_success_ci95", "latency_p50_ms", "latency_p95_ms", "latency_source", "latency_cold_probe_p50_ms",
                 "rounds_mean", "nfe_mean", "rounds_mean_probe_batch1", "max_action_error", "episodes_per_min",
                 "interrupted", "d_score", "d_score_ci95", "d_success", "d_success_ci95", "n_pairs")
CSV_FIELDS = ("label", "family", "policy_name", "sampler", "steps", "noise", "warm_start", "status",
              "n_episodes", "n_errors", "mean_score", "mean_score_lo", "mean_score_hi", "pc_success",
              "pc_success_lo", "pc_success_hi", "latency_p50_ms", "latency_p95_ms", "latency_cold_probe_p50_ms",
              "rounds_mean", "nfe_mean", "rounds_mean_probe_batch1", "max_action_error", "reference", "d_score",
              "d_score_lo", "d_score_hi", "d_success", "d_success_lo", "d_success_hi", "n_pairs", "window", "tol",
              "accel", "latency_source", "episodes_per_min", "group", "policy")
FAMILY_STYLE = {"sequential": ("o", "C0"), "picard": ("s", "C1"), "student": ("^", "C2"), "consistency": ("D", "C3")}


# ------------------------------------------------------------------------------------------- rows
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
    cfg = meta["config"]
    rows = collect_rows(raw, entries, out, set(range(cfg["seed_start"], cfg["seed_start"] + cfg["n_episodes"])))
    meta = {**meta, "groups": group_info(entries, out),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_all(out, rows, meta)
    return rows, meta


# ------------------------------------------------------------------------------------------ files
def flat_row(row: dict) -> dict:
    """A row with its [lo, hi] intervals split into *_lo / *_hi columns (CSV_FIELDS)."""
    out = dict(row)
    for key, ci in (("mean_score", "mean_score_ci95"), ("pc_success", "pc_success_ci95"),
                    ("d_score", "d_score_ci95"), ("d_success", "d_success_ci95")):
        lo, hi = (row.get(ci) or [None, None])
        out[f"{key}_lo"], out[f"{key}_hi"] = lo, hi
    return {k: out.get(k) for k in CSV_FIELDS}


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in flat_row(r).items()})
    return buf.getvalue()


def table(rows: list[dict]) -> str:
    """The markdown table, one line per entry."""
    lines = ["| entry | family | policy | sampler | steps | noise | episodes | mean_score [95% CI] | pc_success "
             "| latency ms p50 / p95 (batch 1) | rounds/chunk | NFE/chunk | d score vs ref [95% CI] "
             "| d success (pts) | ref |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = (f"| {r['label']} | {r['family']} | {r['policy_name']} | {r['sampler']}"
                f"{' (warm start)' if r.get('warm_start') else ''} | {r['steps']} | {r['noise']} ")
        if r["status"] == "missing":
            lines.append(head + "| not run yet |" + " - |" * 8)
            continue
        err = r.get("n_errors") or 0
        eps = f"{r['n_episodes']}{f' (+{err} failed)' if err else ''}{' partial' if r['status'] != 'done' else ''}"
        lat = (f"{fmt_value(r['latency_p50_ms'], '{:.1f}')} / {fmt_value(r['latency_p95_ms'], '{:.1f}')}"
               if r.get("latency_cold_probe_p50_ms") is None else "n/a (probe is cold)")
        d = (f"{fmt_value(r.get('d_score'), '{:+.3f}')}{fmt_ci(r.get('d_score_ci95'), '{:+.3f}')}"
             if r.get("d_score") is not None else "-")
        ds = f"{fmt_value(r.get('d_success'), '{:+.1f}')}" if r.get("d_success") is not None else "-"
        lines.append(head + f"| {eps} | {fmt_value(r['mean_score'])}{fmt_ci(r['mean_score_ci95'], '{:.3f}')} "
                            f"| {fmt_value(r['pc_success'], '{:.1f}')} | {lat} | {fmt_value(r['rounds_mean'], '{:.1f}')} "
                            f"| {fmt_value(r['nfe_mean'], '{:.1f}')} | {d} | {ds} | {r['reference'] or '(reference)'} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], meta: dict) -> str:
    """frontier.md: the table, how to read it, the command, machine, load and date."""
    cfg = meta.get("config", {})
    n, s0 = cfg.get("n_episodes"), cfg.get("seed_start")
    text = "# Speed/reward frontier\n\n"
    if meta.get("interrupted"):
        text += "**Interrupted**: rows of groups that did not finish are marked partial or not run.\n\n"
    text += table(rows)
    pic = cfg.get("sampler", {})
    text += (
        f"\nSame env seeds {s0}..{s0 + n - 1 if isinstance(n, int) and isinstance(s0, int) else '?'} for every "
        "entry. Noise: `chunk` = fresh noise per (seed, chunk), the same draw for every entry (x_T is shared "
        "across step counts; DDIM and DPM-Solver++ add no step noise, so all chunk-noise entries start each "
        "chunk from the same x_T). `episode` = the noise of chunk 0 reused for every chunk of an episode, which "
        "warm start needs: a different experiment (on Push-T it scores lower than fresh noise, see README), so "
        "the episode-noise entries are compared with each other only: their d is against DDPM under the same "
        "episode noise, and ParaDDPM cold under episode noise is the warm start's fair pair. Students are paired "
        "by seed with the teacher's DDPM (same env seeds and x_T draw, a different network).\n\n"
        "d score / d success: mean over seeds of (entry - ref) in max reward / success, 95% t-interval (pairing "
        "removes the seed-to-seed variance). Latency: one `predict_action` call at batch 1, p50 / p95 over "
        f"the latency source ({'; '.join(sorted({r['latency_source'] for r in rows if r.get('latency_source')}))}); "
        "with n_envs > 1 it is eval.run's probe on recorded observations, which runs Picard cold, so warm-start "
        "entries show n/a (their cold-probe value is in frontier.json). Rounds: sequential denoiser calls per "
        "chunk in the rollouts (with n_envs > 1 the batched call's, i.e. its slowest sample's: an upper bound "
        "for one robot; batch-1 probe rounds are in frontier.json); NFE: denoiser evaluations per chunk per "
        f"sample. Picard knobs: window {pic.get('window')}, tol {pic.get('tol')}, max_iters "
        f"{pic.get('max_iters')}, accel {pic.get('accel')}. fast_denoiser: {cfg.get('fast_denoiser')}.\n")
    text += f"\n{meta.get('students_note', '')}\n"
    text += "\n| group | policy | noise | entries | seconds | load avg before -> after | finished |\n"
    text += "|---|---|---|---|---|---|---|\n"
    for g in meta.get("groups", []):
        text += (f"| {g['group']} | {g['policy']} | {g['noise']} | {len(g['entries'])} "
                 f"| {fmt_value(g.get('seconds'), '{:.0f}')} | {g.get('load_before')} -> {g.get('load_after')} "
                 f"| {g.get('finished_utc') or '-'} |\n")
    m = meta.get("machine_start", {})
    v = m.get("versions", {})
    text += (f"\nGroups run one after another; each measures its own latency (probe after its rollouts), so a "
             f"change of machine load between groups moves latencies (load averages above).\n\n"
             f"`{meta.get('command') or 'eval.frontier.run_frontier(...)'}` — {meta.get('date_utc', '')}; "
             f"{v.get('platform', '')}, {m.get('cpu_model') or 'cpu ?'}, {v.get('cpu_count', '?')} CPUs, device "
             f"{cfg.get('device', 'cpu')}, torch {v.get('torch', '')} ({cfg.get('num_threads')} threads), n_envs "
             f"{cfg.get('n_envs')}, max_steps {cfg.get('max_steps')}, load average at start {m.get('load_avg')}"
             f"{', at end ' + str(meta['machine_end'].get('load_avg')) if meta.get('machine_end') else ''}"
             f"{'; interrupted' if meta.get('interrupted') else ''}.\n")
    return text


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (x = cost, y = score) that no other point beats: none has x <= and y >= with
    one of them strict. Sorted by x."""
    front = []
    for i, (x, y) in enumerate(points):
        beaten = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


LABEL_ALL_BELOW = 12  # with more entries than this, label only the Pareto front and the references


def plot(rows: list[dict], path: str | os.PathLike, title: str = "") -> str | None:
    """frontier.png: mean_score (95% CI bars) against batch-1 latency p50 and against rounds per chunk, both on
    log x; marker and colour by family, hollow markers for episode noise. None when there is nothing to draw."""
    pts = [r for r in rows if r.get("mean_score") is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogFormatter

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, key, xlabel in ((axes[0], "latency_p50_ms", "latency p50 per chunk, batch 1 [ms] (log)"),
                            (axes[1], "rounds_mean", "parallel rounds per chunk (sequential denoiser calls, log)")):
        drawn = [r for r in pts if r.get(key) is not None and r[key] > 0]
        chunk = [r for r in drawn if r["noise"] != "episode"]  # episode noise is another experiment
        front = [chunk[i] for i in pareto_front([(r[key], r["mean_score"]) for r in chunk])]
        if len(front) > 1:
            ax.step([r[key] for r in front], [r["mean_score"] for r in front], where="post", color="0.6",
                    lw=0.8, zorder=0, label="_front")
        label_all = len(drawn) <= LABEL_ALL_BELOW
        for r in drawn:
            x = r[key]
            marker, color = FAMILY_STYLE.get(r["family"], ("x", "k"))
            lo, hi = r.get("mean_score_ci95") or [None, None]
            yerr = None if lo is None else [[r["mean_score"] - lo], [hi - r["mean_score"]]]
            ax.errorbar([x], [r["mean_score"]], yerr=yerr, fmt=marker, color=color, ms=6, capsize=2, elinewidth=0.8,
                        mfc="none" if r["noise"] == "episode" else color)
            if label_all or r in front or r.get("d_score") is None or r.get("sampler", "").startswith("paraddpm"):
                ax.annotate(r["label"], (x, r["mean_score"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(LogFormatter())
        ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))  # plain numbers, not 3x10^0
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean_score (mean max reward, 95% CI)")
    handles = [Line2D([], [], marker=m, color=c, linestyle="none", label=f) for f, (m, c) in FAMILY_STYLE.items()]
    handles.append(Line2D([], [], marker="o", color="k", mfc="none", linestyle="none", label="episode noise"))
    handles.append(Line2D([], [], color="0.6", lw=0.8, label="Pareto front (fresh noise; labelled)"))
    axes[1].legend(handles=handles, fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path)


def write_all(out: str | os.PathLike, rows: list[dict], meta: dict) -> list[str]:
    """frontier.json ({"rows", **meta}), frontier.csv, frontier.md, frontier.png into out -> paths written."""
    from eval.outputs import atomic_write_text, write_json

    out = Path(out)
    written = [str(write_json(out / "frontier.json", {"rows": rows, **meta})),
               str(atomic_write_text(out / "frontier.csv", csv_text(rows))),
               str(atomic_write_text(out / "frontier.md", markdown(rows, meta)))]
    cfg = meta.get("config", {})
    png = plot(rows, out / "frontier.png", title=f"Push-T frontier, {cfg.get('n_episodes')} episodes per entry, "
                                                 f"n_envs={cfg.get('n_envs')}, {meta.get('date_utc', '')}")
    if png:
        written.append(png)
    return written


def log_wandb(rows: list[dict], meta: dict, wandb_cfg: dict, out: str | os.PathLike) -> dict:
    """One wandb run: summary "<entry>/<metric>", the table as `frontier` and the plot (eval.wandb_log)."""
    from eval.wandb_log import log_results

    numeric = {r["label"]: {k: v for k, v in flat_row(r).items() if isinstance(v, int | float) or v is None}
               for r in rows}
    results = {"samplers": numeric, "paired": {}, "config": meta.get("config", {})}
    cols = list(CSV_FIELDS)
    data = [[_cell(flat_row(r)[c]) for c in cols] for r in rows]
    png = Path(out) / "frontier.png"
    wb = dict(wandb_cfg)
    wb.setdefault("name", None)
    wb["name"] = wb["name"] or f"frontier-{Path(out).name}"
    return log_results(results, [], {}, [str(png)] if png.exists() else [], wb, str(out),
                       tables={"frontier": (cols, data)})


def _cell(v):
    """wandb table cell: numbers as floats (a column mixing int and None stays numeric), the rest as text."""
    if v is None:
        return None
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    return float(v)

"""Aggregate the runs under a directory (a Hydra multirun sweep, or any tree of eval runs) into one table and plot.

    python -m eval.report runs/eval-multirun/2026-11-22_02-00-00

Finds every `results.json` below DIR; a run's overrides (from `.hydra/overrides.yaml`) name its row. Writes
DIR/report.md, DIR/report.json and DIR/report.png (batch-1 latency p50 vs mean_score, one point per run and
sampler) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.outputs import fmt_value


def _overrides(run_dir: Path, common: set) -> str:
    return " ".join(x for x in _override_items(run_dir) if x not in common)


def _override_items(run_dir: Path) -> list[str]:
    p = run_dir / ".hydra" / "overrides.yaml"
    if not p.exists():
        return []
    return [ln.strip()[2:].strip() for ln in p.read_text().splitlines() if ln.strip().startswith("- ")]


def collect(root: str | Path) -> list[dict]:
    """One row per (run, sampler) found below root, sorted by run directory; `overrides` lists the overrides
    that differ between runs (those shared by all runs are in `common_overrides`)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    rows = []
    paths = sorted(root.rglob("results.json"), key=lambda p: str(p))
    sets = [set(_override_items(p.parent)) for p in paths]
    common = set.intersection(*sets) if len(sets) > 1 else set()
    for path in paths:
        try:
            res = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError) as e:
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            continue
        run_dir = path.parent
        for label, m in res.get("samplers", {}).items():
            paired = res.get("paired", {}).get(label, {}).get("max_reward", {})
            rows.append({
                "run": str(run_dir.relative_to(root)) if run_dir != root else ".",
                "overrides": _overrides(run_dir, common),
                "common_overrides": " ".join(sorted(common)),
                "sampler": label,
                "n_episodes": m.get("n_episodes"),
                "mean_score": m.get("mean_score"),
                "mean_score_ci95": m.get("mean_score_ci95"),
                "pc_success": m.get("pc_success"),
                "latency_p50_ms": (m.get("latency_ms") or {}).get("p50"),
                "latency_p95_ms": (m.get("latency_ms") or {}).get("p95"),
                "rounds_mean": (m.get("rounds_per_call") or {}).get("mean"),
                "nfe_mean": (m.get("nfe_per_call") or {}).get("mean"),
                "max_action_error": m.get("max_action_error"),
                "d_max_reward_vs_ref": paired.get("mean"),
                "d_max_reward_ci95": [paired.get("lo"), paired.get("hi")] if paired else None,
                "reference": res.get("reference"),
                "realtime": (res.get("config") or {}).get("realtime"),
                "interrupted": res.get("interrupted", False),
            })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| run | overrides | sampler | episodes | mean_score | pc_success | latency p50 / p95 ms | rounds | NFE "
             "| max act err | d reward vs ref [95% CI] |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = r["d_max_reward_ci95"]
        d = fmt_value(r["d_max_reward_vs_ref"], "{:+.3f}")
        if ci and ci[0] is not None:
            d += f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        lines.append(f"| {r['run']} | {r['overrides'] or '-'} | {r['sampler']} | {r['n_episodes']} "
                     f"| {fmt_value(r['mean_score'], '{:.3f}')} | {fmt_value(r['pc_success'], '{:.1f}')} "
                     f"| {fmt_value(r['latency_p50_ms'], '{:.1f}')} / {fmt_value(r['latency_p95_ms'], '{:.1f}')} "
                     f"| {fmt_value(r['rounds_mean'], '{:.1f}')} | {fmt_value(r['nfe_mean'], '{:.1f}')} "
                     f"| {fmt_value(r['max_action_error'], '{:.2g}')} | {d} |")
    common = rows[0]["common_overrides"] if rows else ""
    return "\n".join(lines) + "\n" + (f"\nOverrides shared by every run: `{common}`\n" if common else "")


def plot(rows: list[dict], path: Path) -> str | None:
    pts = [r for r in rows if r["latency_p50_ms"] is not None and r["mean_score"] is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in pts:
        ax.plot(r["latency_p50_ms"], r["mean_score"], "o")
        ax.annotate(f"{r['sampler']} {r['overrides']}".strip(), (r["latency_p50_ms"], r["mean_score"]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("control latency p50, batch 1 [ms]")
    ax.set_ylabel("mean_score")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="a multirun directory (or any directory holding eval runs)")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    from eval.outputs import atomic_write_text, write_json

    root = Path(args.dir)
    try:
        rows = collect(root)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no results.json below {root}", file=sys.stderr)
        return 1
    md = markdown(rows)
    atomic_write_text(root / "report.md", md)
    write_json(root / "report.json", {"rows": rows})
    if not args.no_plot:
        plot(rows, root / "report.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Files of an evaluation run: `episodes.jsonl` (appended and fsynced as each episode ends), `results.json` and
`results.md` (written atomically: temp file + rename, so a reader or a Ctrl-C never sees half a file), PNG plots
and optional GIFs of episodes."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one line and fsync, so a finished episode survives a crash or Ctrl-C right after."""
    line = json.dumps(_clean(record), separators=(",", ":"))
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a jsonl file; a line cut short by a crash (not valid JSON) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ---------------------------------------------------------------------------------------------- tables
def fmt_value(x, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def fmt_ci(ci: list | None, fmt: str = "{:+.3f}") -> str:
    if not ci or ci[0] is None:
        return ""
    return f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def results_markdown(results: dict) -> str:
    """The per-sampler table and the paired-difference table of a results dict (see eval.run)."""
    lines = ["| sampler | episodes | mean_score [95% CI] | pc_success | latency ms p50 / p95 / max (batch 1) "
             "| rounds/call mean / p95 | NFE/call mean / p95 | max action err | episodes/min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, m in results["samplers"].items():
        lat, rd, nf = m["latency_ms"], m["rounds_per_call"], m["nfe_per_call"]
        err = m["n_errors"]
        lines.append(
            f"| {label} | {m['n_episodes']}{f' (+{err} failed)' if err else ''} "
            f"| {fmt_value(m['mean_score'])}{fmt_ci(m['mean_score_ci95'], '{:.3f}')} "
            f"| {fmt_value(m['pc_success'], '{:.1f}')} "
            f"| {fmt_value(lat['p50'], '{:.1f}')} / {fmt_value(lat['p95'], '{:.1f}')} / {fmt_value(lat['max'], '{:.1f}')} "
            f"| {fmt_value(rd['mean'], '{:.1f}')} / {fmt_value(rd['p95'], '{:.1f}')} "
            f"| {fmt_value(nf['mean'], '{:.1f}')} / {fmt_value(nf['p95'], '{:.1f}')} "
            f"| {fmt_value(m['max_action_error'], '{:.2g}')} | {fmt_value(m['episodes_per_min'], '{:.2f}')} |")
    text = "\n".join(lines) + "\n"
    paired = results.get("paired", {})
    if paired:
        ref = results.get("reference")
        text += (f"\nPaired per-episode differences against `{ref}` (same seeds, same noise), mean [95% CI]:\n\n"
                 "| sampler | pairs | d max_reward | d success (pct points) |\n|---|---|---|---|\n")
        for label, p in paired.items():
            s, c = p["max_reward"], p["success"]
            text += (f"| {label} | {s['n']} | {fmt_value(s['mean'], '{:+.3f}')}{fmt_ci([s['lo'], s['hi']])} "
                     f"| {fmt_value(c['mean'], '{:+.1f}')}{fmt_ci([c['lo'], c['hi']], '{:+.1f}')} |\n")
    if any((m.get("encoder_ms") or {}).get("n") for m in results["samplers"].values()):
        text += ("\nLatency split per chunk (batch 1, ms p50 / p95): the condition (image encoders, normalisation) "
                 "runs once per chunk, before the sampler.\n\n| sampler | encoder | denoising |\n|---|---|---|\n")
        for label, m in results["samplers"].items():
            e, d = m.get("encoder_ms") or {}, m.get("denoise_ms") or {}
            text += (f"| {label} | {fmt_value(e.get('p50'), '{:.1f}')} / {fmt_value(e.get('p95'), '{:.1f}')} "
                     f"| {fmt_value(d.get('p50'), '{:.1f}')} / {fmt_value(d.get('p95'), '{:.1f}')} |\n")
    lat_src = {m["latency_source"] for m in results["samplers"].values()}
    text += (f"\nLatency source: {', '.join(sorted(lat_src))} (see docs/eval.md). "
             f"Mode: {'latency-aware (realtime)' if results['config'].get('realtime') else 'lock-step'}. "
             f"UNet path: {results.get('denoiser', 'eager')}.\n")
    v = results.get("versions", {})
    text += (f"\n`{results.get('command') or 'eval.run.evaluate(...)'}` — {results.get('date_utc', '')}; "
             f"{v.get('platform', '')}, {v.get('cpu_count', '?')} CPUs, device {results['config'].get('device')}, "
             f"torch {v.get('torch', '')} ({v.get('torch_threads', '?')} threads)"
             f"{'; interrupted' if results.get('interrupted') else ''}.\n")
    return text


# ----------------------------------------------------------------------------------------------- plots
def make_plots(results: dict, episodes: list[dict], latencies: dict, out_dir: str | os.PathLike) -> list[str]:
    """latency_hist.png (batch-1 call latency per sampler), reward_per_episode.png, rounds_per_call.png.
    latencies: {label: [ms]}. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    labels = list(results["samplers"])

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label in labels:
        xs = latencies.get(label) or []
        if xs:
            ax.hist(xs, bins=30, alpha=0.6, label=f"{label} (n={len(xs)})")
    ax.set_xlabel("control latency per call, batch 1 [ms]")
    ax.set_ylabel("calls")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out_dir / "latency_hist.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, label in enumerate(labels):
        eps = sorted((e for e in episodes if e["sampler"] == label and e["status"] == "ok"), key=lambda e: e["seed"])
        ax.plot([e["seed"] for e in eps], [e["max_reward"] for e in eps], linestyle="none", ms=4, alpha=0.7,
                label=label, marker="os^vD<>"[i % 7])
    ax.set_xlabel("episode seed")
    ax.set_ylabel("max reward")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out_dir / "reward_per_episode.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label in labels:
        rounds = [c["rounds"] for e in episodes if e["sampler"] == label and e["status"] == "ok" for c in e["calls"]]
        if rounds:
            ax.hist(rounds, bins=min(40, max(5, len(set(rounds)))), alpha=0.6, label=label)
    ax.set_xlabel("parallel rounds (sequential denoiser calls) per chunk")
    ax.set_ylabel("calls")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out_dir / "rounds_per_call.png"))
    return written


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path)


def write_gif(frames: list, path: str | os.PathLike, fps: int = 10) -> str:
    import imageio.v2 as imageio

    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.gif")
    imageio.mimsave(tmp, frames, duration=1000 / fps, loop=0)
    os.replace(tmp, path)
    return str(path)

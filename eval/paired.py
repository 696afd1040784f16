"""Paired (by seed) differences between entries of different eval.run directories, and slim per-seed files.

    python -m eval.paired runs/ddpm200 runs/cm200 --ref ddpm                 # table against the `ddpm` entry
    python -m eval.paired runs/cm200 --slim docs/results/x/cm200.jsonl       # keep what pairing needs

eval.run pairs the samplers of one run itself (results.md). Entries run apart (another policy, another day)
pair the same way when they ran the same seeds with the harness's per-(seed, chunk) noise. Each argument is an
eval.run directory (its episodes.jsonl) or a .jsonl file of episode records (a slim file from `--slim`, which
keeps sampler, seed, status, max_reward and success: small enough to commit, so later runs can pair with it).
A label that appears in two inputs is an error: rename one in its slim file (`--slim F --rename ddpm=ddpm_relay`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from eval.metrics import mean_ci, paired_difference

SLIM_KEYS = ("sampler", "seed", "status", "max_reward", "success")


def episodes_file(path: str | Path) -> Path:
    p = Path(path)
    f = p / "episodes.jsonl" if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no episodes.jsonl (give an eval.run directory or a .jsonl file)")
    return f


def read_episodes(path: str | Path) -> list[dict]:
    """The episode records of an eval.run dir or .jsonl file (blank lines skipped; a bad line names its number)."""
    f = episodes_file(path)
    out = []
    for i, line in enumerate(f.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}:{i}: not a JSON episode record ({e.msg})") from None
    return out


def by_label(paths, seeds: range | None = None) -> dict[str, dict[int, dict]]:
    """{label: {seed: record}} of the finished ("ok") episodes of every input, restricted to `seeds`."""
    out: dict[str, dict[int, dict]] = {}
    where: dict[str, str] = {}
    for path in paths:
        mine: dict[str, dict[int, dict]] = {}
        for r in read_episodes(path):
            if r.get("status") != "ok" or (seeds is not None and int(r["seed"]) not in seeds):
                continue
            mine.setdefault(str(r["sampler"]), {})[int(r["seed"])] = r
        for label, eps in mine.items():
            if label in out:
                raise ValueError(f"entry {label!r} is in both {where[label]} and {path}; rename one with "
                                 f"--slim FILE --rename {label}=NEW")
            out[label], where[label] = eps, str(path)
    return out


def table(entries: dict[str, dict[int, dict]], ref: str) -> str:
    """Markdown: per entry the seeds it shares with `ref`, its mean_score and success on them and the paired
    differences (max reward; success in percentage points)."""
    if ref not in entries:
        raise ValueError(f"reference entry {ref!r} not found; entries: {sorted(entries)}")
    base = {s: r["max_reward"] for s, r in entries[ref].items()}
    base_ok = {s: 100.0 * bool(r.get("success")) for s, r in entries[ref].items()}
    lines = [f"| entry | seeds | mean_score [95% CI] | success % | paired d vs {ref} [95% CI] | d success (points) |",
             "|---|---|---|---|---|---|"]
    for label, eps in entries.items():
        vals = {s: r["max_reward"] for s, r in eps.items()}
        ok = {s: 100.0 * bool(r.get("success")) for s, r in eps.items()}
        d, d_ok = paired_difference(base, vals), paired_difference(base_ok, ok)
        score = mean_ci([vals[s] for s in d["seeds"]], bounds=(0.0, 1.0))
        rate = sum(ok[s] for s in d["seeds"]) / max(len(d["seeds"]), 1)
        cells = ("-", "-") if label == ref else (_fmt(d, signed=True), _fmt(d_ok, signed=True, digits=1))
        lines.append(f"| {label} | {d['n']} | {_fmt(score)} | {rate:.1f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def _fmt(ci: dict, signed: bool = False, digits: int = 3) -> str:
    if ci["mean"] is None:
        return "n/a"
    f = ("{:+." if signed else "{:.") + f"{digits}f}}"
    if ci["lo"] is None:
        return f.format(ci["mean"])
    return f"{f.format(ci['mean'])} [{f.format(ci['lo'])}, {f.format(ci['hi'])}]"


def write_slim(path: str | Path, out: str | Path, rename: dict[str, str] | None = None) -> int:
    """Write the records of `path` keeping SLIM_KEYS only (atomically), entries renamed by `rename`
    ({old label: new}) -> number of records."""
    rename = rename or {}
    recs = [{k: r[k] for k in SLIM_KEYS if k in r} for r in read_episodes(path)]
    for r in recs:
        r["sampler"] = rename.get(r.get("sampler"), r.get("sampler"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    os.replace(tmp, out)
    return len(recs)


def parse_seeds(text: str | None) -> range | None:
    if text is None:
        return None
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--seeds must be START:STOP (e.g. 100000:100200), got {text!r}") from None
    if b <= a:
        raise ValueError(f"--seeds {text!r}: STOP must be greater than START")
    return range(a, b)


def parse_rename(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        old, sep, new = it.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"--rename must be OLD=NEW, got {it!r}")
        out[old] = new
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", help="eval.run directories or .jsonl episode files")
    ap.add_argument("--ref", default="ddpm", help="the entry the others are paired against (default ddpm)")
    ap.add_argument("--seeds", default=None, help="START:STOP, only these seeds (default: all shared)")
    ap.add_argument("--slim", default=None, help="write the single input's slim per-seed file here instead")
    ap.add_argument("--rename", action="append", default=[], help="with --slim: OLD=NEW entry label (repeatable)")
    a = ap.parse_args(argv)
    try:
        if a.slim is not None:
            if len(a.inputs) != 1:
                raise ValueError("--slim takes exactly one input")
            print(f"{write_slim(a.inputs[0], a.slim, parse_rename(a.rename))} records -> {a.slim}")
            return 0
        if a.rename:
            raise ValueError("--rename goes with --slim")
        print(table(by_label(a.inputs, parse_seeds(a.seeds)), a.ref), end="")
    except (ValueError, FileNotFoundError) as e:
        print(f"eval.paired: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

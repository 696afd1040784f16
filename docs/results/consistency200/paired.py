"""Paired (by seed) differences of max reward between entries of different eval.run dirs, against DDPM-100.

    python docs/results/consistency200/paired.py runs/h500 runs/cm200 runs/ddim200 runs/cminit200

Mean difference with a normal-approximation 95% interval over the seeds both entries ran (ok episodes)."""
import json
import math
import sys
from pathlib import Path


def load(d):
    out = {}
    for line in open(Path(d) / "episodes.jsonl"):
        r = json.loads(line)
        if r.get("status") == "ok":
            out.setdefault(r["sampler"], {})[r["seed"]] = r["max_reward"]
    return out


runs = {}
for d in sys.argv[1:]:
    for label, eps in load(d).items():
        runs[f"{label}"] = eps
ref = runs["ddpm"]
print("| entry | seeds | mean_score | paired d vs DDPM-100 [95% CI] |")
print("|---|---|---|---|")
for label, eps in runs.items():
    seeds = sorted(set(eps) & set(ref) & set(range(100000, 100200)))
    d = [eps[s] - ref[s] for s in seeds]
    n = len(d)
    m = sum(d) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    h = 1.96 * sd / math.sqrt(n)
    score = sum(eps[s] for s in seeds) / n
    print(f"| {label} | {n} | {score:.3f} | {m:+.3f} [{m - h:+.3f}, {m + h:+.3f}] |")

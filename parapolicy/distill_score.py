"""How a distilled student is scored: open loop, its DDIM sample's distance from the teacher's from the same
noise (`sample_gaps`); closed loop, an evaluation command run as a subprocess (`run_score_cmd`)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import torch

from parapolicy.ddim_teacher import DDIMTeacher


def sample_gaps(reference: tuple[DDIMTeacher, tuple], candidates: dict[str, tuple[DDIMTeacher, tuple]],
                cond: torch.Tensor, shape: tuple, seed: int = 0) -> dict[str, float]:
    """Mean squared distance (normalised action units) of each candidate's DDIM sample (model, grid) from the
    reference's, all from the same x_T (shape (B, H, D)) and cond (B, C)."""
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    ref = reference[0].sample(x_T, cond, reference[1])
    return {k: float(((m.sample(x_T, cond, g) - ref) ** 2).mean()) for k, (m, g) in candidates.items()}


def run_score_cmd(cmd: str, policy: Path, out: Path) -> dict:
    """Run `cmd` with {policy} and {out} replaced; return, per sampler, mean_score / pc_success / latency p50 /
    NFE from `out/results.json` (what `python -m eval.run ... hydra.run.dir={out}` writes), else the last
    stdout line that is a JSON object."""
    args = [a.replace("{policy}", str(policy)).replace("{out}", str(out)) for a in shlex.split(cmd)]
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"score command failed ({res.returncode}): {res.stderr[-2000:]}")
    if (out / "results.json").exists():
        samplers = json.loads((out / "results.json").read_text()).get("samplers", {})
        return {name: {"mean_score": m.get("mean_score"), "mean_score_ci95": m.get("mean_score_ci95"),
                       "pc_success": m.get("pc_success"), "n_episodes": m.get("n_episodes"),
                       "latency_ms_p50": (m.get("latency_ms") or {}).get("p50"),
                       "nfe_per_call": (m.get("nfe_per_call") or {}).get("mean")} for name, m in samplers.items()}
    for line in reversed(res.stdout.strip().splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            return rec
    raise RuntimeError(f"score command wrote no {out}/results.json and printed no JSON object line: "
                       f"{res.stdout[-500:]}")

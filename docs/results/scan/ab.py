"""A/B of Picard's carried-change scan (`parapolicy.sampling.picard._gain_scan`), in one process, alternating:
the Python loop over the window's slots (commit a272378) against the closed form (the working tree).

    python docs/results/scan/ab.py          # from the repository root; one torch thread; the shipped policy

Per variant: rounds and the largest action difference between the two scans on the same noise, and the
median process CPU time per chunk (predict_action, batch 1, fp32 fast path) over 16 observation windows x 3
alternating passes; then the scan alone at a window of 56 (secant, `sampler=fewest_rounds`) and 16."""

import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, ".")
import parapolicy  # noqa: E402
import parapolicy.sampling.picard as picard  # noqa: E402
from eval.bench_chunk import observation_windows, sampler_spec  # noqa: E402
from parapolicy.policy import SamplerConfig  # noqa: E402

torch.set_num_threads(1)
src = subprocess.run(["git", "show", "a272378:parapolicy/sampling/picard.py"], capture_output=True, text=True,
                     check=True).stdout
with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    f.write(src)
spec = importlib.util.spec_from_file_location("picard_loop", f.name)
loop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loop)
scans = {"loop": loop._gain_scan, "closed form": picard._gain_scan}

pol = parapolicy.load_policy("pusht_keypoints", fast="fp32")
wins, where = observation_windows(pol, 16)
print(f"torch {torch.__version__}, 1 thread, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {where}")
print("| sampler | rounds (loop / closed form) | max action diff [px] | CPU ms per chunk, loop | closed form |")
print("|---|---|---|---|---|")
for name in ["paraddpm:w56/secant/zero/tol=0.03/atol=auto/first=24", "paraddpm:w32/secant", "paraddpm:w16/parareal"]:
    cfg = sampler_spec(name, SamplerConfig)
    acts, rounds, ms = {}, {}, {k: [] for k in scans}
    for rep in range(3):
        for tag, fn in (list(scans.items()) if rep % 2 == 0 else list(scans.items())[::-1]):
            picard._gain_scan = fn
            g = torch.Generator().manual_seed(0)
            a, r = [], 0
            for w in wins:
                c0 = time.process_time()
                out = pol.predict_action(w, sampler=cfg, generator=g)
                ms[tag].append(1e3 * (time.process_time() - c0))
                a.append(out["action"])
                r += out["stats"].iterations
            acts[tag], rounds[tag] = torch.cat(a), r / len(wins)
    diff = float((acts["loop"] - acts["closed form"]).abs().max())
    print(f"| {name} | {rounds['loop']:.2f} / {rounds['closed form']:.2f} | {diff:.1e} | "
          f"{statistics.median(ms['loop']):.1f} | {statistics.median(ms['closed form']):.1f} |")
picard._gain_scan = scans["closed form"]

g = torch.Generator().manual_seed(0)
for pw in (56, 16):
    step, U, W = (torch.randn(pw, 1, pol.horizon, pol.input_dim, generator=g) for _ in range(3))
    gain, s = torch.rand(100, generator=g), torch.tensor([10])
    for tag, fn in scans.items():
        for args in ((step, gain, s, U, 0.01 * W), (step, gain, s)):
            c0 = time.process_time()
            for _ in range(200):
                fn(*args)
            kind = "secant" if len(args) == 5 else "gain"
            print(f"  scan alone, window {pw}, {kind}, {tag}: {5 * (time.process_time() - c0):.3f} ms")

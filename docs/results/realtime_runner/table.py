"""The wall-clock real-time table from the four eval.run dirs (docs/realtime.md):
python docs/results/realtime_runner/table.py runs/rt_x4_replace runs/rt_x4_inpaint runs/rt_x1_replace runs/rt_x1_inpaint"""
import json
import sys
from pathlib import Path

print("| latency | overlap | sampler | episodes | mean_score [95% CI] | success % | latency p50 ms (measured) | "
      "held steps / ep | max jump at switch (px) | mean jerk switch / within | d vs ddpm (paired) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for d in sys.argv[1:]:
    res = json.loads((Path(d) / "results.json").read_text())
    cfg = res["config"]
    for label, m in res["samplers"].items():
        ci = m["mean_score_ci95"]
        sm = m.get("smoothness") or {}
        p = res.get("paired", {}).get(label, {}).get("max_reward")
        dd = f"{p['mean']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}]" if p else "-"

        def f(x):
            return "-" if x is None else f"{x:.1f}"

        print(f"| x{cfg['latency_scale']:g} | {cfg['realtime_overlap']} | {label} | {m['n_episodes']} | "
              f"{m['mean_score']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {m['pc_success']:.0f} | {m['latency_ms']['p50']:.0f} | "
              f"{m.get('held_steps_per_episode', 0):.1f} | {f(sm.get('switch_jump_max'))} | "
              f"{f(sm.get('switch_jerk_mean'))} / {f(sm.get('within_jerk_mean'))} | {dd} |")

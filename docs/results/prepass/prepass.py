# A cheap DDIM pre-pass as the Picard initial guess (docs/rounds.md, "Tried and not kept"):
#   python docs/results/prepass/prepass.py   (shipped policy, eager UNet, 8 demonstration windows, batch 1)
import statistics

import torch

import parapolicy
from eval.bench_chunk import observation_windows
from parapolicy.sampling import sample_picard, sample_sequential
from parapolicy.sampling.rollout import Rollout
from parapolicy.schedule import make_schedule

torch.set_num_threads(1)
policy = parapolicy.load_policy("pusht_keypoints", fast="eager")
wins, _ = observation_windows(policy, 8)
sch = policy.scheduler("ddpm")
S = len(sch.timesteps)
ddim = policy.scheduler("ddim")
sched = make_schedule(sch, None)
roll = Rollout(sched, "cpu", torch.float32)
s, n = policy.action_start, policy.n_action_steps


def actions(x0):
    a = policy.normalizer.unnormalize(x0[..., :policy.action_dim], policy._norm_key["action"])
    return a[:, s:s + n]


variants = [(k, g) for k in (0, 2, 4, 8) for g in (["hybrid"] if k == 0 else ["none", "window", "hybrid"])]
rows = {v: ([], []) for v in variants}
for i, obs in enumerate(wins):
    gen = torch.Generator().manual_seed(1000 + i)
    x_T = torch.randn(1, policy.horizon, policy.input_dim, generator=gen)
    z = torch.randn(S, 1, policy.horizon, policy.input_dim, generator=gen)
    cond = policy.normalized_condition(obs)
    ref = actions(sample_sequential(policy.denoiser, sch, x_T, noise=z, cond=cond))
    for k, g in variants:
        if k == 0:
            x0, st = sample_picard(policy.denoiser, sch, x_T, noise=z, cond=cond, window=16, guess=g)
            extra = 0
        else:
            xc = sample_sequential(policy.denoiser, ddim, x_T, cond=cond, num_inference_steps=k)
            if isinstance(xc, tuple):
                xc = xc[0]
            traj = x_T.unsqueeze(0).repeat(S + 1, 1, 1, 1)
            roll(traj, torch.tensor([0]), torch.tensor([0]), xc, z)
            x0, st = sample_picard(policy.denoiser, sch, x_T, noise=z, cond=cond, window=16, init=traj, guess=g)
            extra = k
        rows[(k, g)][0].append(st.iterations + extra)
        rows[(k, g)][1].append(float((actions(x0) - ref).abs().max()))
for v, (r, e) in rows.items():
    print(v, "rounds", statistics.mean(r), max(r), "err", round(max(e), 3))

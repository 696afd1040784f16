# where the warm rounds go (open loop): demonstration windows 8 steps apart, relayed noise, warm Picard variants.
# python docs/results/warm_rounds/warm_rounds.py "dict(warm=dict(window=64, update='secant', guess='window'))"
# 6 windows x 4 warm chunks (after one cold chunk each); error = max |action - sequential DDPM action| under the same relayed noise, px
import sys

import numpy as np
import torch

import parapolicy
from parapolicy.data import ReplayBuffer, find_pusht_zarr, pusht_keypoint_obs
from parapolicy.sampling import sample_picard, sample_sequential
from parapolicy.sampling.warm import relay_init, relay_noise

torch.set_num_threads(1)
policy = parapolicy.load_policy("pusht_keypoints", fast="eager")
sch = policy.scheduler("ddpm")
S = len(sch.timesteps)
obs = pusht_keypoint_obs(ReplayBuffer.load(find_pusht_zarr()))
kw = eval(sys.argv[1])  # a dict(cold=..., warm=...) expression from the command line
To = policy.n_obs_steps
g = torch.Generator().manual_seed(0)
shape = (1, policy.horizon, policy.input_dim)
R, E = [], []


def act(x):
    return policy.normalizer.unnormalize(x[..., :2], policy._norm_key['action'])[:, 1:9]


for st0 in np.linspace(0, len(obs) - 60, 6).astype(int):
    x_T = torch.randn(*shape, generator=g)
    z = torch.randn(S, *shape, generator=g)
    prev = None
    for c in range(5):
        o = {"obs": torch.from_numpy(obs[st0 + 8 * c: st0 + 8 * c + To].copy())[None]}
        cond = policy.normalized_condition(o)
        if prev is None:
            x0, st = sample_picard(policy.denoiser, sch, x_T, noise=z, cond=cond, **kw.get("cold", {}))
        else:
            x_T, z = relay_noise(x_T, z, torch.randn(*shape, generator=g), torch.randn(S, *shape, generator=g), 8)
            init = relay_init(prev, 8, x_T, z, sch)
            x0, st = sample_picard(policy.denoiser, sch, x_T, noise=z, cond=cond, init=init, **kw["warm"])
            R.append(st.iterations)
            ref = sample_sequential(policy.denoiser, sch, x_T, noise=z, cond=cond)
            E.append(float((act(x0) - act(ref)).abs().max()))
            if len(R) <= 4:
                print(st.iterations, [w[0][1] for w in st.windows] + [S])
        prev = st.trajectory
print(kw, f"warm rounds mean {sum(R) / len(R):.2f} max {max(R)}",
      f"err p50 {sorted(E)[len(E) // 2]:.2f} max {max(E):.2f} px")

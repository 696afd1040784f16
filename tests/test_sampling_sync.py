"""The Picard round loop synchronises the host at most once per round: counted with a TorchFunctionMode that
records every call that would force a device-to-host transfer on a GPU (item, tolist, bool/int/float of a
tensor, .cpu(), .numpy(), nonzero, boolean-mask indexing), outside the denoiser."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch.overrides import TorchFunctionMode

from parapolicy.sampling import sample_picard
from tests.sampling_helpers import GaussianDenoiser

SYNCING = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy", "nonzero"}


class SyncCounter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []
        self.paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if not self.paused:
            if name in SYNCING:
                self.calls.append(name)
            elif name == "__getitem__" and any(torch.is_tensor(a) and a.dtype == torch.bool
                                               for a in (args[1] if isinstance(args[1], tuple) else (args[1],))):
                self.calls.append("bool-index")
        return func(*args, **(kwargs or {}))


def counted(den, counter):
    def call(x, t, c):
        counter.paused = True
        try:
            return den(x, t, c)
        finally:
            counter.paused = False
    return call


@pytest.mark.parametrize("guess,update,opts", [
    ("hybrid", "picard", {}), ("window", "picard", {}), ("frontier", "picard", {}), ("none", "picard", {}),
    ("window", "parareal", {}), ("window", "secant", {}),
    ("window", "secant", dict(start="zero", first_window=3, atol="auto", tol=0.03))])
@pytest.mark.parametrize("family", ["ddpm", "ddim"])
def test_at_most_one_host_sync_per_round(family, guess, update, opts):
    sched = (DDPMScheduler if family == "ddpm" else DDIMScheduler)(
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    n = 100 if family == "ddpm" else 25
    den = GaussianDenoiser(sched.alphas_cumprod, "epsilon", 8, 2)
    g = torch.Generator().manual_seed(0)
    x_T, cond = torch.randn(3, 8, 2, generator=g), torch.randn(3, 4, generator=g)
    noise = torch.randn(n, 3, 8, 2, generator=g)
    # the inputs are validated (finite checks) before the loop: count those separately with an empty solve
    with SyncCounter() as setup:
        sample_picard(counted(den, setup), sched, x_T, noise=noise, cond=cond, num_inference_steps=n,
                      window=8, guess=guess, max_iters=1, update=update, **opts)
    with SyncCounter() as c:
        _, st = sample_picard(counted(den, c), sched, x_T, noise=noise, cond=cond, num_inference_steps=n,
                              window=8, guess=guess, update=update, **opts)
    assert st.iterations > 5
    extra = len(c.calls) - len(setup.calls)
    # setup (input checks) + one sync per round + the final stats gather; nothing per sample or per step
    assert extra <= st.iterations - 1, (extra, st.iterations, sorted(set(c.calls)))
